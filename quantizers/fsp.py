"""FSP: VP-VAE's finite structured perturbation (Zhai et al. 2026, arXiv 2602.17133; official
code zhai-lw/vp-vae `fsp/fsp.py`, `fsp/cdf_act.py`, `vp/l_utils.py`).

Tokens are projected from `dim` to `len(levels)` channels, optionally normalised
(`vector_norm`), and squashed by a CDF-like activation `a = F(z)` into `[0, 1]`. Channel `i`
has `L_i` bins of width `1 / L_i`; at inference `a` is replaced by its bin centre,

    k_i = floor(min(a_i, 1 - eps) * L_i),    q_i = (k_i + 1/2) / L_i    (straight-through)

and in training the quantizer is *replaced by a perturbation* of the size of a bin: with
probability `1 - quantize_rate` per element (every element at the reference's default 0)

    p_i = a_i + u_i / (2 L_i),  u_i ~ U(-1, 1),   kept only if 0 < p_i < 1 (else a_i)

so the decoder learns to tolerate exactly the error quantization will make, and the encoder's
gradient is the identity through `p`. The output is `(q - 1/2) / sqrt(1/12)` (unit variance
for uniform `q`), or with `inverse_activation` `F^-1(q)` straight-through onto `z`. Indices are
mixed-radix over the bins, first channel least significant (FSQ's order), in training too.
The loss is the `vector_norm` penalty on the batch moments (zero for the default `none`).
Defaults are the reference's `FSP(...)` defaults; `levels` has none there and takes FSQ's
[8, 8, 8, 5, 5, 5] here. The reference's batch-norm layers of `VectorNorm`
(`batch_norm`, `var_norm`, `passive_norm`) are not offered: its named presets use none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import pydantic
import torch
from torch import nn

from vqbench.quantizer import Quantizer, QuantizerOutput, ScalarLevelsParams, register_quantizer

_SQRT2 = math.sqrt(2)
#: sqrt(1/12), the standard deviation of U(0, 1): the reference's 0.28867513459481287.
UNIFORM_STD = 0.28867513459481287

Activation = Literal["tanh", "sigmoid", "normal", "laplace", "cauchy"]

#: `F: R -> [0, 1]` and `F^-1: (0, 1) -> R` per activation (`fsp/cdf_act.py`).
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (lambda z: (torch.tanh(z) + 1) / 2, lambda p: torch.arctanh(p * 2 - 1)),
    "sigmoid": (torch.sigmoid, torch.logit),
    "normal": (
        lambda z: (1 + torch.erf(z / _SQRT2)) / 2,
        lambda p: torch.erfinv(2 * p - 1) * _SQRT2,
    ),
    "laplace": (
        lambda z: 0.5 * (1 + torch.sign(z) * (1 - torch.exp(-torch.abs(z)))),
        lambda p: -torch.sign(p - 0.5) * torch.log(1 - 2 * torch.abs(p - 0.5)),
    ),
    "cauchy": (
        lambda z: torch.arctan(z) / torch.pi + 1 / 2,
        lambda p: torch.tan((p - 0.5) * torch.pi),
    ),
}

VectorNormName = Literal[
    "none", "none-var", "none-kurt", "none-var_tanh", "none-var_sigmoid", "none-var_laplace"
]
#: `VectorNorm.build` presets: (target, weight) of the batch mean, variance, skewness and
#: excess kurtosis per channel (`vp/l_utils.py`); all leave the features unchanged.
VECTOR_NORMS: dict[str, tuple[tuple[float, float], ...]] = {
    "none": ((0.0, 0.0), (1.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
    "none-var": ((0.0, 0.1), (1.0, 0.07), (0.0, 0.0), (0.0, 0.0)),
    "none-kurt": ((0.0, 0.1), (1.0, 0.07), (0.0, 0.06), (0.0, 0.05)),
    "none-var_tanh": ((0.0, 0.1), (0.8225, 0.07), (0.0, 0.0), (0.0, 0.0)),
    "none-var_sigmoid": ((0.0, 0.1), (3.29, 0.07), (0.0, 0.0), (0.0, 0.0)),
    "none-var_laplace": ((0.0, 0.1), (2.0, 0.07), (0.0, 0.0), (0.0, 0.0)),
}


def batch_moments(z: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, ...]:
    """Per-channel mean, unbiased variance, skewness and excess kurtosis of `(N, C)`."""
    variance, mean = torch.var_mean(z, dim=0, unbiased=True)
    scores = (z - mean) / variance.sqrt().clamp_min(eps)
    return mean, variance, scores.pow(3).mean(0), scores.pow(4).mean(0) - 3.0


def moment_penalty(z: torch.Tensor, preset: str) -> torch.Tensor:
    """`sum_m w_m * mean_c (moment_m - target_m)^2` over the preset's moments."""
    targets = VECTOR_NORMS[preset]
    if all(weight == 0 for _, weight in targets):
        return z.new_zeros(())
    moments = batch_moments(z)
    return sum(
        ((moment - target) ** 2).mean() * weight
        for moment, (target, weight) in zip(moments, targets, strict=True)
    )


