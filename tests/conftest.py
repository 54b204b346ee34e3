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
