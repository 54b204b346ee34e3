"""LFQ: lookup-free quantization (MAGVIT-v2, Yu et al. 2023, arXiv 2310.05737, Sec. 3.1).

Tokens are projected from `dim` to `bits = log2(codebook_size)` channels and quantized by sign,
`q_i = +1 if x_i > 0 else -1`, with the straight-through estimator. The index is the binary
number of the signs, MSB first (vector-quantize-pytorch's order). The loss (Open-MAGVIT2 / SPEC
section 2 weights) is

    L = entropy_weight * (H_per_sample - diversity_weight * H_codebook)
        + commitment_weight * ||x - sg(q)||^2

with temperature 0.01, entropy weight 0.1, commitment 0.25. Both entropies are exact over all
`2^bits` codes and computed without an `N x 2^bits` table (see `vqbench.lfq_entropy`).
"""

from __future__ import annotations

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench import lfq_entropy
from vqbench.estimator import straight_through
from vqbench.quantizer import Quantizer, QuantizerOutput, QuantizerParams, register_quantizer


class LFQParams(QuantizerParams):
    codebook_size: pydantic.PositiveInt = 65536
    dim: pydantic.PositiveInt = 128
    temperature: pydantic.PositiveFloat = 0.01
    entropy_weight: pydantic.NonNegativeFloat = 0.1
    diversity_weight: pydantic.NonNegativeFloat = 1.0
    commitment_weight: pydantic.NonNegativeFloat = 0.25
    #: Open-MAGVIT2's `log(p + 1e-5)` in the codebook entropy; 0 is the exact entropy.
    entropy_eps: pydantic.NonNegativeFloat = 1e-5

    @pydantic.field_validator("codebook_size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        return lfq_entropy.check_power_of_two(size)

    def lookup_bytes(self) -> int:
        return 4 * self.codebook_size  # the batch-mean distribution over all codes


@register_quantizer("lfq")
class LFQ(Quantizer):
    """Lookup-free quantization: signs of a few channels, with an exact entropy loss."""

    Params = LFQParams
    small_config = {"codebook_size": 64, "dim": 16}
    explicit_codebook = False

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        self.bits = p.codebook_size.bit_length() - 1
        needs_projection = p.dim != self.bits
        self.project_in = nn.Linear(p.dim, self.bits) if needs_projection else nn.Identity()
        self.project_out = nn.Linear(self.bits, p.dim) if needs_projection else nn.Identity()
        powers = 2 ** torch.arange(self.bits - 1, -1, -1)
        self.register_buffer("powers", powers, persistent=False)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        bits = (indices.unsqueeze(-1) // self.powers) % 2
        return bits.float() * 2 - 1

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        p = self.params
        x = self.project_in(z)
        q = torch.where(x > 0, 1.0, -1.0)
        indices = ((q.detach() > 0).long() * self.powers).sum(-1)
        sample_h = lfq_entropy.per_sample_entropy(x, p.temperature)
        codebook_h = lfq_entropy.codebook_entropy(x, p.temperature, p.entropy_eps)
        commitment = F.mse_loss(x, q)
        loss = (
            p.entropy_weight * (sample_h - p.diversity_weight * codebook_h)
            + p.commitment_weight * commitment
        )
        stats = {
            "per_sample_entropy": sample_h,
            "codebook_entropy": codebook_h,
            "commitment": commitment,
        }
        return QuantizerOutput(self.project_out(straight_through(x, q)), indices, loss, stats)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.indices_to_codes(indices))
