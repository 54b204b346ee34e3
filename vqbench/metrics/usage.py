"""Codebook usage and perplexity from an integer histogram of the codes (SPEC section 4)."""

from __future__ import annotations

from typing import Any

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
    """Histogram of code indices over a split; per-group usage when `code_groups` is given
    (the group id of every code, as the quantizer's `code_groups()` returns it)."""

    def __init__(self, codebook_size: int, code_groups: torch.Tensor | None = None) -> None:
        super().__init__()
        self.codebook_size, self.code_groups = codebook_size, code_groups
        self.add_state("counts", torch.zeros(codebook_size, dtype=torch.long))

    def update(
        self,
        originals: torch.Tensor | None,
        reconstructions: torch.Tensor | None,
        indices: torch.Tensor,
    ) -> None:
        flat = indices.reshape(-1).to(self.counts.device)
        # index_add_ rather than bincount: no host synchronisation on a GPU.
        self.counts.index_add_(0, flat, torch.ones_like(flat))

    def compute(self) -> dict[str, Any]:
        counts = self.synced_states()["counts"]
        result: dict[str, Any] = usage_from_counts(counts)
        if self.code_groups is not None:
            group = self.code_groups.to(counts.device).long()
            groups = int(group.max()) + 1
            used = torch.zeros(groups, device=counts.device).index_add_(
                0, group, (counts > 0).float()
            )
            size = torch.bincount(group, minlength=groups).float()
            result["group_usage"] = (used / size).tolist()
        return result
