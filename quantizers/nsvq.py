"""NS-VQ: non-stationary vector quantization (arXiv 2602.18896; official code
CAIR-LAB-WFUSM/NS-VQ-TransVQ, `NS_Trans_VQ_CelebA/models/vq_vae.py::VectorQuantizer` with
`mem_flag=True, q_flag=True`, the repository's "NS-VQ").

A trainable codebook `E` (`K x dim`, U(-1/K, 1/K) as taming). Each token takes its nearest
code `k*(n)`. The encoder drifts, so codes no token chooses would be left behind; NS-VQ
propagates the drift to them through a kernel over the distances (the "memory" update):

    w_nk = 1                                              k = k*(n)
    w_nk = min(1, lambda K softmax_k(-||z_n - e_k||^2 / tau))   otherwise   (sg, no gradient)
    L_code = 1/(N dim) sum_n sum_k w_nk ||sg(z_n) - e_k||^2

(`lambda` = `kernel_weight`, 0.01). Only the winner term remains as `tau -> 0`, which is the
VQ-VAE codebook loss. The bandwidth decays exponentially with the reference's epochs,

    tau(t) = max(tau_0 * gamma^floor(t / decay_every), 1e-8)       (tau_0 = 1, gamma = 0.5)

where `t` counts optimiser steps (`after_optimizer_step`; a persistent buffer `steps`, so a
resumed run continues the schedule). The reference decays per trainer epoch; its ImageNet
trainer counts `val_interval` = 50,000 steps as one epoch, the default `decay_every`.

The loss is `codebook_weight * L_code + beta * ||sg(q) - z||^2` (alpha 1, beta 0.25). The
estimator (`code_gradient: scaled`, the reference's `q_flag`, paper Sec. 3.3.3) is straight
through to `z` and also passes `a = 2 codebook_weight / (N dim)` of the decoder's gradient to
the chosen code: `z_q = z + a q + sg((1 - a) q - z)`. `code_gradient: none` is the plain
straight-through estimator (or any registered estimator). In eval the loss is VQ-VAE's.

`L_code` is computed without an `N x K` matrix in the graph: with the (detached) kernel sums
`s_k = sum_n w_nk`, `m_k = sum_n w_nk z_n` and `c = sum_nk w_nk ||z_n||^2`, built in blocks of
tokens, `L_code = (sum_k s_k ||e_k||^2 - 2 e_k . m_k + c) / (N dim)`, the same value and
gradient as the reference's blocked double loop.
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.estimator import code_value
from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    QuantizerOutput,
    register_quantizer,
)
from vqbench.search import nearest_code

#: The reference's floor on the bandwidth (`max(p, 1e-8)` in `get_decay_p`).
BANDWIDTH_FLOOR = 1e-8
#: Entries of one block of the token-by-code kernel matrix (16 MiB in float32).
KERNEL_BLOCK = 1 << 22


class NSVQParams(ExplicitCodebookParams):
    codebook_size: pydantic.PositiveInt = 8192  # the paper's ImageNet configs
    kernel_weight: pydantic.NonNegativeFloat = 0.01
    bandwidth: pydantic.PositiveFloat = 1.0
    bandwidth_decay: float = pydantic.Field(0.5, gt=0.0, le=1.0)
    decay_every: pydantic.PositiveInt = 50_000
    code_gradient: Literal["scaled", "none"] = "scaled"

    @pydantic.model_validator(mode="after")
    def _scaled_needs_ste(self) -> NSVQParams:
        if self.code_gradient == "scaled" and self.estimator != "ste":
            raise ValueError(
                f"code_gradient='scaled' is its own estimator and cannot take "
                f"estimator='{self.estimator}'; set code_gradient: none to use it"
            )
        return self


def bandwidth_at(step: int, p: NSVQParams) -> float:
    """`tau(t) = max(tau_0 gamma^floor(t / decay_every), 1e-8)` (the reference's `exp`)."""
    return max(p.bandwidth * p.bandwidth_decay ** (step // p.decay_every), BANDWIDTH_FLOOR)


@torch.no_grad()
def kernel_sums(
    z: torch.Tensor, codes: torch.Tensor, winners: torch.Tensor, tau: float, weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`s_k = sum_n w_nk`, `m_k = sum_n w_nk z_n`, `c = sum_nk w_nk ||z_n||^2` of the kernel
    weights `w` (winner 1, others `min(1, weight K softmax(-d / tau))`), in blocks of tokens."""
    k = codes.shape[0]
    e2 = codes.pow(2).sum(1)
    s, m, c = codes.new_zeros(k), torch.zeros_like(codes), codes.new_zeros(())
    rows = max(1, KERNEL_BLOCK // k)
    for start in range(0, z.shape[0], rows):
        x, win = z[start : start + rows], winners[start : start + rows]
        x2 = x.pow(2).sum(1, keepdim=True)
        logits = torch.addmm(e2, x, codes.t(), alpha=-2.0).add_(x2).mul_(-1.0 / tau)
        w = torch.softmax(logits, dim=1).mul_(weight * k).clamp_(max=1.0)
        w.scatter_(1, win.view(-1, 1), 1.0)
        row_sums = w.sum(1)
        s += w.sum(0)
        m.addmm_(w.t(), x)
        c += row_sums @ x2.squeeze(1)
    return s, m, c


def kernel_codebook_loss(
    z: torch.Tensor, codes: torch.Tensor, winners: torch.Tensor, tau: float, weight: float
) -> torch.Tensor:
    """`1/(N dim) sum_nk w_nk ||sg(z_n) - e_k||^2`, differentiable in `codes` only."""
    s, m, c = kernel_sums(z.detach(), codes.detach(), winners, tau, weight)
    total = (s * codes.pow(2).sum(1)).sum() - 2 * (codes * m).sum() + c
    return total / z.numel()


@register_quantizer("nsvq")
class NSVQ(ExplicitCodebookQuantizer):
    """NS-VQ: VQ whose unchosen codes follow the encoder through a decaying distance kernel."""

    Params = NSVQParams
    small_config = {"codebook_size": 64, "dim": 16, "decay_every": 2}

    def __init__(self, **params) -> None:
        super().__init__(**params)
        k = self.codebook_size
        self.embedding = nn.Parameter(torch.empty(k, self.dim).uniform_(-1.0 / k, 1.0 / k))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def codebook(self) -> torch.Tensor:
        return self.embedding

    def bandwidth(self) -> float:
        """The kernel bandwidth `tau` at the current optimiser step."""
        return bandwidth_at(int(self.steps), self.params)

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        p, codes = self.params, self.embedding
        indices = nearest_code(z, codes, precision=p.search_precision)
        q = F.embedding(indices, codes)
        stats = {"bandwidth": z.new_tensor(self.bandwidth())}
        if self.training:
            codebook_term = kernel_codebook_loss(
                z, codes, indices, self.bandwidth(), p.kernel_weight
            )
        else:
            codebook_term = F.mse_loss(q, z.detach())
        commitment_term = F.mse_loss(z, q.detach())
        loss = p.codebook_weight * codebook_term + p.beta * commitment_term
        stats |= {"codebook": codebook_term, "commitment": commitment_term}
        return QuantizerOutput(self.straight_through(z, q), indices, loss, stats)

    def straight_through(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """`z + a q + sg((1 - a) q - z)`, `a = 2 codebook_weight / (N dim)` (Sec. 3.3.3), or
        the configured estimator with `code_gradient: none`."""
        if self.params.code_gradient == "none":
            return self.estimator(z, q)
        a = 2 * self.params.codebook_weight / z.numel()
        return code_value(q, z + a * q)  # the value is q exactly

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        self.steps += 1
