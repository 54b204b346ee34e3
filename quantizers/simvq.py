"""SimVQ (Zhu et al. 2024, arXiv 2411.02038): a frozen random basis through a trained linear map.

The codebook is `C = W Ĉ + b`: `Ĉ` (`codebook_size x dim`, entries N(0, 1/dim) as in the
official code) is frozen, and only the linear layer `(W, b)` is trained. Because every code
depends on W, each step moves the whole codebook, which keeps usage near 100%. Lookup, loss and
straight-through estimator are those of vanilla VQ (codebook 1.0, commitment 0.25).

`Ĉ` is a persistent buffer drawn from `core_seed`, so checkpoints and fresh builds agree.
"""

from __future__ import annotations

import pydantic
import torch
from torch import nn

from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    register_quantizer,
    seeded_normal,
)


class SimVQParams(ExplicitCodebookParams):
    bias: bool = True
    core_seed: pydantic.NonNegativeInt = 0


@register_quantizer("simvq")
class SimVQ(ExplicitCodebookQuantizer):
    """SimVQ: frozen random codes through one trained linear layer (the whole space moves)."""

    Params = SimVQParams
    small_config = {"codebook_size": 64, "dim": 16}

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        self.register_buffer(
            "core", seeded_normal((p.codebook_size, p.dim), p.core_seed, std=p.dim**-0.5)
        )
        self.projection = nn.Linear(p.dim, p.dim, bias=p.bias)

    def codebook(self) -> torch.Tensor:
        return self.projection(self.core)

    def independent_groups(self) -> int:
        return 1  # one shared linear map moves every code
