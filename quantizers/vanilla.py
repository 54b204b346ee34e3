"""Vanilla VQ (VQ-VAE, van den Oord et al. 2017; VQGAN's VectorQuantizer2 with legacy=False).

A trainable codebook `C` of `codebook_size x dim`, initialised U(-1/K, 1/K) as in taming.
Each token takes its nearest code, `q = C[argmin_k ||z - c_k||^2]`, and the loss is

    L = codebook_weight * ||q - sg(z)||^2 + beta * ||sg(q) - z||^2     (beta = 0.25)

with the straight-through estimator `z + sg(q - z)` carrying the decoder's gradient to `z`.
`restart_after: n` replaces codes unused for n optimiser steps by tokens of the current batch
(`vqbench.restart`; off by default, as in taming). An estimator whose method brings its own
codebook initialisation or upkeep (DiVeQ's U(0, 1/K) and code replacement) is asked for them
(`Estimator.initial_codebook`, `Estimator.code_replacement`).
"""

from __future__ import annotations

import torch
from torch import nn

from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    QuantizerOutput,
    register_quantizer,
)
from vqbench.restart import RestartParams, build_restart


class VanillaParams(RestartParams, ExplicitCodebookParams):
    pass


@register_quantizer("vanilla")
class VanillaVQ(ExplicitCodebookQuantizer):
    """Vanilla VQ-VAE/VQGAN quantizer: a trainable codebook and the straight-through estimator."""

    Params = VanillaParams
    small_config = {"codebook_size": 64, "dim": 16}

    def __init__(self, **params) -> None:
        super().__init__(**params)
        k = self.codebook_size
        init = self.estimator.initial_codebook(k, self.dim)
        if init is None:
            init = torch.empty(k, self.dim).uniform_(-1.0 / k, 1.0 / k)
        self.embedding = nn.Parameter(init)
        self.restart = build_restart(self.params, k)
        self.replacement = self.estimator.code_replacement(k)

    def codebook(self) -> torch.Tensor:
        return self.embedding

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        out = self.lookup(z, self.embedding)
        if self.training and self.restart is not None:
            self.restart.record(out.indices, z)
        if self.training and self.replacement is not None:
            self.replacement.record(out.indices)
        return out

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.restart is not None:
            self.restart.restart_codes(self.embedding)
        if self.replacement is not None:
            self.replacement.replace_codes(self.embedding)
