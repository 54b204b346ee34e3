"""Autoencoder losses of the protocol (SPEC section 1, protocol.md section 2.4).

Generator: `L1 + perceptual_weight * LPIPS(VGG) + gan_weight * nonsat(D(x_rec)) +
quantizer_weight * quantizer_loss`, with the GAN term at a fixed weight 0.1 from step 0 (SimVQ);
taming's adaptive weight `||grad nll|| / (||grad g|| + 1e-4)` on the decoder's last layer and
`disc_start` are options. Discriminator: 3-layer PatchGAN (ndf 64, BatchNorm, N(0, 0.02) init)
with the hinge loss. By default the generator's GAN gradient does not reach the discriminator;
`leak_generator_grad` reproduces SimVQ's trainer, whose discriminator step also receives it
(the trainer then zeroes the discriminator's gradients only after its step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """taming's NLayerDiscriminator: 4x4 convs, strides 2, 2, 2, 1, 1, BatchNorm, LeakyReLU(0.2)."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """`0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x_rec)))`."""
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def non_saturating_generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """`softplus(-l)` of each image's mean patch logit `l`, averaged (BCE against 'real')."""
    return F.softplus(-fake.flatten(1).mean(1)).mean()


class AutoencoderLoss(nn.Module):
    """The generator and discriminator objectives, with the terms they are made of."""

    def __init__(
        self,
        *,
        perceptual: nn.Module | None,
        discriminator: nn.Module | None,
        perceptual_weight: float = 1.0,
        gan_weight: float = 0.1,
        adaptive_gan_weight: bool = False,
        disc_start: int = 0,
        quantizer_weight: float = 1.0,
        leak_generator_grad: bool = False,
    ) -> None:
        super().__init__()
        self.perceptual = perceptual
        self.discriminator = discriminator
        self.perceptual_weight = perceptual_weight if perceptual is not None else 0.0
        self.gan_weight = gan_weight if discriminator is not None else 0.0
        self.adaptive_gan_weight = adaptive_gan_weight
        self.disc_start = disc_start
        self.quantizer_weight = quantizer_weight
        self.leak_generator_grad = leak_generator_grad

    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.disc_start

    def adaptive_weight(
        self, nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor
    ) -> torch.Tensor:
        """taming: `||grad nll|| / (||grad g|| + 1e-4)` at the decoder's last layer, <= 1e4."""
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4).detach()

    def generator_loss(
        self,
        x: torch.Tensor,
        x_rec: torch.Tensor,
        quantizer_loss: torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, x_rec = x.float(), x_rec.float()
        terms = {"l1": (x - x_rec).abs().mean()}
        nll = terms["l1"]
        if self.perceptual_weight > 0:
            terms["lpips"] = self.perceptual(x_rec, x).mean()
            nll = nll + self.perceptual_weight * terms["lpips"]
        loss = nll + self.quantizer_weight * quantizer_loss
        terms["quantizer"] = quantizer_loss
        if self.gan_active(step) and self.gan_weight > 0:
            if self.leak_generator_grad:  # SimVQ: the gradient accumulates in D's parameters
                g_loss = non_saturating_generator_loss(self.discriminator(x_rec))
            else:
                self.discriminator.requires_grad_(False)
                g_loss = non_saturating_generator_loss(self.discriminator(x_rec))
                self.discriminator.requires_grad_(True)
            weight = torch.full((), self.gan_weight, device=x.device)  # no host copy
            if self.adaptive_gan_weight and last_layer is not None:
                weight = weight * self.adaptive_weight(nll, g_loss, last_layer)
            terms["gan"] = g_loss
            terms["gan_weight"] = weight
            loss = loss + weight * g_loss
        terms["total"] = loss
        return loss, {k: v.detach() for k, v in terms.items()}

    def discriminator_loss(
        self,
        x: torch.Tensor,
        x_rec: torch.Tensor,
        step: int,
        discriminator: nn.Module | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss on real images and detached reconstructions; `discriminator` overrides
        the module (the trainer passes its DistributedDataParallel wrapper)."""
        disc = discriminator if discriminator is not None else self.discriminator
        real = disc(x.float())
        fake = disc(x_rec.detach().float())
        loss = hinge_discriminator_loss(real, fake)
        return loss, {
            "disc": loss.detach(),
            "logits_real": real.mean().detach(),
            "logits_fake": fake.mean().detach(),
        }
