"""ViT encoder/decoder from timm blocks (ViT-VQGAN; protocol.md section 6).

Encoder: non-overlapping `patch x patch` patches -> linear embedding -> learned position
embeddings -> `depth` timm `Block`s -> LayerNorm -> Linear(width, z_channels), reshaped to a
`(B, z_channels, H/patch, W/patch)` map. Decoder: the mirror, ending in Linear(width,
3 * patch^2) folded back into pixels. Defaults are ViT-VQGAN-small (patch 8, width 512,
depth 8, 8 heads, MLP 2048), the nearest public configuration (SPEC section 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn


def _blocks(width: int, depth: int, heads: int, mlp: int) -> nn.Sequential:
    return nn.Sequential(*[Block(width, heads, mlp_ratio=mlp / width) for _ in range(depth)])


class ViTEncoder(nn.Module):
    def __init__(
        self,
        resolution: int,
        patch: int,
        width: int,
        depth: int,
        heads: int,
        mlp: int,
        z_channels: int,
    ) -> None:
        super().__init__()
        self.grid = resolution // patch
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.position = nn.Parameter(torch.randn(1, self.grid**2, width) * 0.02)
        self.blocks = _blocks(width, depth, heads, mlp)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        tokens = self.out(self.norm(self.blocks(tokens)))
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, self.grid, self.grid)


class ViTDecoder(nn.Module):
    def __init__(
        self,
        resolution: int,
        patch: int,
        width: int,
        depth: int,
        heads: int,
        mlp: int,
        z_channels: int,
    ) -> None:
        super().__init__()
        self.patch, self.grid = patch, resolution // patch
        self.inp = nn.Linear(z_channels, width)
        self.position = nn.Parameter(torch.randn(1, self.grid**2, width) * 0.02)
        self.blocks = _blocks(width, depth, heads, mlp)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 3 * patch * patch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        tokens = self.inp(z.flatten(2).transpose(1, 2)) + self.position
        pixels = self.out(self.norm(self.blocks(tokens)))  # (B, grid^2, 3 p^2)
        size = self.grid * self.patch
        return F.fold(pixels.transpose(1, 2), (size, size), self.patch, stride=self.patch)
