"""A generic plugin registry (names to classes) and the loader of plugin modules.

A `Registry` knows nothing about what it holds: the module that defines a kind of plugin
creates one, names the entry-point group through which installed packages declare theirs and
the base class they must derive from (`vqbench.quantizer.QUANTIZERS`,
`vqbench.estimator.ESTIMATORS`). Plugins register themselves with the decorator where they
are defined; built-ins and third-party packages alike are discovered through the entry-point
group; `load_plugin("module")` imports any other module whose decorators register more.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from vqbench.errors import VQBenchError, did_you_mean

T = TypeVar("T", bound=type)

#: Every registry made, so that `load_plugin` can load their entry points first.
_REGISTRIES: list[Registry] = []


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class Registry:
    """Names to classes of one kind of plugin, each a subclass of `base`."""

    def __init__(self, kind: str, group: str, base: type) -> None:
        self.kind, self.group, self.base = kind, group, base
        self._classes: dict[str, type] = {}
        self._entry_points_loaded = False
        _REGISTRIES.append(self)

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Class decorator registering `cls` under `name`; a taken name needs `override=True`."""
        if not name.isidentifier():
            raise VQBenchError(
                f"{self.kind} name {name!r} must be a Python identifier, e.g. 'my_{self.kind}'"
            )

        def decorate(cls: T) -> T:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise VQBenchError(
                    f"register_{self.kind}('{name}') needs a {self.base.__name__} subclass"
                )
            existing = self._classes.get(name)
            if existing is not None and _qualname(existing) != _qualname(cls) and not override:
                raise VQBenchError(
                    f"{self.kind} '{name}' is already registered by {_qualname(existing)}; "
                    f"pick another name or pass override=True to replace it"
                )
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            try:
                obj = ep.load()
            except Exception as err:  # name the broken plugin instead of a bare traceback
                raise VQBenchError(
                    f"plugin entry point '{ep.name} = {ep.value}' failed to load "
                    f"({_first_line(err)}); fix or uninstall the package that declares it"
                ) from None
            if isinstance(obj, type) and ep.name not in self._classes:
                self.register(ep.name)(obj)

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._classes)

    def get(self, name: str) -> type:
        self.load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            raise VQBenchError(
                f"unknown {self.kind} '{name}';{did_you_mean(name, self._classes)} "
                f"registered: {', '.join(sorted(self._classes))}"
            ) from None

    def create(self, name: str, **params: Any):
        return self.get(name)(**params)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_file(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(path.stem, None)
        raise


def load_plugin(module: str) -> None:
    """Import a plugin module (dotted name or path to a .py file) so its plugins register.

    Installed entry points load first, so a plugin that reuses a taken name is the one refused.
    A module that cannot be imported, or raises while it is, fails in one line naming it.
    """
    for registry in _REGISTRIES:
        registry.load_entry_points()
    path = Path(module)
    try:
        if module.endswith(".py"):
            if not path.is_file():
                raise VQBenchError(f"plugin file '{module}' does not exist; check the path")
            _import_file(path)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            importlib.import_module(module)
    except VQBenchError:
        raise
    except ModuleNotFoundError as err:
        if err.name and module.split(".")[0] != err.name.split(".")[0]:
            raise VQBenchError(
                f"plugin module '{module}' needs '{err.name}', which is not installed; "
                f"install it or fix the plugin's imports"
            ) from None
        raise VQBenchError(
            f"cannot import plugin module '{module}' ({err}); check the name and that it is "
            f"importable (installed, or on PYTHONPATH / in the current folder)"
        ) from None
    except SystemExit as err:  # `sys.exit()` at import: say so instead of ending silently
        raise VQBenchError(
            f"plugin '{module}' called sys.exit({err.code!r}) while being imported; fix the plugin"
        ) from None
    except SyntaxError as err:
        raise VQBenchError(
            f"plugin '{module}' has a syntax error at {Path(err.filename or module).name} line "
            f"{err.lineno}: {err.msg}; fix the file"
        ) from None
    except Exception as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        raise VQBenchError(
            f"plugin '{module}' raised while being imported ({_first_line(err)} at "
            f"{Path(frame.filename).name} line {frame.lineno}); fix the plugin"
        ) from None
