"""The certified search on CUDA, with real TF32 and bfloat16 tensor cores: the bounds hold,
and the indices equal the fp32 search's on every benchmark input (all sizes) and on the
adversarial inputs; the fp32 search ignores the global TF32 switch."""

from __future__ import annotations

import pytest
import torch

from tests.cuda.conftest import DEVICE, ON_CUDA, needs_cuda, needs_device
from tests.search_inputs import ADVERSARIAL, benchmark_cases, benchmark_search_inputs, near_ties
from tests.test_search_precision import (
    assert_bounds_hold,
    assert_same_as_fp32,
    plain_low_precision_argmin,
)
from vqbench.search import cuda_tf32, search

pytestmark = [pytest.mark.cuda, needs_device]

PRECISIONS = ["tf32", "bf16"]
EMULATION = [False, True] if ON_CUDA else [True]


@pytest.mark.parametrize("emulate", EMULATION)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", ["random", "far_from_origin", "large_dim", "near_ties"])
def test_error_bounds_hold_on_tensor_cores(case, precision, emulate):
    z, codes = ADVERSARIAL[case]()
    assert_bounds_hold(z[:512].to(DEVICE), codes[:2048].to(DEVICE), precision, emulate)


@pytest.mark.parametrize("emulate", EMULATION)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_certified_search_equals_fp32_on_adversarial_inputs(case, precision, emulate):
    z, codes = ADVERSARIAL[case]()
    assert_same_as_fp32(z, codes, precision, DEVICE, emulate=emulate)
    assert_same_as_fp32(z, codes, precision, DEVICE, emulate=emulate, block_elements=2**16)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_certificate_is_what_makes_it_exact(precision):
    z, codes = (t.to(DEVICE) for t in near_ties())
    wrong = plain_low_precision_argmin(z, codes, precision, emulate=not ON_CUDA)
    assert (wrong != search(z, codes).indices).sum() > 10
    assert assert_same_as_fp32(z, codes, precision, DEVICE) > 0


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", benchmark_cases([1024, 8192, 65536, 262144]), ids=lambda c: c[0])
def test_certified_search_equals_fp32_on_benchmark_inputs(case, precision):
    captured = benchmark_search_inputs(case[1], DEVICE)
    if captured is None:
        pytest.skip("this quantizer does not call nearest_code")
    fallbacks = assert_same_as_fp32(*captured, precision, DEVICE)
    assert fallbacks < 0.05 * captured[0].shape[0], f"{fallbacks} tokens fell back"


@needs_cuda
def test_fp32_search_ignores_the_global_tf32_switch():
    z, codes = (t.to(DEVICE) for t in near_ties())
    reference = search(z, codes).indices
    with cuda_tf32(True):
        assert torch.equal(search(z, codes).indices, reference)
        # ... where a float32 matmul with TF32 on would pick other codes:
        centred = codes - codes.mean(0)
        tf32 = torch.addmm(centred.pow(2).sum(1), z - codes.mean(0), centred.t(), alpha=-2.0)
        assert (tf32.argmin(1) != reference).sum() > 10


NEW_TF32_API = """
import torch
from tests.search_inputs import near_ties
from vqbench.search import search
z, codes = (t.cuda() for t in near_ties())
reference = search(z, codes).indices
torch.backends.cuda.matmul.fp32_precision = "tf32"
assert torch.equal(search(z, codes).indices, reference)
assert torch.equal(search(z, codes, precision="tf32").indices, reference)
assert torch.backends.cuda.matmul.fp32_precision == "tf32"
print("ok")
"""


@needs_cuda
def test_the_search_works_under_the_new_tf32_api():
    # A fresh process: once the new API is used, PyTorch refuses reads of the legacy flag.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", NEW_TF32_API], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@needs_cuda
def test_cuda_and_cpu_fp32_searches_agree_away_from_float32_ties():
    z, codes = ADVERSARIAL["random"](n=4096, k=8192, d=128)
    on_cpu = search(z, codes).indices
    on_gpu = search(z.to(DEVICE), codes.to(DEVICE)).indices.cpu()
    assert (on_cpu != on_gpu).sum() <= 2  # only where two codes tie to float32 rounding
