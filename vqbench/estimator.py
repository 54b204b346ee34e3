"""Gradient estimators: how the gradient crosses the hard code assignment.

An estimator takes the tokens `z` and their chosen codes `q` (both `(N, d)`, float32, in the
lookup space) and returns the tensor that flows on to the decoder. Its value is always `q`
(a tokenizer emits codes; `forward(z).z_q` equals `decode_indices(indices)`); what an estimator
chooses is the rule by which the decoder's gradient reaches `z`. How the codebook is
parameterised is the quantizer's business; every explicit-codebook quantizer takes
`estimator: NAME` and `estimator_params: {...}`, so any quantizer can be crossed with any
estimator. Built-ins live in the top-level `estimators` folder and register through the
`vqbench.estimators` entry-point group, as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vqbench.params import PluginParams, validate_params
from vqbench.registry import Registry


def code_value(q: torch.Tensor, carrier: torch.Tensor) -> torch.Tensor:
    """The value of the code `q`, exactly, with the gradient of `carrier`.

    `carrier + sg(q - carrier)` in intent; written `sg(q) + (carrier - sg(carrier))` so that the
    value is `q` bit for bit (the second term is exactly zero), not `q` up to rounding.
    """
    return q.detach() + (carrier - carrier.detach())


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of `q`, the gradient of `z` (`z + sg(q - z)`)."""
    return code_value(q, z)


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

    # ---- what the estimator's method asks of the quantizer (asked, never guessed) ----------
    @classmethod
    def quantizer_defaults(cls) -> dict[str, Any]:
        """Quantizer parameters the method's reference recipe sets (e.g. DiVeQ trains without
        codebook or commitment loss); used for fields the quantizer's config leaves unset."""
        return {}

    def initial_codebook(self, size: int, dim: int) -> torch.Tensor | None:
        """A free codebook's initial `(size, dim)` codes as the method's code draws them, or
        None to keep the quantizer's own initialisation."""
        return None

    def code_replacement(self, size: int) -> nn.Module | None:
        """The method's own codebook upkeep for a free codebook of `size` codes (an object with
        `record(indices)` and `replace_codes(embedding)`), or None."""
        return None

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        """How reports name this estimator with these parameters."""
        return cls.name + (
            f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())


ESTIMATORS = Registry("estimator", "vqbench.estimators", Estimator)


def register_estimator(name: str, *, override: bool = False):
    """Class decorator that registers an `Estimator` subclass under `name`."""
    return ESTIMATORS.register(name, override=override)


def list_estimators() -> list[str]:
    """Registered gradient-estimator names, sorted."""
    return ESTIMATORS.names()


def get_estimator_class(name: str) -> type[Estimator]:
    return ESTIMATORS.get(name)


def create_estimator(name: str, **params: Any) -> Estimator:
    """Build the estimator registered under `name` with validated `params`."""
    return ESTIMATORS.create(name, **params)
