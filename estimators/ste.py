"""Straight-through estimator (Bengio et al. 2013; VQ-VAE): `z + sg(q - z)`.

The value is the code `q`; the decoder's gradient reaches `z` unchanged.
"""

from __future__ import annotations

import torch

from vqbench.estimator import Estimator, register_estimator, straight_through


@register_estimator("ste")
class StraightThrough(Estimator):
    """Straight-through: value q, gradient copied to z unchanged (the default)."""

    def forward(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return straight_through(z, q)
