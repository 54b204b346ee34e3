"""VQ-EMA (VQ-VAE appendix; Razavi et al. 2019): codes are moving averages of their tokens.

The codebook is a buffer, never touched by the optimiser. At each optimiser step, with `n_k`
the number of tokens of the whole global batch (every micro-batch and process) assigned to
code k and `s_k` their sum,

    N_k <- decay * N_k + (1 - decay) * n_k
    m_k <- decay * m_k + (1 - decay) * s_k
    Ñ_k = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j        (Laplace smoothing)
    c_k = m_k / Ñ_k

decay 0.99, eps 1e-5; the loss is the commitment term `beta * ||sg(q) - z||^2` only. Counts and
sums come from `index_add_` (no N x K one-hot), are accumulated over the micro-batches of a
step and summed across processes, and the update is applied in `after_optimizer_step`: so the
EMA time scale is one optimiser step whatever the gradient accumulation or number of GPUs,
and every rank keeps the same codebook.

Choices (the references differ): the codebook starts N(0, 1) (taming's EMA quantizer).
`initial_cluster_size` is 1 by default with `m_k = c_k` (vector-quantize-pytorch), so a code
that is never chosen keeps its initial value; 0 is taming's and VQGAN-LC's initialisation,
under which a never-chosen code is divided by ~eps and moves far away. Dead-code restart
(`vqbench.restart`, shared with the other free codebooks) is off by default, as in the paper's
VQGAN-EMA row: codes whose `N_k` falls below `dead_code_threshold` (vector-quantize-pytorch's
rule) or that went unused for `restart_after` optimiser steps take random tokens of the
current batch, with `N_k` reset to the threshold (1 when only `restart_after` is set) and
`m_k = N_k c_k`.
"""

from __future__ import annotations

import pydantic
import torch

from vqbench.distributed import all_reduce_sum
from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    QuantizerOutput,
    register_quantizer,
)
from vqbench.restart import RestartParams, build_restart


class EMAParams(RestartParams, ExplicitCodebookParams):
    codebook_weight: float = pydantic.Field(
        0.0, ge=0.0, le=0.0, description="EMA codebooks take no gradient"
    )
    decay: float = pydantic.Field(0.99, gt=0.0, lt=1.0)
    eps: pydantic.NonNegativeFloat = 1e-5
    dead_code_threshold: pydantic.NonNegativeFloat = 0.0
    initial_cluster_size: pydantic.NonNegativeFloat = 1.0


@register_quantizer("ema")
class EMAVQ(ExplicitCodebookQuantizer):
    """VQ-VAE with an exponential-moving-average codebook (decay 0.99, Laplace smoothing)."""

    Params = EMAParams
    small_config = {"codebook_size": 64, "dim": 16}

    def __init__(self, **params) -> None:
        super().__init__(**params)
        codes = torch.randn(self.codebook_size, self.dim)
        self.register_buffer("embedding", codes)
        initial = self.params.initial_cluster_size
        self.register_buffer("cluster_size", torch.full((self.codebook_size,), initial))
        self.register_buffer("embed_sum", codes.clone())
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        always = self.params.dead_code_threshold > 0
        self.restart = build_restart(self.params, self.codebook_size, always=always)

    def codebook(self) -> torch.Tensor:
        return self.embedding

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        out = self.lookup(z, self.embedding)
        if self.training:
            self.accumulate(z.detach(), out.indices)
        return out

    @torch.no_grad()
    def accumulate(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Add one micro-batch's counts and sums to the step's (index_add_: no host sync)."""
        if self._pending is None:
            self._pending = (torch.zeros_like(self.cluster_size), torch.zeros_like(self.embed_sum))
        counts, sums = self._pending
        counts.index_add_(0, indices, torch.ones_like(indices, dtype=counts.dtype))
        sums.index_add_(0, indices, z.float())
        if self.restart is not None:
            self.restart.record(indices, z)

    def after_optimizer_step(self) -> None:
        if self._pending is not None:
            counts, sums = self._pending
            self._pending = None
            self.update_codebook(counts, sums)
        if self.restart is not None:
            self.restart_dead_codes()

    @torch.no_grad()
    def update_codebook(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """One EMA step of the global batch's counts and sums, then the Laplace-smoothed
        codebook."""
        all_reduce_sum(counts, sums)
        decay, eps = self.params.decay, self.params.eps
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + self.codebook_size * eps) * total
        self.embedding.copy_(self.embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def restart_dead_codes(self) -> None:
        """Codes below the count threshold or idle too long take tokens of the batch; every
        process draws the same (`vqbench.restart`)."""
        threshold = self.params.dead_code_threshold
        below = self.cluster_size < threshold if threshold > 0 else None
        found = self.restart.after_step(also_dead=below)
        if found is None:
            return
        dead, tokens = found
        reset = threshold if threshold > 0 else 1.0
        self.embedding[dead] = tokens.float()
        self.cluster_size[dead] = reset
        self.embed_sum[dead] = tokens.float() * reset
