from __future__ import annotations

import pytest
import torch

from vqbench.estimator import ESTIMATORS
from vqbench.quantizer import QUANTIZERS


@pytest.fixture
def clean_registry():
    """Restore the registries after a test that registers plugins of its own."""
    saved = {}
    for reg in (QUANTIZERS, ESTIMATORS):
        reg.load_entry_points()
        saved[reg] = dict(reg._classes)
    yield
    for reg, classes in saved.items():
        reg._classes.clear()
        reg._classes.update(classes)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _forget_plugins_loaded_by_the_test():
    """A plugin a test loads (and records in `registry._LOADED`) must not follow the next
    test into the run folders it writes (`plugins.json`)."""
    from vqbench import registry

    saved = dict(registry._LOADED)
    yield
    registry._LOADED.clear()
    registry._LOADED.update(saved)
