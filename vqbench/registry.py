"""Plugin registries: quantizers and gradient estimators, each behind three verbs.

`register_quantizer` / `create_quantizer` / `list_quantizers` and `register_estimator` /
`create_estimator` / `list_estimators`. Plugins register themselves with the decorator where
they are defined. Built-ins and third-party packages alike are discovered through entry-point
groups (`vqbench.quantizers`, `vqbench.estimators`; see pyproject.toml); `load_plugin("module")`
imports any other module whose decorators register more. A registry knows nothing about any one
plugin, and imports no plugin base class until it is used (lower layers stay import-cycle free).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from vqbench.errors import VQBenchError, did_you_mean

T = TypeVar("T", bound=type)


class Registry:
    """Names to classes of one kind of plugin (a subclass of `base`, given as 'module:Class')."""

    def __init__(self, kind: str, group: str, base: str) -> None:
        self.kind, self.group, self._base_path = kind, group, base
        self._classes: dict[str, type] = {}
        self._entry_points_loaded = False

    @property
    def base(self) -> type:
        module, name = self._base_path.split(":")
        return getattr(importlib.import_module(module), name)

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
                    f"plugin entry point '{ep.name} = {ep.value}' failed to load: {err}; "
                    f"fix or uninstall the package that declares it"
                ) from err
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


QUANTIZERS = Registry("quantizer", "vqbench.quantizers", "vqbench.quantizer:Quantizer")
ESTIMATORS = Registry("estimator", "vqbench.estimators", "vqbench.estimator:Estimator")


def register_quantizer(name: str, *, override: bool = False):
    """Class decorator that registers a `Quantizer` subclass under `name`."""
    return QUANTIZERS.register(name, override=override)


def list_quantizers() -> list[str]:
    """Registered quantizer names, sorted."""
    return QUANTIZERS.names()


def get_quantizer_class(name: str) -> type:
    """The class registered under `name`; unknown names fail with a suggestion."""
    return QUANTIZERS.get(name)


def create_quantizer(name: str, **params: Any):
    """Build the quantizer registered under `name` with validated `params`."""
    return QUANTIZERS.create(name, **params)


def register_estimator(name: str, *, override: bool = False):
    """Class decorator that registers an `Estimator` subclass under `name`."""
    return ESTIMATORS.register(name, override=override)


def list_estimators() -> list[str]:
    """Registered gradient-estimator names, sorted."""
    return ESTIMATORS.names()


def get_estimator_class(name: str) -> type:
    return ESTIMATORS.get(name)


def create_estimator(name: str, **params: Any):
    """Build the estimator registered under `name` with validated `params`."""
    return ESTIMATORS.create(name, **params)


def load_plugin(module: str) -> None:
    """Import a plugin module (dotted name or path to a .py file) so its plugins register.

    Installed entry points load first, so a plugin that reuses a taken name is the one refused.
    """
    QUANTIZERS.load_entry_points()
    ESTIMATORS.load_entry_points()
    path = Path(module)
    try:
        if module.endswith(".py"):
            if not path.is_file():
                raise VQBenchError(f"plugin file '{module}' does not exist; check the path")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = mod
            spec.loader.exec_module(mod)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise VQBenchError(
            f"cannot import plugin module '{module}' ({err}); check the name and that it is "
            f"importable (installed, or on PYTHONPATH / in the current folder)"
        ) from None
