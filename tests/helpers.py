"""Reference computations shared by the tests."""

from __future__ import annotations

import torch

from vqbench.quantizer import get_quantizer_class, list_quantizers

#: The small configuration of every registered quantizer (its `small_config` class attribute),
#: used by the shared interface tests and the engine tests; `tests/test_registry.py` checks
#: that every registered name declares one.
SMALL_CONFIGS = {
    name: dict(get_quantizer_class(name).small_config)
    for name in list_quantizers()
    if get_quantizer_class(name).small_config is not None
}


def brute_force_nearest(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """float64 `cdist` argmin: the reference every nearest-code search is checked against."""
    return torch.cdist(z.double(), codes.double()).argmin(1)


def assert_nearest(z: torch.Tensor, codes: torch.Tensor, indices: torch.Tensor) -> None:
    """Indices equal the float64 brute force, except on float32 near-ties, which must be ties."""
    reference = brute_force_nearest(z, codes)
    dist = torch.cdist(z.double(), codes.double())
    picked = dist.gather(1, indices.view(-1, 1)).squeeze(1)
    best = dist.gather(1, reference.view(-1, 1)).squeeze(1)
    assert torch.all(picked - best <= 1e-5 * (1 + best)), "an index is not a nearest code"
    assert (indices == reference).float().mean() >= 0.99
