"""DiVeQ: differentiable vector quantization by directional reparameterisation
(arXiv 2509.26469, Fig. 1; official code AaltoML/DiVeQ `vqgan_generation/diveq.py::DIVEQ`,
also vector-quantize-pytorch's `directional_reparam`).

The quantization error is written as a length times a direction, and only the direction is
treated as a constant. With `d = q - z` and a noisy unit direction
`u = sg(normalize(d + sigma eps))`, `eps ~ N(0, I)`:

    q~ = z + ||q - z|| u

so the decoder's gradient reaches `z` (identity minus the part along `d`, plus the noisy
direction's share) and the codebook through `||q - z||`: the chosen code learns without a
codebook loss. The team's rule keeps the value of every estimator the chosen code, so the
value is replaced by `q` (`vqbench.estimator.code_value`), which removes the noise from it
(the reference returns `q~` itself, whose value is off `q` by the noise); the gradient is the
reference's exactly.

The reference recipe (the defaults; asked of the estimator by the quantizer, see
`Estimator.quantizer_defaults`, `initial_codebook`, `code_replacement`):
* noise: the reference's `normal.Normal(0, noise_var)` with `noise_var = 0.001` passes 0.001
  as torch's *scale*, a standard deviation of 1e-3: `noise_variance` 1e-6 here.
* no codebook or commitment loss (`codebook_weight: 0`, `beta: 0` under `recipe: reference`).
* codebook init U(0, 1/K) (`uniform_init=True`); `codebook_init: quantizer` keeps the
  quantizer's own.
* code replacement every `replacement_interval` (100) steps: codes used in fewer than
  `discard_threshold` (0.01) of the steps become copies of used codes sampled by usage, plus
  `perturb_eps` (1e-9) noise (`vqbench.restart.UsageReplacement`); `replacement_interval: 0`
  turns it off.
Quantizers with a free codebook (`vanilla`) honour the last two.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.estimator import Estimator, EstimatorParams, code_value, register_estimator
from vqbench.restart import UsageReplacement


class DiVeQParams(EstimatorParams):
    noise_variance: pydantic.NonNegativeFloat = 1e-6
    eps: pydantic.PositiveFloat = 1e-12  # the direction's norm floor (the reference's clamp)
    codebook_init: Literal["uniform", "quantizer"] = "uniform"
    replacement_interval: pydantic.NonNegativeInt = 100
    discard_threshold: float = pydantic.Field(0.01, ge=0.0, le=1.0)
    perturb_eps: pydantic.NonNegativeFloat = 1e-9
    replacement_seed: pydantic.NonNegativeInt = 0


@register_estimator("diveq")
class DiVeQ(Estimator):
    """DiVeQ: value q; gradient of z + norm(q - z) sg(noisy direction), reaching the codes."""

    Params = DiVeQParams

    def forward(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        error = q - z
        length = error.norm(dim=-1, keepdim=True)
        noisy = error + math.sqrt(self.params.noise_variance) * torch.randn_like(error)
        reparameterised = z + F.normalize(noisy, dim=-1, eps=self.params.eps).detach() * length
        return code_value(q, reparameterised)  # the value is the code, bit for bit

    @classmethod
    def quantizer_defaults(cls) -> dict[str, Any]:
        return {"codebook_weight": 0.0, "beta": 0.0}  # "without any auxiliary losses"

    def initial_codebook(self, size: int, dim: int) -> torch.Tensor | None:
        if self.params.codebook_init != "uniform":
            return None
        return torch.rand(size, dim) / size  # U(0, 1/K), the reference's uniform_init

    def code_replacement(self, size: int) -> nn.Module | None:
        p = self.params
        if p.replacement_interval == 0:
            return None
        return UsageReplacement(
            size, p.replacement_interval, p.discard_threshold, p.perturb_eps, p.replacement_seed
        )
