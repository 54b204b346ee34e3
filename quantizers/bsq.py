"""BSQ: binary spherical quantization (Zhao et al. 2024, arXiv 2406.07548, Sec. 3; official
code zhaoyue-zephyrus/bsq-vit `transcoder/models/quantizer/bsq.py`, MIT).

Tokens are projected from `dim` to `bits = log2(codebook_size)` channels and l2-normalised onto
the unit sphere; each channel is binarised and the code renormalised:

    u = v / ||v||,    q = sign(u) / sqrt(bits)                       (Eq. 2)

so codes are the hypercube's corners on the unit sphere, `||u - q||` is bounded, and the index
is the binary number of the signs, MSB first (the reference's `basis`, as `lfq` here). The loss

    L = commitment_weight * ||u - sg(q)||^2
        + entropy_weight * (sample_entropy_weight * H_sample - diversity_weight * H_codebook)

uses the soft assignment `p(c | u) ~ exp(2 u.c / T)` over all `2^bits` codes (Sec. 3.3). It
factorises over bits with log-odds `4 u_i / (sqrt(bits) T)`: LFQ's with `x = u / sqrt(bits)`,
so both entropies come from `vqbench.lfq_entropy`, exact and without an `N x 2^bits` table.
The reference approximates the codebook entropy by the sum of the entropies of groups of
`group_size` bits (an upper bound); `entropy_group_size: 9` does that, the default is exact.

Defaults (zhaoyue-zephyrus/bsq-vit, every `configs/tokenizer/*bsqvit*.yaml`): temperature 1
(the reference's `inv_temperature`), entropy weight 0.1 (its `zeta` 1 times the trainer's
`codebook_weight` 0.1), per-sample and codebook weights 1 (`gamma0`, `gamma`), commitment 0
(`beta: 0.`; `recipe: shared` gives 0.25). Its loss divides the entropy term by
`inv_temperature`, 1 in every config. The commitment term sums over the bits (a squared
distance on the sphere), as the reference. Not reproduced: the trainer's ramp of
`codebook_weight` from 3x to 1x over its first 2,000 steps (`codebook_rampup_multiplier`), a
loss schedule outside the quantizer; the configs' entropy groups (`embed_group_size` 9 or 1,
which must divide the bits) are `entropy_group_size`, exact by default.
`straight_through`: `scaled` (reference) applies the estimator before the `1/sqrt(bits)` scale,
so `u` receives the decoder's gradient divided by `sqrt(bits)`; `unit` passes it unchanged
(vector-quantize-pytorch's `LFQ(spherical=True)`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench import lfq_entropy
from vqbench.estimator import straight_through
from vqbench.quantizer import Quantizer, QuantizerOutput, QuantizerParams, register_quantizer


class BSQParams(QuantizerParams):
    codebook_size: pydantic.PositiveInt = 65536
    dim: pydantic.PositiveInt = 128
    temperature: pydantic.PositiveFloat = 1.0
    entropy_weight: pydantic.NonNegativeFloat = 0.1
    sample_entropy_weight: pydantic.NonNegativeFloat = 1.0
    diversity_weight: pydantic.NonNegativeFloat = 1.0
    commitment_weight: pydantic.NonNegativeFloat = 0.0

    shared_recipe: ClassVar[dict[str, Any]] = {"commitment_weight": 0.25}
    entropy_group_size: pydantic.PositiveInt | None = None
    straight_through: Literal["scaled", "unit"] = "scaled"

    @pydantic.field_validator("codebook_size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        return lfq_entropy.check_power_of_two(size)

    @pydantic.model_validator(mode="after")
    def _groups_divide_bits(self) -> BSQParams:
        bits = self.codebook_size.bit_length() - 1
        group = self.entropy_group_size
        if group is not None and bits % group:
            raise ValueError(
                f"entropy_group_size={group} must divide the {bits} bits of "
                f"codebook_size={self.codebook_size}; use a divisor of {bits} or null (exact)"
            )
        return self

    def lookup_bytes(self) -> int:
        return 4 * self.codebook_size  # the batch-mean distribution over all codes


@register_quantizer("bsq")
class BSQ(Quantizer):
    """Binary spherical quantization: signs of l2-normalised channels, scaled onto the sphere."""

    Params = BSQParams
    small_config = {"codebook_size": 64, "dim": 16}
    explicit_codebook = False

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        self.bits = p.codebook_size.bit_length() - 1
        self.scale = 1.0 / math.sqrt(self.bits)
        needs_projection = p.dim != self.bits
        self.project_in = nn.Linear(p.dim, self.bits) if needs_projection else nn.Identity()
        self.project_out = nn.Linear(self.bits, p.dim) if needs_projection else nn.Identity()
        powers = 2 ** torch.arange(self.bits - 1, -1, -1)
        self.register_buffer("powers", powers, persistent=False)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Unit-norm codes `(N, bits)` with entries +-1/sqrt(bits)."""
        bits = (indices.unsqueeze(-1) // self.powers) % 2
        return (bits.float() * 2 - 1) * self.scale

    def entropies(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample and codebook entropy of the soft assignment (exact or grouped)."""
        x, t = u * self.scale, self.params.temperature  # LFQ's logits 2 x.s / T, s in {-1, 1}
        sample = lfq_entropy.per_sample_entropy(x, t)
        group = self.params.entropy_group_size or self.bits
        codebook = sum(lfq_entropy.codebook_entropy(part, t) for part in x.split(group, dim=1))
        return sample, codebook

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        p = self.params
        u = F.normalize(self.project_in(z), dim=1)
        signs = torch.where(u > 0, 1.0, -1.0)
        indices = ((signs > 0).long() * self.powers).sum(-1)
        q = signs * self.scale
        if p.straight_through == "scaled":
            z_q = straight_through(u, signs) * self.scale
        else:
            z_q = straight_through(u, q)
        sample_h, codebook_h = self.entropies(u)
        commitment = (u - q).square().sum(-1).mean()
        loss = (
            p.entropy_weight
            * (p.sample_entropy_weight * sample_h - p.diversity_weight * codebook_h)
            + p.commitment_weight * commitment
        )
        stats = {
            "per_sample_entropy": sample_h,
            "codebook_entropy": codebook_h,
            "commitment": commitment,
        }
        return QuantizerOutput(self.project_out(z_q), indices, loss, stats)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.indices_to_codes(indices))
