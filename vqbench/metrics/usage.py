"""Codebook usage and perplexity from an integer histogram of the codes (SPEC section 4).

A composite quantizer (residual, product) emits D indices per position, `(..., D)`, with the
sizes its `index_sizes()` gives. Its usage is reported two ways:

* per index: each component's usage and perplexity over its own codebook (`usage_per_index`,
  `perplexity_per_index`), and their means as `usage` and `perplexity` (what a report's
  Usage cell shows for a composite);
* as the product: distinct combinations seen / the product of the sizes (`product_usage`),
  and the perplexity of the combinations (`product_perplexity`). Up to
  `DENSE_PRODUCT_LIMIT` combinations this is a histogram (reduced by sum, as every metric
  state); beyond, the distinct rows seen and their counts are kept (compacted as they grow)
  and merged across processes at `compute`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vqbench.distributed import gather_objects
from vqbench.metrics.base import Metric

#: Largest product codebook counted with a dense histogram (8 MiB of int64).
DENSE_PRODUCT_LIMIT = 2**20
#: Rows buffered before they are merged into the distinct rows seen so far.
_COMPACT_ROWS = 2**20


def usage_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """Usage = codes hit at least once / codebook size; perplexity = exp(entropy of the
    code frequencies), i.e. the number of equally used codes with the same entropy."""
    counts = counts.double()
    used = int((counts > 0).sum())
    return {
        "usage": used / counts.numel(),
        "perplexity": _perplexity(counts),
        "used_codes": used,
    }


def _perplexity(counts: torch.Tensor) -> float:
    counts = counts.double()
    total = counts.sum()
    p = counts[counts > 0] / total
    entropy = float(-(p * p.log()).sum()) if total > 0 else 0.0
    return math.exp(entropy)


def merge_rows(rows: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of `rows` `(R, D)` and the summed `counts` of each."""
    if rows.shape[0] == 0:
        return rows, counts
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    total = torch.zeros(distinct.shape[0], dtype=counts.dtype, device=counts.device)
    return distinct, total.index_add_(0, inverse, counts)


class CodebookUsage(Metric):
    """Histogram of code indices over a split; per-group usage when `code_groups` is given
    (the group id of every code, as the quantizer's `code_groups()` returns it); per index
    and as the product for a composite (`index_sizes` with several entries). `product=False`
    skips the product (the trainer's per-epoch usage)."""

    def __init__(
        self,
        codebook_size: int,
        code_groups: torch.Tensor | None = None,
        index_sizes: list[int] | None = None,
        product: bool = True,
    ) -> None:
        super().__init__()
        self.codebook_size, self.code_groups = codebook_size, code_groups
        self.index_sizes = list(index_sizes or [codebook_size])
        self.composite = len(self.index_sizes) > 1
        if not self.composite:
            self.add_state("counts", torch.zeros(codebook_size, dtype=torch.long))
            return
        for i, size in enumerate(self.index_sizes):
            self.add_state(f"counts_{i}", torch.zeros(size, dtype=torch.long))
        self.product_size = math.prod(self.index_sizes)
        self.track_product = product
        self.dense_product = product and self.product_size <= DENSE_PRODUCT_LIMIT
        if self.dense_product:
            self.add_state("product_counts", torch.zeros(self.product_size, dtype=torch.long))
        self._reset_rows()

    def _reset_rows(self) -> None:
        self._rows: list[torch.Tensor] = []
        self._distinct = torch.zeros(0, len(self.index_sizes), dtype=torch.long)
        self._distinct_counts = torch.zeros(0, dtype=torch.long)
        self._pending = 0

    def reset(self) -> None:
        super().reset()
        if self.composite:
            self._reset_rows()

    def update(
        self,
        originals: torch.Tensor | None,
        reconstructions: torch.Tensor | None,
        indices: torch.Tensor,
    ) -> None:
        if not self.composite:
            flat = indices.reshape(-1).to(self.counts.device)
            # index_add_ rather than bincount: no host synchronisation on a GPU.
            self.counts.index_add_(0, flat, torch.ones_like(flat))
            return
        rows = indices.reshape(-1, len(self.index_sizes))
        for i in range(len(self.index_sizes)):
            counts = getattr(self, f"counts_{i}")
            column = rows[:, i].to(counts.device)
            counts.index_add_(0, column, torch.ones_like(column))
        if self.dense_product:
            combined = torch.zeros_like(rows[:, 0])
            for i, size in enumerate(self.index_sizes):  # mixed radix, first index first
                combined = combined * size + rows[:, i]
            combined = combined.to(self.product_counts.device)
            self.product_counts.index_add_(0, combined, torch.ones_like(combined))
        elif self.track_product:
            self._rows.append(rows.detach().cpu())
            self._pending += rows.shape[0]
            if self._pending >= _COMPACT_ROWS:
                self._compact()

    def _compact(self) -> None:
        if not self._rows:
            return
        rows = torch.cat([self._distinct, *self._rows])
        fresh = torch.ones(rows.shape[0] - self._distinct_counts.shape[0], dtype=torch.long)
        counts = torch.cat([self._distinct_counts, fresh])
        distinct, merged = merge_rows(rows, counts)
        self._distinct, self._distinct_counts = distinct, merged
        self._rows, self._pending = [], 0

    def compute(self) -> dict[str, Any]:
        states = self.synced_states()
        if not self.composite:
            result: dict[str, Any] = usage_from_counts(states["counts"])
            if self.code_groups is not None:
                result["group_usage"] = self.group_usage(states["counts"])
            return result
        per_index = [usage_from_counts(states[f"counts_{i}"]) for i in range(len(self.index_sizes))]
        result = {
            "usage": sum(u["usage"] for u in per_index) / len(per_index),
            "perplexity": sum(u["perplexity"] for u in per_index) / len(per_index),
            "used_codes": sum(u["used_codes"] for u in per_index) / len(per_index),
            "index_sizes": self.index_sizes,
            "usage_per_index": [u["usage"] for u in per_index],
            "perplexity_per_index": [u["perplexity"] for u in per_index],
        }
        if self.track_product:
            result.update(self.product_result(states))
        return result

    def product_result(self, states: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Distinct combinations / product size, and their perplexity, over every process."""
        if self.dense_product:
            counts = states["product_counts"]
        else:
            self._compact()
            gathered = gather_objects((self._distinct, self._distinct_counts))
            rows = torch.cat([r for r, _ in gathered])
            _, counts = merge_rows(rows, torch.cat([c for _, c in gathered]))
        used = int((counts > 0).sum())
        return {
            "product_usage": used / self.product_size,
            "product_used_codes": used,
            "product_perplexity": _perplexity(counts),
        }

    def group_usage(self, counts: torch.Tensor) -> list[float]:
        group = self.code_groups.to(counts.device).long()
        groups = int(group.max()) + 1
        used = torch.zeros(groups, device=counts.device).index_add_(0, group, (counts > 0).float())
        size = torch.bincount(group, minlength=groups).float()
        return (used / size).tolist()
