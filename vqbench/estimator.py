"""Gradient estimators: how the gradient crosses the hard code assignment.

An estimator takes the tokens `z` and their chosen codes `q` (both `(N, d)`, float32, in the
lookup space) and returns the tensor that flows on to the decoder: its value (`q` for `ste`
and `rotation`) and, through autograd, the rule by which the decoder's gradient reaches `z`.
How the codebook is parameterised is the quantizer's business; every explicit-codebook
quantizer takes `estimator: NAME` and `estimator_params: {...}`, so any quantizer can be
crossed with any estimator. Built-ins live in the top-level `estimators` package and register
through the `vqbench.estimators` entry-point group.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vqbench.params import PluginParams, validate_params


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of `q`, the gradient of `z` (`z + sg(q - z)`)."""
    return z + (q - z).detach()


class EstimatorParams(PluginParams):
    """Declared parameters of an estimator (none by default)."""


class Estimator(nn.Module):
    """Base class of gradient estimators: `forward(z, q)` returns what the decoder receives."""

    Params: ClassVar[type[EstimatorParams]] = EstimatorParams
    name: ClassVar[str] = "estimator"

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = validate_params(self.name, self.Params, params)

    def forward(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
