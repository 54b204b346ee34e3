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
(codes whose `N_k` falls below `dead_code_threshold` take random tokens of the current batch)
is off by default, as in the paper's VQGAN-EMA row.
"""

from __future__ import annotations

import pydantic
import torch

from vqbench.distributed import all_reduce_sum, broadcast
from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    QuantizerOutput,
    register_quantizer,
)


class EMAParams(ExplicitCodebookParams):
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

    def __init__(self, **params) -> None:
        super().__init__(**params)
        codes = torch.randn(self.codebook_size, self.dim)
        self.register_buffer("embedding", codes)
        initial = self.params.initial_cluster_size
        self.register_buffer("cluster_size", torch.full((self.codebook_size,), initial))
        self.register_buffer("embed_sum", codes.clone())
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_tokens: torch.Tensor | None = None

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
        self._last_tokens = z

    def after_optimizer_step(self) -> None:
        if self._pending is not None:
            counts, sums = self._pending
            self._pending = None
            self.update_codebook(counts, sums, self._last_tokens)

    @torch.no_grad()
    def update_codebook(self, counts: torch.Tensor, sums: torch.Tensor, z: torch.Tensor) -> None:
        """One EMA step of the global batch's counts and sums, then the Laplace-smoothed
        codebook; `z` (this process's last tokens) feeds the dead-code restart."""
        all_reduce_sum(counts, sums)
        decay, eps = self.params.decay, self.params.eps
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + self.codebook_size * eps) * total
        self.embedding.copy_(self.embed_sum / smoothed.unsqueeze(1))
        if self.params.dead_code_threshold > 0:
            self.restart_dead_codes(z)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> None:
        """Replace codes whose EMA count is below the threshold by random tokens of the batch.

        Rank 0 draws the tokens and broadcasts them so every process keeps the same codebook.
        """
        dead = self.cluster_size < self.params.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0 or z.shape[0] == 0:
            return
        pick = torch.randint(0, z.shape[0], (n_dead,), device=z.device)
        samples = z[pick].float()
        broadcast(samples, src=0)
        threshold = self.params.dead_code_threshold
        self.embedding[dead] = samples
        self.cluster_size[dead] = threshold
        self.embed_sum[dead] = samples * threshold
