"""One contract for every metric (after torchmetrics): states that reduce by sum.

`update(originals, reconstructions, indices)` accumulates one batch of a split (a metric uses
what it needs: images for PSNR/SSIM/LPIPS/FID, code indices for usage); `compute()` sums the
states over processes and returns `{name: value}`, where a value is a number (or a list, for
per-group values) or `Unavailable` with the reason it cannot be computed (missing pretrained
weights); `reset()` starts again. Local states are never changed by `compute`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vqbench.distributed import all_reduce_sum


@dataclass(frozen=True)
class Unavailable:
    """A metric that could not be computed, and why (printed as `n/a (reason)`)."""

    reason: str

    def __str__(self) -> str:
        return f"n/a ({self.reason})"


class Metric:
    def __init__(self) -> None:
        self._defaults: dict[str, torch.Tensor] = {}

    def add_state(self, name: str, default: torch.Tensor) -> None:
        self._defaults[name] = default.clone()
        setattr(self, name, default.clone())

    def reset(self) -> None:
        for name, default in self._defaults.items():
            setattr(self, name, default.clone().to(getattr(self, name).device))

    def to(self, device: torch.device | str) -> Metric:
        for name in self._defaults:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This process's states (copies on the CPU), to checkpoint a metric mid-epoch."""
        return {name: getattr(self, name).detach().cpu().clone() for name in self._defaults}

    def load_state_dict(self, states: dict[str, torch.Tensor]) -> None:
        for name in self._defaults:
            setattr(self, name, states[name].to(getattr(self, name).device))

    def synced_states(self) -> dict[str, torch.Tensor]:
        """Every state summed over processes (a copy; local states are left as they are)."""
        states = {name: getattr(self, name).clone() for name in self._defaults}
        all_reduce_sum(*states.values())
        return states

    def update(
        self, originals: torch.Tensor, reconstructions: torch.Tensor, indices: torch.Tensor
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError
