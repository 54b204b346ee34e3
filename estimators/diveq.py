"""DiVeQ: differentiable vector quantization by directional reparameterisation
(arXiv 2509.26469, Fig. 1; vector-quantize-pytorch's `directional_reparam`).

The quantization error is written as a length times a direction, and only the direction is
treated as a constant. With `d = q - z` and a noisy unit direction
`u = sg(normalize(d + sqrt(sigma^2) eps))`, `eps ~ N(0, I)`, sigma^2 = 5e-3:

    q~ = z + ||q - z|| u

so the decoder's gradient reaches `z` (identity minus the part along `d`, plus the noisy
direction's share) and the codebook through `||q - z||`: the chosen code learns without a
codebook loss. The team's rule keeps the value of every estimator the chosen code, so the
value is replaced by `q` (`vqbench.estimator.code_value`), which removes the noise from it
(vector-quantize-pytorch returns `q~` itself, whose value is off `q` by the noise); the gradient
is the reference's exactly.

The method expects a learnable codebook with dead-code restart and no auxiliary loss (the
reference asserts a restart threshold): cross it with `vanilla` and set `restart_after`,
`codebook_weight: 0` and `beta: 0` for the paper's recipe.
"""

from __future__ import annotations

import math

import pydantic
import torch
import torch.nn.functional as F

from vqbench.estimator import Estimator, EstimatorParams, code_value, register_estimator


class DiVeQParams(EstimatorParams):
    noise_variance: pydantic.NonNegativeFloat = 5e-3
    eps: pydantic.PositiveFloat = 1e-6  # the direction's norm floor (the reference's l2norm)


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
