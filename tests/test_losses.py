import torch
import torch.nn.functional as F

from vqbench.losses import (
    AutoencoderLoss,
    PatchDiscriminator,
    hinge_discriminator_loss,
    non_saturating_generator_loss,
)


def test_hinge_and_non_saturating_losses_by_hand():
    real = torch.tensor([[[[2.0, 0.5]]], [[[-1.0, 0.0]]]])
    fake = torch.tensor([[[[-3.0, 0.5]]], [[[1.0, -0.5]]]])
    # relu(1 - real) = [0, .5, 2, 1] -> 0.875; relu(1 + fake) = [0, 1.5, 2, .5] -> 1.0
    torch.testing.assert_close(hinge_discriminator_loss(real, fake), torch.tensor(0.9375))
    # per-image mean logits: -1.25 and 0.25; softplus(-l) averaged
    expected = (F.softplus(torch.tensor(1.25)) + F.softplus(torch.tensor(-0.25))) / 2
    torch.testing.assert_close(non_saturating_generator_loss(fake), expected)


class ConstantPerceptual(torch.nn.Module):
    def forward(self, a, b):
        return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True) * 0 + 0.5


def test_generator_loss_is_the_weighted_sum_and_leaves_the_discriminator_alone():
    disc = PatchDiscriminator(ndf=8)
    loss_fn = AutoencoderLoss(perceptual=ConstantPerceptual(), discriminator=disc)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_rec = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    q_loss = torch.tensor(0.3)
    total, terms = loss_fn.generator_loss(x, x_rec, q_loss, step=0)
    gan = non_saturating_generator_loss(disc(x_rec))
    expected = (x - x_rec).abs().mean() + 1.0 * 0.5 + 1.0 * 0.3 + 0.1 * gan
    torch.testing.assert_close(total, expected)
    assert set(terms) >= {"l1", "lpips", "quantizer", "gan", "total"}
    total.backward()
    assert x_rec.grad is not None
    assert all(p.grad is None for p in disc.parameters())  # no leak into the D step
    d_loss, _ = loss_fn.discriminator_loss(x, x_rec, step=0)
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters() if p.requires_grad)


def test_disc_start_and_adaptive_weight():
    disc = PatchDiscriminator(ndf=8)
    last = torch.nn.Parameter(torch.randn(3, 3, 1, 1))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    x_rec = F.conv2d(torch.rand(1, 3, 32, 32), last)
    loss_fn = AutoencoderLoss(
        perceptual=None, discriminator=disc, disc_start=10, adaptive_gan_weight=True
    )
    _, terms = loss_fn.generator_loss(x, x_rec, torch.tensor(0.0), step=5)
    assert "gan" not in terms
    _, terms = loss_fn.generator_loss(x, x_rec, torch.tensor(0.0), step=10, last_layer=last)
    nll_grad = torch.autograd.grad((x - x_rec).abs().mean(), last, retain_graph=True)[0]
    g_grad = torch.autograd.grad(
        non_saturating_generator_loss(disc(x_rec)), last, retain_graph=True
    )[0]
    expected = 0.1 * nll_grad.norm() / (g_grad.norm() + 1e-4)
    torch.testing.assert_close(terms["gan_weight"], expected)
