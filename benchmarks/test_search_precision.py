"""The certified TF32/bf16 search (`search_precision`) at the paper's scale, on CUDA.

One forward+backward of each explicit-codebook quantizer at 65,536 codes with
`search_precision: tf32` and `bf16`, in each precision context of `test_quantizers.py`, beside
its fp32-search rows there; plus how many tokens the certificate sent to the fp32 fallback.
On CPU the rounding is only emulated (slower than fp32), so these cases run on CUDA only.
"""

from __future__ import annotations

import pytest
import torch
from cases import build_step
from test_quantizers import (
    DEVICE,
    DIM,
    PRECISIONS,
    TOKENS,
    device_name,
    peak_extra_memory,
    synchronised,
)

SIZE = 65536
METHODS = {"vanilla": {}, "ema": {}, "simvq": {}, "fc": {}, "group_vq": {"groups": 64}}


def fallback_fraction(method: str, params: dict) -> float:
    """Share of the tokens of the case's first step that the certificate sends to fp32."""
    import vqbench.quantizer as quantizer_module
    from vqbench.search import search

    captured = []
    original = quantizer_module.nearest_code

    def capture(z, codes, **kwargs):
        captured.append((z, codes, kwargs.get("precision", "fp32")))
        return original(z, codes, **kwargs)

    quantizer_module.nearest_code = capture
    try:
        build_step("vqbench", method, SIZE, TOKENS, DIM, params, DEVICE)()
    finally:
        quantizer_module.nearest_code = original
    z, codes, precision = captured[0]
    return search(z, codes, precision=precision).fallback_tokens / z.shape[0]


@pytest.mark.skipif(DEVICE.type != "cuda", reason="tensor cores: CUDA only")
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("search_precision", ["tf32", "bf16"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_certified_search_forward_backward(benchmark, method, search_precision, precision):
    params = {**METHODS[method], "search_precision": search_precision}
    step = build_step("vqbench", method, SIZE, TOKENS, DIM, params, DEVICE, precision)
    benchmark.group = f"{SIZE} codes, {precision}, certified search"
    benchmark.extra_info.update(
        {
            "impl": "vqbench-certified",
            "method": method,
            "codebook_size": SIZE,
            "params": params,
            "search_precision": search_precision,
            "tokens": TOKENS,
            "dim": DIM,
            "device": DEVICE.type,
            "device_name": device_name(),
            "precision": precision,
            "threads": torch.get_num_threads(),
        }
    )
    benchmark.pedantic(synchronised(step), rounds=3, warmup_rounds=1, iterations=10)
    del step
    benchmark.extra_info["peak_extra_mib"] = peak_extra_memory(
        "vqbench", method, SIZE, params, precision
    )
    benchmark.extra_info["fallback_fraction"] = fallback_fraction(method, params)
