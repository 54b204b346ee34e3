"""TransVQ (arXiv 2602.18896; official code CAIR-LAB-WFUSM/NS-VQ-TransVQ,
`NS_Trans_VQ_ImageNet/ldm/modules/transVQ.py`: `SimVQ` with `codebook_transform:
CodebookTransformer`, as `configs/vqvae/vq-f4_transvq.yaml` builds it).

A generalised SimVQ: the live codebook is a transformer applied to a frozen random one,
`C = T(C^)`, with `C^` (`codebook_size x frozen_dim`, entries N(0, 1/frozen_dim)) frozen and
only `T` trained. `T` reads the codebook as one sequence of `K` tokens:

    x = C^ W_in + P                                  (learned position per code, N(0, 1))
    x = x + LinAttn(LN(x));  x = x + FFN(LN(x))      (`depth` pre-LN blocks)
    C = LN(x) W_out

with linear attention `phi(Q) (phi(K)^T V) / (phi(Q) . sum_j phi(K_j) + 1e-6)`,
`phi = elu + 1` (no bias on Q, K, V, out), and a GELU FFN of width `mlp_ratio * model_dim`,
so every code depends on every other. Defaults are the config's: depth 1, width 256, 1
head, `mlp_ratio` 2, no dropout. Lookup, loss and estimator are SimVQ's as the reference
calls it (`rotation_trick: false`): codebook 1.0, commitment 0.25, straight through.

`C^` is a persistent buffer drawn from `core_seed` (the reference uses the global RNG).
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    register_quantizer,
    seeded_normal,
)


class TransVQParams(ExplicitCodebookParams):
    codebook_size: pydantic.PositiveInt = 8192  # the paper's ImageNet configs
    frozen_dim: pydantic.PositiveInt | None = None
    depth: pydantic.PositiveInt = 1
    model_dim: pydantic.PositiveInt = 256
    heads: pydantic.PositiveInt = 1
    mlp_ratio: pydantic.PositiveFloat = 2.0
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    positions: Literal["learned", "sinusoidal"] = "learned"
    core_seed: pydantic.NonNegativeInt = 0

    @pydantic.model_validator(mode="after")
    def _heads_divide_width(self) -> TransVQParams:
        if self.model_dim % self.heads:
            raise ValueError(
                f"model_dim={self.model_dim} is not a multiple of heads={self.heads}; "
                f"choose heads that divide model_dim"
            )
        return self

    def lookup_bytes(self) -> int:
        # The frozen and live codebooks plus the transformer's activations over K codes.
        hidden = self.model_dim * (4 + self.depth * (8 + 2 * self.mlp_ratio))
        return int(4 * self.codebook_size * (2 * self.dim + (self.frozen_dim or self.dim) + hidden))


class LinearAttention(nn.Module):
    """`phi(Q) (phi(K)^T V) / (phi(Q) . sum_j phi(K_j) + eps)`, `phi = elu + 1`, per head."""

    def __init__(self, width: int, heads: int, dropout: float, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads, self.eps = heads, eps
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(width, width, bias=False)
        self.to_v = nn.Linear(width, width, bias=False)
        self.to_out = nn.Linear(width, width, bias=False)
        self.drop = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        return x.view(b, n, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = F.elu(self.split(self.to_q(x))) + 1.0
        k = F.elu(self.split(self.to_k(x))) + 1.0
        v = self.split(self.to_v(x))
        numerator = q @ (k.transpose(-2, -1) @ v)
        denominator = (q * k.sum(2, keepdim=True)).sum(-1, keepdim=True)
        out = (numerator / (denominator + self.eps)).transpose(1, 2).flatten(2)
        return self.drop(self.to_out(out))


class FeedForward(nn.Module):
    def __init__(self, width: int, ratio: float, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, int(width * ratio))
        self.fc2 = nn.Linear(int(width * ratio), width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN transformer block with linear attention."""

    def __init__(self, width: int, heads: int, ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = LinearAttention(width, heads, dropout)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = FeedForward(width, ratio, dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.norm1(x)))
        return x + self.drop2(self.ffn(self.norm2(x)))


def sinusoidal_positions(n: int, width: int) -> torch.Tensor:
    """`sin(i / 10000^(2 floor(j/2) / width))` on even, `cos` on odd channels `j`."""
    pos = torch.arange(n).float().unsqueeze(1)
    j = torch.arange(width).float().unsqueeze(0)
    angles = pos / 10000 ** (2 * (j // 2) / width)
    return torch.where(j.long() % 2 == 0, torch.sin(angles), torch.cos(angles))


class CodebookTransformer(nn.Module):
    """The map `T` from the frozen `(K, frozen_dim)` codebook to the live `(K, dim)` one."""

    def __init__(self, p: TransVQParams) -> None:
        super().__init__()
        width = p.model_dim
        self.in_proj = nn.Linear(p.frozen_dim or p.dim, width, bias=False)
        self.pos_emb = nn.Embedding(p.codebook_size, width) if p.positions == "learned" else None
        if self.pos_emb is None:
            positions = sinusoidal_positions(p.codebook_size, width)
            self.register_buffer("sinpos", positions, persistent=False)
        self.pos_drop = nn.Dropout(p.dropout)
        self.blocks = nn.ModuleList(
            Block(width, p.heads, p.mlp_ratio, p.dropout) for _ in range(p.depth)
        )
        self.norm = nn.LayerNorm(width)
        self.out_proj = nn.Linear(width, p.dim, bias=False)

    def forward(self, frozen: torch.Tensor) -> torch.Tensor:
        positions = self.pos_emb.weight if self.pos_emb is not None else self.sinpos
        x = self.pos_drop((self.in_proj(frozen) + positions).unsqueeze(0))
        for block in self.blocks:
            x = block(x)
        return self.out_proj(self.norm(x)).squeeze(0)


@register_quantizer("transvq")
class TransVQ(ExplicitCodebookQuantizer):
    """TransVQ: a frozen random codebook through a trained linear-attention transformer."""

    Params = TransVQParams
    small_config = {"codebook_size": 64, "dim": 16, "model_dim": 32, "heads": 2}

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        frozen_dim = p.frozen_dim or p.dim
        core = seeded_normal((p.codebook_size, frozen_dim), p.core_seed, std=frozen_dim**-0.5)
        self.register_buffer("core", core)
        self.transform = CodebookTransformer(p)

    def codebook(self) -> torch.Tensor:
        return self.transform(self.core)

    def independent_groups(self) -> int:
        return 1  # one shared transformer moves every code
