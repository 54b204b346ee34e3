"""The certified TF32/bf16 search returns the fp32 search's indices (CPU: rounding emulated).

The same checks run on CUDA with real tensor cores in `tests/cuda/test_search_cuda.py`.
"""

from __future__ import annotations

import math
import struct

import pytest
import torch

from tests.search_inputs import ADVERSARIAL, benchmark_cases, benchmark_search_inputs, near_ties
from vqbench import create_quantizer
from vqbench.errors import VQBenchError
from vqbench.search import (
    _Centred,
    _CertifiedOptions,
    _LowPrecisionDistances,
    fp32_error_bound,
    lowp_error_bound,
    round_to_bf16,
    round_to_tf32,
    search,
)

PRECISIONS = ["tf32", "bf16"]


# ---- shared with the CUDA tests ---------------------------------------------------------------
def assert_same_as_fp32(z, codes, precision, device, **options) -> int:
    """The certified search's indices equal the fp32 search's; returns the fallback count."""
    z, codes = z.to(device), codes.to(device)
    reference = search(z, codes, precision="fp32", **_blocks(options)).indices
    result = search(z, codes, precision=precision, **options)
    mismatch = (result.indices != reference).nonzero().squeeze(1)
    assert mismatch.numel() == 0, (
        f"{mismatch.numel()} tokens differ from the fp32 search, e.g. token "
        f"{mismatch[:5].tolist()}: {result.indices[mismatch[:5]].tolist()} vs "
        f"{reference[mismatch[:5]].tolist()}"
    )
    return result.fallback_tokens


def _blocks(options: dict) -> dict:
    return {k: v for k, v in options.items() if k == "block_elements"}


def exact_distances(z, codes):
    """float64 `n - 2 <z, c>` on the centred float32 values, with `a = sum |z_i c_i|`."""
    c = _Centred.of(z, codes)
    z64, c64 = c.z.double(), c.codes.double()
    return c, c.norms.double() - 2 * z64 @ c64.t(), z64.abs() @ c64.abs().t()


def low_precision_distances(c, precision, emulate):
    lowp = _LowPrecisionDistances(c, _CertifiedOptions(precision, emulate, 4, 8))
    return lowp.block(lowp.prepare_rows(c.z), 0, c.codes.shape[0]).double()


def assert_bounds_hold(z, codes, precision, emulate) -> float:
    """`|D~ - D| <= lowp_error_bound` and `|D32 - D| <= fp32_error_bound` for every pair;
    returns the largest ratio of error to bound (to show the bound is not vacuous)."""
    c, exact, abs_dot = exact_distances(z, codes)
    norms = c.norms.double()
    lowp = low_precision_distances(c, precision, emulate)
    ratio = (lowp - exact).abs() / lowp_error_bound(precision, z.shape[1], abs_dot, norms)
    assert ratio.max() <= 1, f"the {precision} bound fails: error/bound = {ratio.max():.3f}"
    fp32 = torch.addmm(c.norms, c.z, c.codes.t(), alpha=-2.0).double()
    fp32_ratio = (fp32 - exact).abs() / fp32_error_bound(z.shape[1], abs_dot, norms)
    assert fp32_ratio.max() <= 1, f"the fp32 bound fails: {fp32_ratio.max():.3f}"
    return float(ratio.max())


def plain_low_precision_argmin(z, codes, precision, emulate):
    """What the TF32/bf16 distances alone would pick (no re-check): often wrong here."""
    c = _Centred.of(z, codes)
    return low_precision_distances(c, precision, emulate).argmin(1)


# ---- rounding ----------------------------------------------------------------------------------
def _reference_round(value: float, bits: int) -> float:
    """Round-to-nearest-even to `bits` significant bits, in Python floats (float32 range)."""
    if not math.isfinite(value) or value == 0:
        return value
    mantissa, exponent = math.frexp(value)  # value = m 2^e, 0.5 <= |m| < 1
    exponent = max(exponent, -125)  # float32 subnormals keep a fixed spacing
    scaled = math.ldexp(value, bits - exponent)
    rounded = math.ldexp(round(scaled), exponent - bits)  # round() is ties-to-even
    return (
        struct.unpack("f", struct.pack("f", rounded))[0]
        if abs(rounded) < 3.4e38
        else (math.copysign(math.inf, rounded))
    )


def _float32(bits: int) -> float:
    return struct.unpack("f", struct.pack("I", bits))[0]


