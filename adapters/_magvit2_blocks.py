"""The convolutional encoder and decoder of Open-MAGVIT2 and SimVQ, written for vqbench.

Both follow MAGVIT-v2's "improved" VQGAN (Yu et al. 2024, Fig. 3 and Appendix A): residual
blocks of two bias-free 3x3 convolutions without attention, strided 3x3 convolutions down,
depth-to-space up, and in Open-MAGVIT2's decoder an adaptive group norm before each level
whose scale and shift are linear in the per-channel standard deviation and mean of the
quantized latent. Module and parameter names are the official ones (TencentARC/SEED-Voken
`src/Open_MAGVIT2/modules/diffusionmodules/improved_model.py`, youngsheen/SimVQ
`taming/modules/diffusionmodules/improved_model.py`), so a released state dict loads as it is;
SimVQ's decoder is the same without the adaptive norms (`adaptive=False`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int, *, affine: bool = True) -> nn.GroupNorm:
    """32 groups, eps 1e-6, as everywhere in these models."""
    return nn.GroupNorm(32, channels, eps=1e-6, affine=affine)


class ResBlock(nn.Module):
    """norm, swish, conv, norm, swish, conv (3x3, no bias), plus the input (1x1 projection,
    no bias, where the width changes)."""

    def __init__(self, in_filters: int, out_filters: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_filters)
        self.norm2 = group_norm(out_filters)
        self.conv1 = nn.Conv2d(in_filters, out_filters, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_filters, out_filters, 3, padding=1, bias=False)
        if in_filters != out_filters:
            self.nin_shortcut = nn.Conv2d(in_filters, out_filters, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        shortcut = getattr(self, "nin_shortcut", None)
        return h + (x if shortcut is None else shortcut(x))


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C / block^2, H * block, W * block), the channels read as
    (row offset, column offset, channel) ("DCR" order, not `pixel_shuffle`'s CRD)."""
    b, c, h, w = x.shape
    x = x.view(b, block, block, c // block**2, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c // block**2, h * block, w * block)


class Upsampler(nn.Module):
    """A 3x3 convolution to four times the channels, then depth-to-space by 2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv1(x), 2)


class AdaptiveGroupNorm(nn.Module):
    """Group norm without affine terms, then `gamma(std(z)) * x + beta(mean(z))` with the
    per-channel statistics of the quantized latent `z` over its positions (the standard
    deviation is the unbiased one plus eps under the root, as the official code computes it)."""

    def __init__(self, z_channels: int, in_filters: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gn = group_norm(in_filters, affine=False)
        self.gamma = nn.Linear(z_channels, in_filters)
        self.beta = nn.Linear(z_channels, in_filters)
        self.eps = eps

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        flat = style.flatten(2)
        scale = self.gamma((flat.var(dim=-1) + self.eps).sqrt()).view(b, c, 1, 1)
        bias = self.beta(flat.mean(dim=-1)).view(b, c, 1, 1)
        return scale * self.gn(x) + bias


def _level(blocks: Sequence[nn.Module], resample: nn.Module | None, name: str) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    if resample is not None:
        setattr(level, name, resample)
    return level


class Encoder(nn.Module):
    """Images (B, 3, H, W) -> latents (B, z_channels, H / 2^(L-1), W / 2^(L-1)), L levels."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(block_in, ch * mult))
                block_in = ch * mult
            last = i == len(ch_mult) - 1
            down = None if last else nn.Conv2d(block_in, block_in, 3, stride=2, padding=1)
            self.down.append(_level(blocks, down, "downsample"))
        self.mid_block = nn.ModuleList(ResBlock(block_in, block_in) for _ in range(num_res_blocks))
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                x = block(x)
            if hasattr(level, "downsample"):
                x = level.downsample(x)
        for block in self.mid_block:
            x = block(x)
        return self.conv_out(swish(self.norm_out(x)))


class Decoder(nn.Module):
    """Quantized latents -> images; `adaptive` adds Open-MAGVIT2's adaptive group norm at the
    start of each level (SimVQ's decoder has none)."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        out_ch: int = 3,
        adaptive: bool = True,
    ) -> None:
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid_block = nn.ModuleList(ResBlock(block_in, block_in) for _ in range(num_res_blocks))
        self.up = nn.ModuleList()
        norms = []
        for i in reversed(range(len(ch_mult))):
            norms.insert(0, AdaptiveGroupNorm(z_channels, block_in))
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(block_in, ch * ch_mult[i]))
                block_in = ch * ch_mult[i]
            self.up.insert(0, _level(blocks, Upsampler(block_in) if i > 0 else None, "upsample"))
        if adaptive:
            self.adaptive = nn.ModuleList(norms)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        style = z
        h = self.conv_in(z)
        for block in self.mid_block:
            h = block(h)
        adaptive = getattr(self, "adaptive", None)
        for i in reversed(range(len(self.up))):
            if adaptive is not None:
                h = adaptive[i](h, style)
            for block in self.up[i].block:
                h = block(h)
            if i > 0:
                h = self.up[i].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
