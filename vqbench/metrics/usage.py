"""Codebook usage and perplexity from an integer histogram of the codes (SPEC section 4)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vqbench.metrics.base import Metric


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Usage = codes hit at least once / codebook size; perplexity = exp(entropy of the
    code frequencies), i.e. the number of equally used codes with the same entropy."""
    counts = counts.double()
    total = counts.sum()
    p = counts[counts > 0] / total
    entropy = float(-(p * p.log()).sum()) if total > 0 else 0.0
    return {
        "usage": float((counts > 0).sum()) / counts.numel(),
        "perplexity": float(torch.exp(torch.tensor(entropy))),
        "used_codes": int((counts > 0).sum()),
    }


class CodebookUsage(Metric):
    """Histogram of code indices over a split; per-group usage when `group_of` is given."""

    def __init__(
        self, codebook_size: int, group_of: Callable | None = None, groups: int | None = None
    ) -> None:
        super().__init__()
        self.codebook_size, self.group_of, self.groups = codebook_size, group_of, groups
        self.add_state("counts", torch.zeros(codebook_size, dtype=torch.long))

    def update(self, indices: torch.Tensor) -> None:
        self.counts += torch.bincount(
            indices.reshape(-1).to(self.counts.device), minlength=self.codebook_size
        )

    def compute(self) -> dict[str, object]:
        counts = self.synced_states()["counts"]
        result: dict[str, object] = usage_from_counts(counts)
        if self.group_of is not None and self.groups:
            group = self.group_of(torch.arange(self.codebook_size, device=counts.device))
            used = torch.zeros(self.groups, device=counts.device).index_add_(
                0, group, (counts > 0).float()
            )
            size = torch.bincount(group, minlength=self.groups).float()
            result["group_usage"] = (used / size).tolist()
        return result
