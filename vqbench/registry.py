"""The quantizer registry: `register_quantizer`, `create_quantizer`, `list_quantizers`.

Quantizers register themselves with the `@register_quantizer("name")` decorator where they are
defined. Built-ins and third-party packages alike are discovered through the entry-point group
`vqbench.quantizers` (see pyproject.toml); `load_plugin("module")` imports any other module whose
decorators register more. The registry knows nothing about any one quantizer.
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
from vqbench.quantizer import Quantizer

ENTRY_POINT_GROUP = "vqbench.quantizers"

_REGISTRY: dict[str, type[Quantizer]] = {}
_entry_points_loaded = False

Q = TypeVar("Q", bound=type[Quantizer])


def register_quantizer(name: str, *, override: bool = False) -> Callable[[Q], Q]:
    """Class decorator that registers a `Quantizer` subclass under `name`.

    Registering a different class under a taken name fails unless `override=True`.
    """
    if not name.isidentifier():
        raise VQBenchError(f"quantizer name {name!r} must be a Python identifier, e.g. 'my_vq'")

    def decorate(cls: Q) -> Q:
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise VQBenchError(f"register_quantizer('{name}') needs a Quantizer subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and _qualname(existing) != _qualname(cls) and not override:
            raise VQBenchError(
                f"quantizer '{name}' is already registered by {_qualname(existing)}; "
                f"pick another name or pass override=True to replace it"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:  # name the broken plugin instead of a bare traceback
            raise VQBenchError(
                f"plugin entry point '{ep.name} = {ep.value}' failed to load: {err}; "
                f"fix or uninstall the package that declares it"
            ) from err
        if isinstance(obj, type) and issubclass(obj, Quantizer) and ep.name not in _REGISTRY:
            register_quantizer(ep.name)(obj)


def load_plugin(module: str) -> None:
    """Import a plugin module (dotted name or path to a .py file) so its quantizers register.

    Installed entry points load first, so a plugin that reuses a taken name is the one refused.
    """
    _load_entry_points()
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


def list_quantizers() -> list[str]:
    """Registered quantizer names, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get_quantizer_class(name: str) -> type[Quantizer]:
    """The class registered under `name`; unknown names fail with a suggestion."""
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VQBenchError(
            f"unknown quantizer '{name}';{did_you_mean(name, _REGISTRY)} "
            f"registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_quantizer(name: str, **params: Any) -> Quantizer:
    """Build the quantizer registered under `name` with validated `params`."""
    return get_quantizer_class(name)(**params)
