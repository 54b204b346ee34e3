"""Every quantizer and estimator, forward and backward on CUDA, in fp32 and under bf16 and
fp16 autocast: indices equal to the fp32 search on CPU on the same inputs, outputs and
gradients equal to the CPU's within float32 rounding. Skipped without a CUDA device."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.cuda.conftest import DEVICE, needs_device
from tests.helpers import SMALL_CONFIGS
from vqbench import create_quantizer
from vqbench.estimator import list_estimators

pytestmark = [pytest.mark.cuda, needs_device]

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = sorted(SMALL_CONFIGS)
#: The quantizers whose nearest-code search takes a `search_precision`.
EXPLICIT = [
    n
    for n in NAMES
    if "search_precision" in type(create_quantizer(n, **SMALL_CONFIGS[n]).params).model_fields
]
ESTIMATOR_PARAMS = {
    "ste": {},
    "rotation": {},
    "radius": {"radius": "clipped", "scale": 0.5, "detach_radius": False},
    # DiVeQ's noise is drawn on the device, where CUDA's generator differs from the CPU's:
    # the deterministic part is compared (the noise: tests/estimators/test_diveq.py).
    "diveq": {"noise_variance": 0.0},
}


def _build(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_quantizer(name, **{**SMALL_CONFIGS[name], **extra}).train()


def _step(q, z, upstream, dtype):
    """Forward (under autocast when `dtype`), a loss through a fixed upstream gradient,
    backward; returns the output, the input gradient and the parameter gradients."""
    z = z.detach().clone().requires_grad_()
    device = z.device.type
    with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = q(z)
    ((out.z_q.float() * upstream).sum() + out.loss.float()).backward()
    grads = {k: p.grad.detach().cpu() for k, p in q.named_parameters() if p.grad is not None}
    return out, z.grad.detach().cpu(), grads


def _compare(name, extra, precision, input_dtype=torch.float32):
    cpu = _build(name, **extra)
    gpu = copy.deepcopy(cpu).to(DEVICE)
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(4, 16, 8, 8, generator=generator).to(input_dtype)
    upstream = torch.randn(4, 16, 8, 8, generator=generator)
    # The CPU reference sees exactly the values the CUDA quantizer receives.
    out_cpu, gz_cpu, grads_cpu = _step(cpu, z.float(), upstream, None)
    out_gpu, gz_gpu, grads_gpu = _step(gpu, z.to(DEVICE), upstream.to(DEVICE), AUTOCAST[precision])
    assert torch.equal(out_gpu.indices.cpu(), out_cpu.indices), "indices differ from CPU fp32"
    assert out_gpu.z_q.dtype == z.dtype
    torch.testing.assert_close(out_gpu.z_q.float().cpu(), out_cpu.z_q.float(), **_tol(precision))
    torch.testing.assert_close(out_gpu.loss.float().cpu(), out_cpu.loss, rtol=1e-4, atol=1e-6)
    # Gradients reach the input and the parameters through z_q's dtype: bf16/fp16 inputs
    # round them, and a softmax (IBQ's soft path) magnifies that rounding where it cancels.
    exact_grads = input_dtype == torch.float32
    if exact_grads:
        torch.testing.assert_close(gz_gpu.float(), gz_cpu, **_tol(precision))
    else:
        error = (gz_gpu.float() - gz_cpu).norm() / gz_cpu.norm()
        assert error < 1e-2, f"input: relative gradient error {error:.3g}"
    assert grads_gpu.keys() == grads_cpu.keys()
    for key in grads_cpu:
        if exact_grads:
            torch.testing.assert_close(grads_gpu[key], grads_cpu[key], rtol=1e-3, atol=1e-5)
        else:  # relative to the gradient's size: elementwise, cancellation magnifies rounding
            error = (grads_gpu[key] - grads_cpu[key]).norm() / grads_cpu[key].norm().clamp_min(
                1e-12
            )
            assert error < 2e-2, f"{key}: relative gradient error {error:.3g}"
    cpu.after_optimizer_step()
    gpu.after_optimizer_step()  # EMA statistics: the codebooks stay equal
    for key, value in cpu.state_dict().items():
        torch.testing.assert_close(gpu.state_dict()[key].cpu(), value, rtol=1e-4, atol=1e-6)


def _tol(precision: str) -> dict:
    # The quantizer computes in float32 under any autocast; z_q leaves in the input's dtype.
    return {"rtol": 1e-4, "atol": 1e-5} if precision == "fp32" else {"rtol": 1e-2, "atol": 1e-2}


@pytest.mark.parametrize("precision", sorted(AUTOCAST))
@pytest.mark.parametrize("name", NAMES)
def test_every_quantizer_on_cuda_equals_cpu(name, precision):
    _compare(name, {}, precision)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_inputs_as_an_autocast_encoder_gives_them(name, precision):
    _compare(name, {}, precision, input_dtype=AUTOCAST[precision])


@pytest.mark.parametrize("search_precision", ["tf32", "bf16"])
@pytest.mark.parametrize("name", EXPLICIT)
def test_certified_search_in_every_explicit_quantizer(name, search_precision):
    _compare(name, {"search_precision": search_precision}, "bf16")


@pytest.mark.parametrize("precision", sorted(AUTOCAST))
@pytest.mark.parametrize("estimator", sorted(list_estimators()))
@pytest.mark.parametrize("name", ["vanilla", "simvq", "group_vq"])
def test_every_estimator_on_cuda_equals_cpu(name, estimator, precision):
    extra = {"estimator": estimator, "estimator_params": ESTIMATOR_PARAMS.get(estimator, {})}
    _compare(name, extra, precision)
