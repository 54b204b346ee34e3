"""IBQ: the blocked softmax against the dense one (float64), the quantizer against a dense
transcription of Open-MAGVIT2's IndexPropagationQuantize."""

import pytest
import torch
import torch.nn.functional as F

from vqbench import VQBenchError, create_quantizer
from vqbench.code_softmax import max_inner_product, soft_code_statistics


def dense_statistics(z, codes, temperature):
    logits = z @ codes.t()
    mean = logits.softmax(1) @ codes.detach()
    p = (logits / temperature).softmax(1)
    entropy = -(p * p.log()).sum()
    return logits.argmax(1), mean, entropy, p.sum(0)


@pytest.mark.parametrize("block_elements", [7, 64, 10_000])
@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_blocked_values_and_gradients_equal_the_dense_softmax(block_elements, temperature):
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(53, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    codes = torch.randn(37, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    g_mean = torch.randn(53, 6, dtype=torch.float64, generator=generator)
    g_h, g_p = torch.randn((), dtype=torch.float64), torch.randn(37, dtype=torch.float64)
    ours = soft_code_statistics(z, codes, temperature, block_elements=block_elements)
    indices, mean, entropy, prob_sum = dense_statistics(z, codes, temperature)
    assert torch.equal(ours.indices, indices)
    torch.testing.assert_close(ours.mean_code, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.entropy_sum, entropy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.prob_sum, prob_sum, rtol=1e-12, atol=1e-12)

    def objective(mean, entropy, prob_sum):
        return (mean * g_mean).sum() + g_h * entropy + (g_p * prob_sum).sum()

    grads = torch.autograd.grad(
        objective(ours.mean_code, ours.entropy_sum, ours.prob_sum), (z, codes)
    )
    dense = torch.autograd.grad(objective(mean, entropy, prob_sum), (z, codes))
    for got, want in zip(grads, dense):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_without_temperature_only_the_soft_mean_code_is_differentiated():
    z = torch.randn(20, 4, dtype=torch.float64, requires_grad=True)
    codes = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    ours = soft_code_statistics(z, codes, block_elements=5)
    assert ours.entropy_sum is None and ours.prob_sum is None
    g = torch.randn(20, 4, dtype=torch.float64)
    got = torch.autograd.grad((ours.mean_code * g).sum(), (z, codes))
    want = torch.autograd.grad(((z @ codes.t()).softmax(1) @ codes.detach() * g).sum(), (z, codes))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.equal(max_inner_product(z, codes, block_elements=5), (z @ codes.t()).argmax(1))


def test_no_tokens_x_codes_tensor_is_kept_for_backward():
    n, k = 64, 96
    saved = []

    def keep(t):
        saved.append(t.numel())
        return t

    z = torch.randn(n, 8, requires_grad=True)
    codes = torch.randn(k, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        out = soft_code_statistics(z, codes, 0.01, block_elements=256)
    (out.mean_code.sum() + out.entropy_sum + out.prob_sum.square().sum()).backward()
    assert saved and max(saved) < n * k / 4


def reference_ibq(z, codes, beta, temperature):
    """Open-MAGVIT2 IndexPropagationQuantize.forward, dense, for tokens (its entropy's eps=0)."""
    logits = z @ codes.t()
    soft = logits.softmax(1)
    index = soft.argmax(1)
    hard = F.one_hot(index, codes.shape[0]).to(z.dtype)
    one_hot = hard - soft.detach() + soft
    z_q, z_q2 = one_hot @ codes, hard @ codes
    quant = ((z_q - z) ** 2).mean() + ((z_q2.detach() - z) ** 2).mean()
    quant = quant + beta * ((z_q2 - z.detach()) ** 2).mean()
    probs = (logits / temperature).softmax(-1)
    avg = probs.mean(0)
    sample = -(probs * (logits / temperature).log_softmax(-1)).sum(-1).mean()
    batch = -(avg * avg.log()).sum()
    return z_q, index, quant, sample, batch


def test_quantizer_equals_the_reference_with_its_recipe():
    """beta 1.0 / codebook_weight 0.25 (SEED-Voken's split) is the default; entropy weight
    0.05, T 0.5."""
    q = create_quantizer("ibq", codebook_size=48, dim=5, temperature=0.5)
    assert (q.params.beta, q.params.codebook_weight) == (1.0, 0.25)
    q = q.double().train()
    z = (torch.randn(70, 5, dtype=torch.float64) * 0.3).requires_grad_()
    out = q.quantize_tokens(z)
    codes = q.embedding.detach().clone().requires_grad_()
    z_ref = z.detach().clone().requires_grad_()
    z_q, index, quant, sample, batch = reference_ibq(z_ref, codes, 0.25, 0.5)
    ref_loss = quant + 0.05 * (sample - batch)
    assert torch.equal(out.indices, index)
    torch.testing.assert_close(out.z_q, z_q, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-12, atol=1e-12)
    g = torch.randn(70, 5, dtype=torch.float64)
    ((out.z_q * g).sum() + out.loss).backward()
    ((z_q * g).sum() + ref_loss).backward()
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(q.embedding.grad, codes.grad, rtol=1e-9, atol=1e-12)
    assert (q.embedding.grad.abs().sum(1) > 0).all()  # every code is updated


def test_value_is_the_chosen_code_and_eval_agrees_with_training():
    q = create_quantizer("ibq", codebook_size=256, dim=8)
    z = torch.randn(2, 8, 5, 5, requires_grad=True)
    trained = q.train()(z)
    codes = q.decode_indices(trained.indices)
    assert torch.equal(trained.z_q, codes)
    with torch.no_grad():
        evaluated = q.eval()(z)
    assert torch.equal(evaluated.indices, trained.indices)
    assert torch.equal(evaluated.z_q, codes)


def test_estimators_are_refused_with_one_line():
    with pytest.raises(VQBenchError, match="ibq.estimator='rotation' is not supported"):
        create_quantizer("ibq", codebook_size=8, dim=4, estimator="rotation")


def test_the_shared_recipe_swaps_the_weights():
    q = create_quantizer("ibq", codebook_size=8, dim=4, recipe="shared")
    assert (q.params.beta, q.params.codebook_weight) == (0.25, 1.0)
    z = torch.randn(30, 4, requires_grad=True)
    out = q.quantize_tokens(z)
    t = out.stats
    expected = t["soft"] + 0.25 * t["commitment"] + 1.0 * t["codebook"]
    expected = expected + 0.05 * (t["per_sample_entropy"] - t["codebook_entropy"])
    torch.testing.assert_close(out.loss, expected)
