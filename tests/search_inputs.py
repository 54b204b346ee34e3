"""Inputs for the search-precision tests: adversarial cases and the benchmarks' own inputs.

Each builder returns `(z, codes)` in float32 on CPU; the CPU and CUDA tests share them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_codes(n=2000, k=3000, d=64, seed=0):
    g = _gen(seed)
    return torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)


def near_ties(k=1024, d=64, seed=1):
    """Tokens at the midpoint of two codes, moved towards one of them by distances from 0 to
    well above the low-precision error: where TF32/bf16 rounding picks the wrong code."""
    g = _gen(seed)
    codes = torch.randn(k, d, generator=g)
    a, b = torch.randint(0, k, (2, 4000), generator=g)
    b = torch.where(a == b, (b + 1) % k, b)
    direction = torch.nn.functional.normalize(codes[a] - codes[b], dim=1)
    shifts = torch.tensor([0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1])
    shift = shifts[torch.arange(4000) % len(shifts)].unsqueeze(1)
    z = (codes[a] + codes[b]) / 2 + shift * direction
    return z, codes


def far_from_origin(k=2048, d=64, seed=2):
    """Two clusters at +-1000 (the codebook mean sits between them, so centring cannot remove
    the offset), spread 0.1: distances of ~4e6 that differ in their 7th digit."""
    g = _gen(seed)
    sign = torch.where(torch.arange(k) % 2 == 0, 1.0, -1.0).unsqueeze(1)
    codes = 1000 * sign + 0.1 * torch.randn(k, d, generator=g)
    pick = torch.randint(0, k, (3000,), generator=g)
    z = codes[pick] + 0.1 * torch.randn(3000, d, generator=g)
    return z, codes


def offset_cluster(k=2048, d=128, seed=3):
    """Every code near (1e4, ..., 1e4), 0.01 apart: what centring is for."""
    g = _gen(seed)
    codes = 1e4 + 0.01 * torch.randn(k, d, generator=g)
    z = 1e4 + 0.01 * torch.randn(2000, d, generator=g)
    return z, codes


def duplicates(k=1500, d=32, seed=4):
    """Each code appears three times (at scattered indices); tokens near them."""
    g = _gen(seed)
    base = torch.randn(k // 3, d, generator=g)
    codes = base.repeat(3, 1)[torch.randperm(k, generator=g)]
    pick = torch.randint(0, k, (3000,), generator=g)
    z = codes[pick] + 0.05 * torch.randn(3000, d, generator=g)
    return z, codes


def zero_vectors(k=1000, d=32, seed=5):
    """Zero tokens, and a codebook holding the zero vector twice and its negated codes."""
    g = _gen(seed)
    half = torch.randn(k // 2 - 1, d, generator=g)
    codes = torch.cat([half, torch.zeros(2, d), -half])
    z = torch.cat([torch.zeros(500, d), torch.randn(1500, d, generator=g)])
    return z, codes


def all_equal_codes(k=257, d=16, seed=6):
    """Every code the same vector: every token ties everywhere (index 0)."""
    g = _gen(seed)
    codes = torch.randn(1, d, generator=g).expand(k, d).contiguous()
    return torch.randn(800, d, generator=g), codes


def integer_grid(k=2000, d=8, seed=7):
    """Codes on {-1, 0, 1}^d and tokens on the half-integer grid: many exact ties."""
    g = _gen(seed)
    codes = torch.randint(-1, 2, (k, d), generator=g).float()
    z = torch.randint(-2, 3, (3000, d), generator=g).float() / 2
    return z, codes


def large_dim(k=512, d=2048, seed=8):
    g = _gen(seed)
    codes = torch.randn(k, d, generator=g)
    pick = torch.randint(0, k, (600,), generator=g)
    z = 0.7 * codes[pick] + 0.7 * torch.randn(600, d, generator=g)
    return z, codes


def tiny_magnitudes(k=600, d=32, seed=9):
    """Values ~1e-20: products ~1e-40 are float32 subnormals, which tensor cores flush."""
    z, codes = random_codes(1000, k, d, seed)
    return z * 1e-20, codes * 1e-20


def huge_magnitudes(k=600, d=32, seed=10):
    """Values ~1e18: squared norms ~3e37, next to float32's overflow."""
    z, codes = random_codes(1000, k, d, seed)
    return z * 1e18, codes * 1e18


ADVERSARIAL = {
    "random": random_codes,
    "near_ties": near_ties,
    "far_from_origin": far_from_origin,
    "offset_cluster": offset_cluster,
    "duplicates": duplicates,
    "zero_vectors": zero_vectors,
    "all_equal_codes": all_equal_codes,
    "integer_grid": integer_grid,
    "large_dim": large_dim,
    "tiny_magnitudes": tiny_magnitudes,
    "huge_magnitudes": huge_magnitudes,
}


def benchmark_cases(sizes: list[int]) -> list[tuple[str, dict]]:
    """(id, case) of every explicit-codebook benchmark case at `sizes` (benchmarks/cases.py)."""
    from vqbench.quantizer import get_quantizer_class

    sys.path.insert(0, str(BENCHMARKS))
    from test_quantizers import case_id, case_list

    seen, out = set(), []
    for impl, method, size, params in case_list():
        if impl != "vqbench" or size not in sizes:
            continue
        if not get_quantizer_class(method).explicit_codebook:
            continue
        search_params = {k: v for k, v in params.items() if not k.startswith("estimator")}
        key = (method, size, tuple(sorted(search_params.items())))
        if key not in seen:  # estimators do not change what is searched
            seen.add(key)
            out.append((case_id((impl, method, size, search_params)), (method, size, params)))
    return out


def benchmark_search_inputs(case, device: torch.device):
    """The `(z, codes)` the quantizer of a benchmark case searches in its first step, captured
    from `nearest_code` while `benchmarks/cases.py` runs that step (None if it searches none)."""
    import vqbench.quantizer as quantizer_module

    sys.path.insert(0, str(BENCHMARKS))
    from cases import build_step

    method, size, params = case
    captured = []
    original = quantizer_module.nearest_code

    def capture(z, codes, **kwargs):
        captured.append((z.detach().clone(), codes.detach().clone()))
        return original(z, codes, **kwargs)

    quantizer_module.nearest_code = capture
    try:
        build_step("vqbench", method, size, 8192, 128, params, device)()
    finally:
        quantizer_module.nearest_code = original
    return captured[0] if captured else None
