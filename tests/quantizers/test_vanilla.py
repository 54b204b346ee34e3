import torch
from vqbench_quantizers.vanilla import VanillaVQ

from vqbench import create_quantizer


def test_loss_and_gradients_equal_the_formula_by_hand():
    q = create_quantizer("vanilla", codebook_size=10, dim=3)
    z = torch.randn(1, 3, 4, 5, requires_grad=True)
    out = q(z)
    tokens = z.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    codes = q.embedding.detach()[out.indices.reshape(-1)]
    n = tokens.numel()
    # L = ||q - sg(z)||^2 + 0.25 ||sg(q) - z||^2, both as means over all elements.
    torch.testing.assert_close(out.loss, 1.25 * (codes - tokens).square().sum() / n)
    out.loss.backward()
    grad_z = z.grad.permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(grad_z, 0.25 * 2 * (tokens - codes) / n)
    expected = torch.zeros(10, 3).index_add_(0, out.indices.reshape(-1), 2 * (codes - tokens) / n)
    torch.testing.assert_close(q.embedding.grad, expected)


def test_straight_through_passes_the_decoder_gradient_unchanged():
    q = VanillaVQ(codebook_size=32, dim=4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 3)
    (q(z).z_q * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)


def test_codebook_init_is_taming_uniform():
    q = VanillaVQ(codebook_size=1000, dim=8)
    assert q.embedding.abs().max() <= 1 / 1000
