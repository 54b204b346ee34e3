"""BSQ against a brute force over all codes and vector-quantize-pytorch's LFQ(spherical=True)."""

import math

import pytest
import torch
import torch.nn.functional as F
from vector_quantize_pytorch import LFQ as ReferenceLFQ

from vqbench import VQBenchError, create_quantizer, lfq_entropy


def all_codes(bits: int) -> torch.Tensor:
    """Every code of the implicit codebook, `(2^bits, bits)`, +-1/sqrt(bits), MSB first."""
    return (lfq_entropy.code_bits(bits).double() * 2 - 1) / math.sqrt(bits)


def brute_force(z: torch.Tensor, temperature: float):
    """Indices, per-sample and codebook entropy from the full softmax (float64)."""
    u = F.normalize(z, dim=1)
    codes = all_codes(z.shape[1])
    p = (2 * u @ codes.t() / temperature).softmax(-1)
    mean = p.mean(0)
    sample = -(p * p.log()).sum(-1).mean()
    return torch.cdist(u, codes).argmin(1), sample, -(mean * mean.log()).sum(), p


@pytest.mark.parametrize(
    "temperature, recipe, commitment_weight",
    [
        (0.01, "reference", 0.0),
        (0.2, "reference", 0.0),
        (1.0, "reference", 0.0),
        (1.0, "shared", 0.25),
    ],
)
def test_indices_entropies_and_gradients_equal_brute_force_at_2_to_the_8(
    temperature, recipe, commitment_weight
):
    """bsq-vit's configs all set `beta: 0.` (no commitment); `recipe: shared` adds 0.25."""
    q = create_quantizer("bsq", codebook_size=256, dim=8, temperature=temperature, recipe=recipe)
    z = torch.randn(300, 8, dtype=torch.float64, requires_grad=True)
    out = q.quantize_tokens(z)
    ref_indices, ref_sample, ref_codebook, _ = brute_force(z, temperature)
    assert torch.equal(out.indices, ref_indices)
    torch.testing.assert_close(out.stats["per_sample_entropy"], ref_sample)
    torch.testing.assert_close(out.stats["codebook_entropy"], ref_codebook)
    u = F.normalize(z, dim=1)
    commitment = (u - all_codes(8)[ref_indices]).square().sum(1).mean()
    expected = 0.1 * (ref_sample - ref_codebook) + commitment_weight * commitment
    torch.testing.assert_close(out.loss, expected)
    grad = torch.autograd.grad(out.loss, z)[0]
    ref_grad = torch.autograd.grad(expected, z)[0]
    torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-10)


def test_grouped_codebook_entropy_is_the_sum_of_group_marginals():
    z = torch.randn(200, 6, dtype=torch.float64)
    q = create_quantizer("bsq", codebook_size=64, dim=6, entropy_group_size=3, temperature=0.3)
    grouped = q.quantize_tokens(z).stats["codebook_entropy"]
    *_, p = brute_force(z, 0.3)
    mean = p.mean(0).reshape(8, 8)  # (high 3 bits, low 3 bits)
    marginals = [mean.sum(1), mean.sum(0)]
    expected = sum(-(m * m.log()).sum() for m in marginals)
    torch.testing.assert_close(grouped, expected)
    exact = create_quantizer("bsq", codebook_size=64, dim=6, temperature=0.3)
    assert grouped >= exact.quantize_tokens(z).stats["codebook_entropy"]  # an upper bound


def test_codes_lie_on_the_unit_sphere_and_decode_round_trips():
    q = create_quantizer("bsq", codebook_size=1024, dim=32).eval()
    out = q(torch.randn(2, 32, 4, 4))
    codes = q.indices_to_codes(out.indices.reshape(-1))
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(32))
    torch.testing.assert_close(q.decode_indices(out.indices), out.z_q)


@pytest.mark.parametrize("mode", ["unit", "scaled"])
def test_value_loss_and_gradient_equal_lfq_spherical(mode):
    """vector-quantize-pytorch's LFQ(spherical=True): entropy weight 0.1, no commitment,
    temperature 1 (inv_temperature 1), so every code probability stays above its 1e-5 clamp."""
    ours = create_quantizer(
        "bsq", codebook_size=1024, dim=10, commitment_weight=0.0, straight_through=mode
    ).train()
    reference = ReferenceLFQ(
        dim=10, codebook_size=1024, spherical=True, entropy_loss_weight=0.1
    ).train()
    z = torch.randn(2, 10, 6, 6, requires_grad=True)
    z_ref = z.detach().clone().requires_grad_()
    g = torch.randn(2, 10, 6, 6)
    out = ours(z)
    (ref_q, ref_indices, ref_loss), breakdown = reference(
        z_ref, inv_temperature=1.0, return_loss_breakdown=True
    )
    torch.testing.assert_close(out.z_q, ref_q)
    assert torch.equal(out.indices, ref_indices)
    torch.testing.assert_close(out.stats["per_sample_entropy"], breakdown.per_sample_entropy)
    torch.testing.assert_close(out.stats["codebook_entropy"], breakdown.batch_entropy)
    torch.testing.assert_close(out.loss, ref_loss)
    (out.z_q * g).sum().backward()
    (ref_q * g).sum().backward()
    factor = 1.0 if mode == "unit" else 1 / math.sqrt(10)  # the reference code scales by 1/sqrt(d)
    torch.testing.assert_close(z.grad, factor * z_ref.grad)
    z.grad = z_ref.grad = None
    ours(z).loss.backward()
    reference(z_ref, inv_temperature=1.0)[2].backward()
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-4, atol=1e-4 * z.grad.abs().max())


def test_bad_sizes_fail_with_one_line():
    with pytest.raises(VQBenchError, match="bsq.codebook_size=1000 is invalid: must be a power"):
        create_quantizer("bsq", codebook_size=1000)
    with pytest.raises(VQBenchError, match="bsq: entropy_group_size=5 must divide the 16 bits"):
        create_quantizer("bsq", codebook_size=65536, entropy_group_size=5)
