"""VQ-EMA (VQ-VAE appendix; Razavi et al. 2019): codes are moving averages of their tokens.

The codebook is a buffer, never touched by the optimiser. At each training step, with `n_k`
the number of tokens assigned to code k and `s_k` their sum,

    N_k <- decay * N_k + (1 - decay) * n_k
    m_k <- decay * m_k + (1 - decay) * s_k
    Ñ_k = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j        (Laplace smoothing)
    c_k = m_k / Ñ_k

decay 0.99, eps 1e-5; the loss is the commitment term `beta * ||sg(q) - z||^2` only. Counts and
sums come from `bincount` / `index_add_` (no N x K one-hot) and are summed across processes when
`torch.distributed` is initialised, so every rank keeps the same codebook.

Choices (the references differ): the codebook starts N(0, 1) (taming's EMA quantizer) and
`N_k` starts at 1 with `m_k = c_k` (vector-quantize-pytorch), so a code that is never chosen
keeps its initial value; taming's zero-initialised `N_k` would instead blow unused codes up by
1/eps. Dead-code restart (codes whose `N_k` falls below `dead_code_threshold` take random
tokens of the current batch) is off by default, as in the paper's VQGAN-EMA row.
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


@register_quantizer("ema")
class EMAVQ(ExplicitCodebookQuantizer):
    """VQ-VAE with an exponential-moving-average codebook (decay 0.99, Laplace smoothing)."""

    Params = EMAParams

    def __init__(self, **params) -> None:
        super().__init__(**params)
        codes = torch.randn(self.codebook_size, self.dim)
        self.register_buffer("embedding", codes)
        self.register_buffer("cluster_size", torch.ones(self.codebook_size))
        self.register_buffer("embed_sum", codes.clone())

    def codebook(self) -> torch.Tensor:
        return self.embedding

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        out = self.lookup(z, self.embedding)
        if self.training:
            self.update_codebook(z.detach(), out.indices)
        return out

    @torch.no_grad()
    def update_codebook(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step of counts and sums, then the Laplace-smoothed codebook."""
        # index_add_ instead of bincount: no host synchronisation on a GPU (same integers).
        counts = torch.zeros_like(self.cluster_size).index_add_(
            0, indices, torch.ones_like(indices, dtype=self.cluster_size.dtype)
        )
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, z.float())
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
