"""Reference computations shared by the tests."""

from __future__ import annotations

import torch

#: Small configurations of every built-in quantizer, used by the shared interface tests.
SMALL_CONFIGS = {
    "vanilla": dict(codebook_size=64, dim=16),
    "ema": dict(codebook_size=64, dim=16),
    "fc": dict(codebook_size=64, dim=16, lookup_dim=4),
    "fsq": dict(levels=[5, 4, 3], dim=16),
    "lfq": dict(codebook_size=64, dim=16),
    "vqgan_lc": dict(codebook_size=64, dim=16, lookup_dim=4),
    "simvq": dict(codebook_size=64, dim=16),
    "group_vq": dict(codebook_size=64, dim=16, groups=4),
    "bsq": dict(codebook_size=64, dim=16),
    "ibq": dict(codebook_size=64, dim=16),
    "leech": dict(dim=16),
    "fsp": dict(levels=[5, 4, 3], dim=16),
    "residual": dict(stages=2, quantizer="vanilla", quantizer_params=dict(codebook_size=8), dim=16),
    "product": dict(parts=2, quantizer="vanilla", quantizer_params=dict(codebook_size=8), dim=16),
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
