"""The convolutional encoder/decoder of SimVQ (Open-MAGVIT2 style), protocol.md section 2.2.

ResBlock: GroupNorm(32) -> swish -> conv3x3 (no bias), twice, plus a (1x1, no bias) shortcut
when channels change. Encoder: conv_in, one level per `ch_mult` entry with `num_res_blocks`
blocks, a stride-2 conv after every level but the last, two middle blocks, then
GroupNorm -> swish -> 1x1 conv to `z_channels`. Decoder: the mirror, upsampling by a 3x3 conv
to 4C channels and depth-to-space. No attention unless `attention=True` (a taming-style
self-attention block in the middle, at the lowest resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = norm(in_channels), norm(out_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """taming's single-head self-attention over the spatial positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


def _middle(channels: int, attention: bool) -> nn.Sequential:
    blocks = [ResBlock(channels, channels)]
    if attention:
        blocks.append(AttentionBlock(channels))
    blocks.append(ResBlock(channels, channels))
    return nn.Sequential(*blocks)


class Upsample(nn.Module):
    """3x3 conv to 4C channels, then depth-to-space x2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class ConvEncoder(nn.Module):
    def __init__(
        self,
        ch: int,
        ch_mult: list[int],
        num_res_blocks: int,
        z_channels: int,
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        channels = ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(channels, ch * mult))
                channels = ch * mult
            if level < len(ch_mult) - 1:
                layers.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        self.down = nn.Sequential(*layers)
        self.mid = _middle(channels, attention)
        self.norm_out = norm(channels)
        self.conv_out = nn.Conv2d(channels, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class ConvDecoder(nn.Module):
    def __init__(
        self,
        ch: int,
        ch_mult: list[int],
        num_res_blocks: int,
        z_channels: int,
        attention: bool = False,
    ) -> None:
        super().__init__()
        channels = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, channels, 3, padding=1)
        self.mid = _middle(channels, attention)
        layers: list[nn.Module] = []
        for level in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(channels, ch * ch_mult[level]))
                channels = ch * ch_mult[level]
            if level > 0:
                layers.append(Upsample(channels))
        self.up = nn.Sequential(*layers)
        self.norm_out = norm(channels)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))
