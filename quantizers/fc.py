"""VQGAN-FC: factorized, l2-normalised codes (ViT-VQGAN, Yu et al. 2021, Sec. 3.2).

Tokens are projected from `dim` to a small `lookup_dim` (8 by default, as in the SimVQ table's
VQGAN-FC row and LlamaGen), l2-normalised, and matched against l2-normalised codes, so the
lookup is by cosine similarity on the unit sphere of the low-dimensional space:

    u = normalize(W_in z),  e_k = normalize(c_k),  k* = argmin_k ||u - e_k||^2
    L = codebook_weight * ||e_k* - sg(u)||^2 + beta * ||sg(e_k*) - u||^2
    z_q = W_out (u + sg(e_k* - u))

The straight-through estimator acts on the normalised `u` (LlamaGen's choice), so the gradient
flows through the normalisation and the decoder always receives vectors on the sphere.
`restart_after: n` replaces codes unused for n optimiser steps by normalised tokens `u` of the
current batch (`vqbench.restart`; off by default).

The raw codes start as LlamaGen's (`codebook_init: llamagen`): U(-1/K, 1/K), then
l2-normalised, so they have norm 1 and the optimiser turns their directions at LlamaGen's
rate; `codebook_init: normal` is vqbench's earlier N(0, 1) (norm about sqrt(lookup_dim)).
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
    QuantizerOutput,
    register_quantizer,
)
from vqbench.restart import RestartParams, build_restart


class FCParams(RestartParams, ExplicitCodebookParams):
    lookup_dim: pydantic.PositiveInt = 8
    codebook_init: Literal["llamagen", "normal"] = "llamagen"

    def lookup_bytes(self) -> int:
        return 2 * 4 * self.codebook_size * self.lookup_dim


@register_quantizer("fc")
class FactorizedVQ(ExplicitCodebookQuantizer):
    """VQGAN-FC: project to a low dimension, l2-normalise codes and tokens (cosine lookup)."""

    Params = FCParams
    small_config = {"codebook_size": 64, "dim": 16, "lookup_dim": 4}

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        self.project_in = nn.Linear(p.dim, p.lookup_dim)
        self.project_out = nn.Linear(p.lookup_dim, p.dim)
        self.embedding = nn.Parameter(self.initial_codes())
        self.restart = build_restart(p, p.codebook_size)

    def initial_codes(self) -> torch.Tensor:
        """LlamaGen's `uniform_(-1/K, 1/K)` then `F.normalize` (or N(0, 1) with `normal`)."""
        k, d = self.params.codebook_size, self.params.lookup_dim
        if self.params.codebook_init == "normal":
            return torch.randn(k, d)
        return F.normalize(torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k), dim=1)

    def codebook(self) -> torch.Tensor:
        """Unit-norm codes in the lookup space, `(codebook_size, lookup_dim)`."""
        return F.normalize(self.embedding, dim=1)

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        u = F.normalize(self.project_in(z), dim=1)
        out = self.lookup(u, self.codebook())
        if self.training and self.restart is not None:
            self.restart.record(out.indices, u)
        out.z_q = self.project_out(out.z_q)
        return out

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.restart is not None:
            self.restart.restart_codes(self.embedding)  # unit vectors (tokens in lookup space)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.embedding(indices, self.codebook()))
