import pytest
import torch
from vector_quantize_pytorch import LFQ as ReferenceLFQ

from vqbench import VQBenchError, create_quantizer, lfq_entropy


def brute_force_entropies(x: torch.Tensor, temperature: float):
    """Both entropy terms from the full softmax over all 2^d codes (float64)."""
    codes = lfq_entropy.code_bits(x.shape[1]).double() * 2 - 1
    p = (2 * x.double() @ codes.t() / temperature).softmax(-1)
    per_sample = -(p * p.log()).sum(-1).mean()
    mean = p.mean(0)
    return per_sample, -(mean * mean.log()).sum()


@pytest.mark.parametrize("temperature, scale", [(0.01, 0.01), (0.5, 1.0), (1.0, 3.0)])
def test_entropies_and_gradients_equal_brute_force_at_2_to_the_10(temperature, scale):
    x = (torch.randn(500, 10, dtype=torch.float64) * scale).requires_grad_()
    ref_sample, ref_codebook = brute_force_entropies(x, temperature)
    ref_grads = torch.autograd.grad(ref_sample - 2 * ref_codebook, x)[0]
    sample = lfq_entropy.per_sample_entropy(x, temperature)
    codebook = lfq_entropy.codebook_entropy(x, temperature)
    grads = torch.autograd.grad(sample - 2 * codebook, x)[0]
    torch.testing.assert_close(sample, ref_sample, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(codebook, ref_codebook, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-7, atol=1e-9)


def test_codebook_entropy_is_not_the_per_bit_approximation():
    # Correlated bits: the per-bit sum of entropies overestimates the codebook entropy.
    base = torch.randn(400, 1, dtype=torch.float64)
    x = base.repeat(1, 8) + 0.1 * torch.randn(400, 8, dtype=torch.float64)
    exact = lfq_entropy.codebook_entropy(x, 0.5)
    p_bit = torch.sigmoid(4 * x / 0.5).mean(0)
    per_bit = -(p_bit * p_bit.log() + (1 - p_bit) * (1 - p_bit).log()).sum()
    assert per_bit - exact > 1.0
    torch.testing.assert_close(exact, brute_force_entropies(x, 0.5)[1])


def test_loss_indices_and_gradient_equal_vector_quantize_pytorch():
    # Inputs small enough that every code probability stays above the reference's 1e-5 clamp.
    # The library's entropy is the exact one (a clamp, no eps inside the log).
    ours = create_quantizer("lfq", codebook_size=1024, dim=10, entropy_eps=0.0).train()
    reference = ReferenceLFQ(
        dim=10, codebook_size=1024, entropy_loss_weight=0.1, commitment_loss_weight=0.25
    ).train()
    z = (torch.randn(2, 10, 8, 8) * 5e-4).requires_grad_()
    z_ref = z.detach().clone().requires_grad_()
    out = ours(z)
    (ref_q, ref_indices, ref_loss), breakdown = reference(z_ref, return_loss_breakdown=True)
    torch.testing.assert_close(out.z_q, ref_q)
    assert torch.equal(out.indices, ref_indices)
    torch.testing.assert_close(out.stats["per_sample_entropy"], breakdown.per_sample_entropy)
    torch.testing.assert_close(out.stats["codebook_entropy"], breakdown.batch_entropy)
    torch.testing.assert_close(out.loss, ref_loss)
    out.loss.backward()
    ref_loss.backward()
    # float32 sums over 1,024 codes in the reference: agree to 0.1% of the largest gradient.
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=0, atol=1e-3 * z.grad.abs().max())


def test_full_size_codebook_distribution_sums_to_one_without_a_full_table():
    x = torch.randn(4096, 16)
    p = lfq_entropy.mean_code_distribution(x, 0.01)
    assert p.shape == (65536,)
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("size", [1000, 3, 1])
def test_codebook_size_must_be_a_power_of_two(size):
    with pytest.raises(
        VQBenchError, match=f"lfq.codebook_size={size} is invalid: must be a power of two"
    ):
        create_quantizer("lfq", codebook_size=size)
