"""IBQ: index backpropagation quantization (Shi et al. 2024, arXiv 2412.02692, Sec. 3.2;
Open-MAGVIT2 `src/IBQ/modules/vqvae/quantize.py::IndexPropagationQuantize`, Apache-2.0).

Codes are chosen by the logits `l = z E^T` (a dot product, not a distance), and the one-hot of
the chosen code is made differentiable by its softmax (Eq. 4-5):

    one_hot = hard - sg(softmax(l)) + softmax(l),      z_q = one_hot E

so the value is the chosen code `E[argmax l]` while the gradient reaches every code through
the softmax (the whole codebook is updated at each step, which keeps it in use). The loss
(Eq. 6; the reference's `quant_loss`, plus its entropy loss):

    L = soft_weight * ||z_q - z||^2 + beta * ||sg(q) - z||^2 + codebook_weight * ||q - sg(z)||^2
        + entropy_weight * (sample_entropy_weight * H_sample - diversity_weight * H_codebook)

with `q = E[argmax l]` and the entropies of `softmax(l / T)` over all codes (T = 0.01). Every
softmax is computed in blocks over codes by `vqbench.code_softmax` (forward and backward), so
no `N x K` table is held (2 GiB per tensor at 8,192 x 65,536). The value is `E[index]` exactly:
`z_q = q + (m - sg(m))` with `m = softmax(l) sg(E)`, whose gradient is the reference's.

Defaults: the codes start N(0, 1) (the reference's `nn.Embedding`); entropy weight 0.05 and
temperature 0.01 (its 16,384 and 262,144 configs). The commitment/codebook split is the
reference's (`quant_loss = mean((z_q - z)^2) + mean((sg(q) - z)^2) + beta mean((q - sg(z))^2)`
with its `beta: 0.25`): `beta` 1.0 on the commitment term, `codebook_weight` 0.25 on the
codebook term; `recipe: shared` gives commitment 0.25, codebook 1.0. The batch's code
distribution is summed across processes (the reference keeps it per process). Its `l2_normalize`
and `remap` options are not offered. The quantizer takes no estimator: IBQ is its own gradient.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.code_softmax import max_inner_product, soft_code_statistics
from vqbench.distributed import all_reduce_sum, all_reduce_sum_differentiable
from vqbench.errors import VQBenchError
from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    QuantizerOutput,
    QuantizerParams,
    register_quantizer,
)

_TINY = torch.finfo(torch.float32).tiny


class IBQParams(ExplicitCodebookParams):
    beta: pydantic.NonNegativeFloat = 1.0
    codebook_weight: pydantic.NonNegativeFloat = 0.25
    soft_weight: pydantic.NonNegativeFloat = 1.0
    entropy_weight: pydantic.NonNegativeFloat = 0.05
    temperature: pydantic.PositiveFloat = 0.01
    sample_entropy_weight: pydantic.NonNegativeFloat = 1.0
    diversity_weight: pydantic.NonNegativeFloat = 1.0

    shared_recipe: ClassVar[dict[str, Any]] = {"beta": 0.25, "codebook_weight": 1.0}


@register_quantizer("ibq")
class IBQ(ExplicitCodebookQuantizer):
    """Index backpropagation: a straight-through soft one-hot, so every code gets a gradient."""

    Params = IBQParams
    small_config = {"codebook_size": 64, "dim": 16}

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.embedding = nn.Parameter(torch.randn(self.codebook_size, self.dim))

    @classmethod
    def _check_estimator_supported(cls, p: QuantizerParams) -> None:
        if p.estimator != "ste" or p.estimator_params:
            raise VQBenchError(
                f"ibq.estimator='{p.estimator}' is not supported: IBQ's gradient is its soft "
                f"one-hot (index backpropagation); drop the estimator"
            )

    def codebook(self) -> torch.Tensor:
        return self.embedding

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        p = self.params
        if not (torch.is_grad_enabled() and (z.requires_grad or self.embedding.requires_grad)):
            return self.hard_lookup(z)  # evaluation: no soft part to differentiate
        wants_entropy = self.training and p.entropy_weight > 0
        soft = soft_code_statistics(z, self.embedding, p.temperature if wants_entropy else None)
        q = F.embedding(soft.indices, self.embedding)
        z_q = q + (soft.mean_code - soft.mean_code.detach())  # value E[index] exactly
        terms = {
            "soft": F.mse_loss(z_q, z),
            "commitment": F.mse_loss(z, q.detach()),
            "codebook": F.mse_loss(q, z.detach()),
        }
        loss = (
            p.soft_weight * terms["soft"]
            + p.beta * terms["commitment"]
            + p.codebook_weight * terms["codebook"]
        )
        if wants_entropy:
            sample_h, codebook_h = self.entropies(soft.entropy_sum, soft.prob_sum, z.shape[0])
            loss = loss + p.entropy_weight * (
                p.sample_entropy_weight * sample_h - p.diversity_weight * codebook_h
            )
            terms.update(per_sample_entropy=sample_h, codebook_entropy=codebook_h)
        return QuantizerOutput(z_q, soft.indices, loss, terms)

    def hard_lookup(self, z: torch.Tensor) -> QuantizerOutput:
        """Indices, codes and the hard loss terms, without the softmax (no gradient)."""
        p = self.params
        indices = max_inner_product(z, self.embedding)
        q = F.embedding(indices, self.embedding)
        terms = {
            "soft": F.mse_loss(q, z),
            "commitment": F.mse_loss(z, q),
            "codebook": F.mse_loss(q, z),
        }
        loss = sum(
            w * terms[k]
            for w, k in (
                (p.soft_weight, "soft"),
                (p.beta, "commitment"),
                (p.codebook_weight, "codebook"),
            )
        )
        return QuantizerOutput(q, indices, loss, terms)

    @staticmethod
    def entropies(entropy_sum, prob_sum, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean per-sample entropy (this process) and the entropy of the batch's mean code
        distribution (every process)."""
        count = torch.tensor(float(tokens), device=prob_sum.device, dtype=prob_sum.dtype)
        total = all_reduce_sum_differentiable(prob_sum)
        all_reduce_sum(count)
        mean = total / count
        codebook_h = -(mean * mean.clamp_min(_TINY).log()).sum()
        return entropy_sum / max(tokens, 1), codebook_h

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.embedding)
