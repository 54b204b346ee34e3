"""A generic plugin registry (names to classes) and the loader of plugin modules.

A `Registry` knows nothing about what it holds: the module that defines a kind of plugin
creates one, names the entry-point group through which installed packages declare theirs and
the base class they must derive from (`vqbench.quantizer.QUANTIZERS`,
`vqbench.estimator.ESTIMATORS`). Plugins register themselves with the decorator where they
are defined; built-ins and third-party packages alike are discovered through the entry-point
group; `load_plugin("module")` imports any other module whose decorators register more.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
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

    def __init__(
        self, kind: str, group: str, base: type, check: Callable[[type, str], None] | None = None
    ) -> None:
        """`check(cls, name)` raises `VQBenchError` at registration for a class that cannot work."""
        self.kind, self.group, self.base, self.check = kind, group, base, check
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
            if self.check is not None:
                self.check(cls, name)
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
                f"registered: {', '.join(sorted(self._classes))}; a plugin's {self.kind} needs "
                f"--plugin FILE_OR_MODULE (or the suite's plugins: list)"
            ) from None

    def create(self, name: str, **params: Any):
        return self.get(name)(**params)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: Plugins loaded in this process: what the user named -> what a run folder records (the
#: module name of an installed module, the absolute path of a file).
_LOADED: dict[str, str] = {}


def loaded_plugins() -> list[str]:
    """The plugins this process loaded, as a run folder records them (`plugins.json`)."""
    return list(dict.fromkeys(_LOADED.values()))


def _private_name(path: Path) -> str:
    """A module name no other module has: a plugin file `json.py` must not replace `json`."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"_vqbench_plugin_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"


def _import_file(path: Path) -> None:
    """Execute the file as module `_private_name(path)` (again if it was: its classes keep their
    qualified names, so registering them again is no clash)."""
    name = _private_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _is_cwd(entry: str) -> bool:
    try:
        return Path(entry or ".").resolve() == Path.cwd().resolve()
    except OSError:
        return False


def _in_working_directory(module: str) -> Path | None:
    """`module` as a file or package in the working directory, when no installed module (nor
    one on PYTHONPATH) has that name; the working directory never shadows what is installed."""
    top = module.split(".")[0]
    if top in sys.modules:
        return None
    outside = [p for p in sys.path if not _is_cwd(p)]
    if importlib.machinery.PathFinder.find_spec(top, outside) is not None:
        return None
    for candidate in (Path(top + ".py"), Path(top) / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _import_module(module: str) -> str:
    """Import a dotted module name; return what a run folder records for it."""
    local = _in_working_directory(module)
    if local is None:
        importlib.import_module(module)
        return module
    if "." not in module and local.name != "__init__.py":
        _import_file(local)
        return str(local)
    # A package (or a module in one) in the working directory: the folder joins the end of
    # the path, behind every installed package.
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    importlib.import_module(module)
    return module


def _last_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[-1]}" if text else type(err).__name__


def load_plugin(module: str) -> str:
    """Import a plugin module (dotted name or path to a .py file) so its plugins register, and
    return what a run folder records for it (`loaded_plugins`).

    A file is loaded under a private module name (so `plugins/json.py` cannot replace `json`);
    a module name is looked up among installed modules and PYTHONPATH first, and only then in
    the working directory, which never shadows an installed package. Installed entry points
    load first, so a plugin that reuses a taken name is the one refused. A module that cannot
    be imported, registers a taken name or raises while it is imported fails in one line naming
    it and the error's last line.
    """
    for registry in _REGISTRIES:
        registry.load_entry_points()
    path = Path(module)
    try:
        if module.endswith(".py"):
            if not path.is_file():
                same = [p for p in _LOADED.values() if Path(p).name == path.name]
                if same:  # a run's recorded file, loaded from where it now is (--plugin)
                    return same[0]
                raise FileNotFoundError(module)
            _import_file(path.resolve())
            recorded = str(path.resolve())
        else:
            recorded = _import_module(module)
    except FileNotFoundError as err:
        if str(err) != module:
            raise _plugin_error(module, err) from None
        raise VQBenchError(f"plugin file '{module}' does not exist; check the path") from None
    except ModuleNotFoundError as err:
        if err.name and module.split(".")[0] != err.name.split(".")[0]:
            raise VQBenchError(
                f"plugin '{module}' needs '{err.name}', which is not installed; "
                f"install it or fix the plugin's imports"
            ) from None
        raise VQBenchError(
            f"cannot import plugin module '{module}' ({err}); check the name and that it is "
            f"importable (installed, on PYTHONPATH or in the current folder)"
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
    except VQBenchError as err:  # e.g. a name registered twice, a Params of the wrong base
        raise VQBenchError(f"plugin '{module}': {_last_line(err).split(': ', 1)[1]}") from None
    except Exception as err:
        raise _plugin_error(module, err) from None
    _LOADED[module] = recorded
    return recorded


def _plugin_error(module: str, err: BaseException) -> VQBenchError:
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return VQBenchError(
        f"plugin '{module}' raised while being imported ({_last_line(err)} at "
        f"{Path(frame.filename).name} line {frame.lineno}); fix the plugin"
    )