class FSPParams(ScalarLevelsParams):
    activation: Activation = "tanh"
    vector_norm: VectorNormName = "none"
    quantize_rate: float = pydantic.Field(0.0, ge=0.0, le=1.0)
    inverse_activation: bool = False
    eps: pydantic.PositiveFloat | None = None


@register_quantizer("fsp")
class FSP(Quantizer):
    """VP-VAE's finite structured perturbation: bin-sized noise in training, FSQ at inference.

    Bin centres of a CDF-like activation at inference; see the module.
    """

    Params = FSPParams
    small_config = {"levels": [5, 4, 3], "dim": 16}
    explicit_codebook = False

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        self.register_buffer("levels", torch.tensor(p.levels), persistent=False)
        basis = torch.cumprod(torch.tensor([1] + p.levels[:-1]), 0)
        self.register_buffer("basis", basis, persistent=False)
        n = len(p.levels)
        needs_projection = p.dim != n
        self.project_in = nn.Linear(p.dim, n) if needs_projection else nn.Identity()
        self.project_out = nn.Linear(n, p.dim) if needs_projection else nn.Identity()
        self.act, self.inverse_act = ACTIVATIONS[p.activation]

    @property
    def codebook_size(self) -> int:
        return math.prod(self.params.levels)

    def bin_centres(self, a: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin index `k` of each activation and its centre `(k + 1/2) / L`, straight-through."""
        levels = self.levels.to(a.dtype)
        k = (a.clamp_max(1 - eps) * levels).floor()
        centre = (k + 0.5) / levels
        return a + (centre - a).detach(), k.detach()

    def perturb(self, a: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace elements of `q` (probability `1 - quantize_rate`) by `a` plus U(-1, 1) / 2L,
        where that stays inside (0, 1); returns the result and the acceptance rate."""
        half_bin = 1.0 / (self.levels * 2)
        proposal = a + half_bin * (torch.rand_like(a) * 2 - 1)
        accept = (proposal > 0.0) & (proposal < 1.0)
        perturbed = torch.where(accept, proposal, a)
        chosen = torch.rand_like(q) > self.params.quantize_rate
        return torch.where(chosen, perturbed, q), accept.float().mean()

    def to_output(self, q: torch.Tensor, z: torch.Tensor | None, eps: float) -> torch.Tensor:
        """Bin positions in [0, 1] to the quantizer's output channels."""
        if not self.params.inverse_activation:
            return (q - 0.5) / UNIFORM_STD
        out = self.inverse_act(q.clamp(eps, 1 - eps))
        return out if z is None else z + (out - z).detach()

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        p = self.params
        eps = p.eps or torch.finfo(z.dtype).eps
        h = self.project_in(z)
        loss = moment_penalty(h, p.vector_norm)
        a = self.act(h)
        q, k = self.bin_centres(a, eps)
        stats = {}
        if self.training and p.quantize_rate < 1.0:
            q, stats["p_accept_prob"] = self.perturb(a, q)
        indices = (k.long() * self.basis).sum(-1)
        stats["norm_loss"] = loss.detach()
        return QuantizerOutput(self.project_out(self.to_output(q, h, eps)), indices, loss, stats)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        k = (indices.unsqueeze(-1) // self.basis) % self.levels
        q = (k.float() + 0.5) / self.levels
        return self.project_out(self.to_output(q, None, 1e-6))
