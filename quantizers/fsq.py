"""FSQ: finite scalar quantization (Mentzer et al. 2023, arXiv 2309.15505, Sec. 3 and App. A).

Tokens are projected from `dim` to `len(levels)` channels; channel i is bounded to
`L_i` values and rounded:

    half_i = (L_i - 1)(1 + eps) / 2,  offset_i = 0.5 if L_i even else 0,
    shift_i = atanh(offset_i / half_i)
    bounded = tanh(z + shift) * half - offset,   ẑ = round_ste(bounded) / (L // 2)

(the `(1 + eps)` bound of vector-quantize-pytorch, which is finite for L = 2 too). Indices are
mixed-radix with the first channel least significant: `sum_i (ẑ_i (L_i//2) + L_i//2) b_i`,
`b = cumprod([1] + levels[:-1])`. The codebook is implicit, of size `prod(levels)`
(64,000 for the default [8, 8, 8, 5, 5, 5]); there is no auxiliary loss.
"""

from __future__ import annotations

import math

import pydantic
import torch
from torch import nn

from vqbench.quantizer import Quantizer, QuantizerOutput, ScalarLevelsParams, register_quantizer


class FSQParams(ScalarLevelsParams):
    eps: pydantic.PositiveFloat = 1e-3


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient."""
    return x + (x.round() - x).detach()


@register_quantizer("fsq")
class FSQ(Quantizer):
    """Finite scalar quantization: bound each of a few channels, round to a fixed grid."""

    Params = FSQParams
    small_config = {"levels": [5, 4, 3], "dim": 16}
    explicit_codebook = False

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        levels = torch.tensor(p.levels, dtype=torch.long)
        self.register_buffer("levels", levels, persistent=False)
        basis = torch.cumprod(torch.tensor([1] + p.levels[:-1], dtype=torch.long), 0)
        self.register_buffer("basis", basis, persistent=False)
        n = len(p.levels)
        needs_projection = p.dim != n
        self.project_in = nn.Linear(p.dim, n) if needs_projection else nn.Identity()
        self.project_out = nn.Linear(n, p.dim) if needs_projection else nn.Identity()

    @property
    def codebook_size(self) -> int:
        return math.prod(self.params.levels)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into its level range (shifted so even levels round evenly)."""
        levels = self.levels.float()
        half = (levels - 1) * (1 + self.params.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize_scalars(self, z: torch.Tensor) -> torch.Tensor:
        """Channel values in [-1, 1] on the grid (the FSQ code of each token)."""
        return round_ste(self.bound(z)) / (self.levels // 2)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        half_width = self.levels // 2
        digits = (codes * half_width + half_width).round().long()
        return (digits * self.basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        half_width = self.levels // 2
        digits = (indices.unsqueeze(-1) // self.basis) % self.levels
        return (digits - half_width).float() / half_width

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        codes = self.quantize_scalars(self.project_in(z))
        indices = self.codes_to_indices(codes.detach())
        return QuantizerOutput(self.project_out(codes), indices, z.new_zeros(()))

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.indices_to_codes(indices))
