"""A small metric contract (after torchmetrics): states that reduce by sum across processes.

`update` accumulates over a whole evaluation split; `compute` sums the states over processes
(when `torch.distributed` is initialised) and returns plain numbers, or `Unavailable` with the
reason where the metric cannot be computed (missing pretrained weights); `reset` starts again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


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

    def to(self, device: torch.device) -> Metric:
        for name in self._defaults:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def synced_states(self) -> dict[str, torch.Tensor]:
        """Every state summed over processes (a copy; local states are left as they are)."""
        states = {name: getattr(self, name).clone() for name in self._defaults}
        if dist.is_available() and dist.is_initialized():
            for value in states.values():
                dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return states
