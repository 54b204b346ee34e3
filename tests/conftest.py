from __future__ import annotations

import pytest
import torch

from vqbench import registry


@pytest.fixture
def clean_registry():
    """Restore the registry after a test that registers quantizers of its own."""
    registry.list_quantizers()
    saved = dict(registry._REGISTRY)
    yield registry
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