def test_tf32_rounding_is_round_to_nearest_even_at_11_bits():
    special = [
        1.0,
        -1.5,
        _float32(0x3F800000 | 0x1000),  # exactly halfway, even below: rounds down
        _float32(0x3F800000 | 0x3000),  # halfway, odd below: rounds up
        _float32(0x3F800000 | 0x1001),  # just above halfway
        _float32(0x7F7FFFFF),  # the largest float32: rounds to inf
        _float32(0x00000FFF),  # a subnormal
        _float32(0x00801000),  # halfway above the smallest normal
        0.0,
        -0.0,
    ]
    values = torch.tensor(special + torch.randn(5000).mul(1e3).tolist(), dtype=torch.float32)
    values = torch.cat([values, torch.tensor([float("inf"), -float("inf"), float("nan")])])
    rounded = round_to_tf32(values)
    expected = torch.tensor([_reference_round(v, 11) for v in values.tolist()])
    assert torch.equal(rounded[:-1], expected[:-1]) and rounded[-1].isnan()
    assert rounded[5] == float("inf")
    assert (rounded.view(torch.int32)[:-3] & 0x1FFF).eq(0).all()  # 10 stored bits


def test_bf16_rounding_is_round_to_nearest_even_at_8_bits():
    values = torch.randn(5000) * 1e3
    expected = torch.tensor([_reference_round(v, 8) for v in values.tolist()])
    assert torch.equal(round_to_bf16(values), expected)


# ---- the error bounds ------------------------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", ["random", "far_from_origin", "large_dim"])
def test_error_bounds_hold_for_every_pair(case, precision):
    z, codes = ADVERSARIAL[case]()
    worst = assert_bounds_hold(z[:300], codes[:1000], precision, emulate=True)
    assert worst > 0.005, f"the bound is loose by more than 200x ({worst:.4f})"


# ---- the certified search -------------------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_certified_search_equals_fp32_on_adversarial_inputs(case, precision):
    z, codes = ADVERSARIAL[case]()
    assert_same_as_fp32(z, codes, precision, "cpu")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_certificate_is_what_makes_it_exact(precision):
    z, codes = near_ties()
    wrong = plain_low_precision_argmin(z, codes, precision, emulate=True)
    reference = search(z, codes).indices
    assert (wrong != reference).sum() > 10  # the low-precision distances alone are wrong
    assert assert_same_as_fp32(z, codes, precision, "cpu") > 0  # and some tokens fall back


@pytest.mark.parametrize("precision", PRECISIONS)
def test_few_candidates_fall_back_more_and_stay_exact(precision):
    z, codes = ADVERSARIAL["random"](n=1500, k=2000, d=32)
    usual = assert_same_as_fp32(z, codes, precision, "cpu")
    few = assert_same_as_fp32(z, codes, precision, "cpu", keep_groups=1, rechecks=1)
    assert few > usual


@pytest.mark.parametrize("precision", PRECISIONS)
def test_several_row_and_code_chunks_with_a_partial_last_group(precision):
    z, codes = ADVERSARIAL["random"](n=200, k=5000, d=32)  # 5000 = 312 groups of 16 + 8
    assert_same_as_fp32(z, codes, precision, "cpu", block_elements=2**12)


def test_edge_sizes():
    for n, k in [(0, 5), (1, 1), (3, 2), (5, 17), (40, 16)]:
        z, codes = torch.randn(n, 8), torch.randn(k, 8)
        for precision in PRECISIONS:
            assert_same_as_fp32(z, codes, precision, "cpu")


BENCHMARK_SIZES = [1024]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", benchmark_cases(BENCHMARK_SIZES), ids=lambda c: c[0])
def test_certified_search_equals_fp32_on_benchmark_inputs(case, precision):
    captured = benchmark_search_inputs(case[1], torch.device("cpu"))
    if captured is None:
        pytest.skip("this quantizer does not call nearest_code")
    assert_same_as_fp32(*captured, precision, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", benchmark_cases([8192, 65536, 262144]), ids=lambda c: c[0])
def test_certified_search_equals_fp32_on_large_benchmark_inputs(case, precision):
    captured = benchmark_search_inputs(case[1], torch.device("cpu"))
    if captured is None:
        pytest.skip("this quantizer does not call nearest_code")
    assert_same_as_fp32(*captured, precision, "cpu")


# ---- through the quantizers ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vanilla", "ema", "simvq", "fc", "group_vq", "vqgan_lc"])
def test_quantizers_take_search_precision(name):
    extra = {"groups": 4} if name == "group_vq" else {}
    z = torch.randn(4, 16, 8, 8)
    outputs = {}
    for precision in ["fp32", "tf32", "bf16"]:
        torch.manual_seed(0)
        q = create_quantizer(name, codebook_size=256, dim=16, search_precision=precision, **extra)
        outputs[precision] = q(z).indices
    assert torch.equal(outputs["tf32"], outputs["fp32"])
    assert torch.equal(outputs["bf16"], outputs["fp32"])


def test_bad_search_precision_is_one_line():
    with pytest.raises(VQBenchError, match="search_precision") as info:
        create_quantizer("vanilla", codebook_size=8, dim=4, search_precision="fp16")
    assert "\n" not in str(info.value)
