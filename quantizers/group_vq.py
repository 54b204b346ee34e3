"""Group-VQ (Zheng & Li, arXiv 2510.13331): group-wise reparameterised codebooks.

The `n` codes are split into `k` groups. Group j is generated from frozen random core vectors
through its own trained projector (Eq. 7):

    G_j = Ĝ_j W_j + b_j,     Ĝ_j frozen random,  W_j in R^{r x d},  b_j in R^d

so codes are optimised jointly within a group (they share W_j, b_j) and independently across
groups: a loss that only touches group j's codes gives every other projector a zero gradient
(Eq. 5). k = 1 is SimVQ with a bias; k = n approaches a free codebook.

Layouts:
* `shared_core: true` (default; Appendix B's parallel form): one core `Ĉ` of `n/k x r` shared
  by all groups, `C' = (Ĉ W + b).reshape(n, d)` with `W = [W_1 ... W_k]`, so code `i*k + j`
  is core row i through group j (groups interleave).
* `shared_core: false` (Algorithm 1): each group has its own core rows; group j holds the
  contiguous indices `offset_j ... offset_j + n_j - 1`, and `group_sizes` may be unequal.

Projectors (Table 3): `linear` (default), `mlp` (r -> hidden -> d with ReLU), `linear+mlp`
(their sum). Lookup, loss (codebook 1.0, commitment 0.25) and STE are vanilla VQ's.

Post-training codebook sampling (Algorithm 2) is training-free: `resample(n')` draws a fresh
core of `n'/k` rows per group; `extend(n')` keeps every trained code bit for bit and appends
`(n' - n)/k` newly drawn codes per group. Draws are seeded and use the training distribution.

Parameterisation (SPEC section 3): each group is SimVQ's. The core is N(0, 1/r) (SimVQ's
`normal(0, e_dim**-0.5)`) and W_j has `nn.Linear`'s default initialisation, U(-1/sqrt(r),
1/sqrt(r)) (SimVQ's `embedding_proj`), so that `groups=1` trains exactly like SimVQ with a
bias, not only from the same initial code scale: Adam's step is set by the learning rate, so
the scale of W (not only of the codes) fixes how fast the codebook moves. (An N(0, I) core with
W_j ~ U(-1/r, 1/r) has the same initial codes but moves about sqrt(r) times faster.) The MLP
projector's layers are initialised as `nn.Linear`'s weights too; its hidden width is d. Biases
(`bias_init`): `linear` (default) draws each group's b_j as `nn.Linear(r, d)` draws its bias,
U(-1/sqrt(r), 1/sqrt(r)), as SimVQ's `embedding_proj` does, so that `groups=1` starts from
SimVQ's distribution (initial codebook offset ~0.55 from the origin at d = r = 32, not ~0.02);
`zero` is the paper's Appendix B (zero-initialised biases). The MLP's hidden bias follows the
same option. The paper is silent on the default k = 64.

Resampling and extension draw new core rows from the training distribution with a generator
seeded by both `core_seed` and the draw's `seed` (and the operation), so a draw never repeats
the trained core, whatever seeds are chosen.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Literal

import pydantic
import torch
from torch import nn

from vqbench.errors import VQBenchError
from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    register_quantizer,
    seeded_normal,
)


class GroupVQParams(ExplicitCodebookParams):
    groups: pydantic.PositiveInt = 64
    rank: pydantic.PositiveInt | None = None
    shared_core: bool = True
    projector: Literal["linear", "mlp", "linear+mlp"] = "linear"
    mlp_hidden: pydantic.PositiveInt | None = None
    group_sizes: list[pydantic.PositiveInt] | None = None
    bias: bool = True
    bias_init: Literal["linear", "zero"] = "linear"
    core_seed: pydantic.NonNegativeInt = 0

    @pydantic.model_validator(mode="after")
    def _groups_fit_codebook(self) -> GroupVQParams:
        n, k = self.codebook_size, self.groups
        if k > n:
            raise ValueError(f"groups={k} exceeds codebook_size={n}; use at most {n} groups")
        if self.group_sizes is not None:
            if self.shared_core:
                raise ValueError(
                    "group_sizes needs shared_core=false (the shared core gives "
                    "every group the same number of codes)"
                )
            if len(self.group_sizes) != k or sum(self.group_sizes) != n:
                raise ValueError(
                    f"group_sizes={self.group_sizes} must have groups={k} entries "
                    f"summing to codebook_size={n}"
                )
        elif n % k:
            divisor = max(d for d in range(1, min(k, 1024) + 1) if n % d == 0)
            raise ValueError(
                f"groups={k} does not divide codebook_size={n}; use a divisor "
                f"such as {divisor}" + ("" if self.shared_core else ", or give group_sizes")
            )
        return self

    @property
    def rank_(self) -> int:
        return self.rank or self.dim

    def lookup_bytes(self) -> int:
        projector = self.groups * self.rank_ * self.dim * (2 if "mlp" in self.projector else 1)
        return 4 * (2 * self.codebook_size * self.dim + projector)


def linear_default_init(groups: int, fan_in: int, fan_out: int) -> torch.Tensor:
    """`(groups, fan_in, fan_out)` weights drawn as `nn.Linear(fan_in, fan_out)` draws its
    weight (kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
    bound = fan_in**-0.5
    return torch.empty(groups, fan_in, fan_out).uniform_(-bound, bound)


def linear_bias_init(groups: int, fan_in: int, fan_out: int, kind: str) -> torch.Tensor:
    """`(groups, 1, fan_out)` biases: `nn.Linear(fan_in, fan_out)`'s default,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (`linear`), or zeros (`zero`, Appendix B)."""
    if kind == "zero":
        return torch.zeros(groups, 1, fan_out)
    bound = fan_in**-0.5
    return torch.empty(groups, 1, fan_out).uniform_(-bound, bound)


class GroupProjector(nn.Module):
    """k per-group maps from rank r to dim d, applied to cores `(m, r)` (shared by all groups)
    or `(k, m, r)` (one block per group); returns `(k, m, d)`."""

    def __init__(
        self,
        groups: int,
        rank: int,
        dim: int,
        kind: str,
        hidden: int,
        bias: bool,
        bias_init: str = "linear",
    ):
        super().__init__()
        self.kind = kind
        self.weight = self.mlp_in = self.mlp_out = None
        if kind in ("linear", "linear+mlp"):
            self.weight = nn.Parameter(linear_default_init(groups, rank, dim))
        if kind in ("mlp", "linear+mlp"):
            self.mlp_in = nn.Parameter(linear_default_init(groups, rank, hidden))
            self.mlp_in_bias = nn.Parameter(linear_bias_init(groups, rank, hidden, bias_init))
            self.mlp_out = nn.Parameter(linear_default_init(groups, hidden, dim))
        self.bias = nn.Parameter(linear_bias_init(groups, rank, dim, bias_init)) if bias else None

    @staticmethod
    def _per_group(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return torch.einsum("mr,krd->kmd", x, weight)
        return torch.bmm(x, weight)

    def forward(self, core: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """Project `core` through every group's map, or through group `group` only."""

        def param(value: torch.Tensor | None) -> torch.Tensor | None:
            return value if value is None or group is None else value[group : group + 1]

        out = 0
        if self.weight is not None:
            out = self._per_group(core, param(self.weight))
        if self.mlp_in is not None:
            hidden = torch.relu(self._per_group(core, param(self.mlp_in)) + param(self.mlp_in_bias))
            out = out + torch.bmm(hidden, param(self.mlp_out))
        if self.bias is not None:
            out = out + param(self.bias)
        return out


@register_quantizer("group_vq")
class GroupVQ(ExplicitCodebookQuantizer):
    """Group-VQ: per-group projectors of frozen random cores; resample/extend after training."""

    Params = GroupVQParams
    small_config = {"codebook_size": 64, "dim": 16, "groups": 4}
    resamplable = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        k, r = p.groups, p.rank_
        rows = p.codebook_size // k if p.shared_core else p.codebook_size
        self.register_buffer("core", seeded_normal((rows, r), p.core_seed, std=r**-0.5))
        self.projector = GroupProjector(
            k, r, p.dim, p.projector, p.mlp_hidden or p.dim, p.bias, p.bias_init
        )

    # ---- layout ---------------------------------------------------------------------------
    @property
    def groups(self) -> int:
        return self.params.groups

    @property
    def group_sizes(self) -> list[int]:
        p = self.params
        return list(p.group_sizes) if p.group_sizes else [p.codebook_size // p.groups] * p.groups

    def independent_groups(self) -> int:
        return self.groups

    def code_groups(self) -> torch.Tensor:
        return self.group_of(torch.arange(self.codebook_size, device=self.core.device))

    def group_biases(self) -> torch.Tensor | None:
        bias = self.projector.bias
        return None if bias is None else bias.detach().reshape(self.groups, -1)

    def group_of(self, indices: torch.Tensor) -> torch.Tensor:
        """Group id of each code index."""
        if self.params.shared_core:
            return indices % self.groups
        ends = torch.tensor(self.group_sizes, device=indices.device).cumsum(0)
        return torch.bucketize(indices, ends, right=True)

    def codebook(self) -> torch.Tensor:
        """`(n, d)` codes: Eq. (7) for every group, in the layout's index order."""
        k, d = self.groups, self.dim
        if self.params.shared_core:  # (k, n/k, d) -> code i*k + j
            return self.projector(self.core).transpose(0, 1).reshape(-1, d)
        sizes = self.group_sizes
        if len(set(sizes)) == 1:  # (k, n/k, d) -> code j*(n/k) + i
            return self.projector(self.core.view(k, sizes[0], -1)).reshape(-1, d)
        blocks = self.core.split(sizes)
        return torch.cat(
            [self.projector(block.unsqueeze(0), group=j)[0] for j, block in enumerate(blocks)]
        )

    # ---- Algorithm 2: post-training codebook sampling ----------------------------------------
    def _new_core_rows(self, rows_per_group: int, seed: int, operation: str) -> torch.Tensor:
        """Fresh core rows from the training distribution, N(0, 1/r): `(rows, r)` shared, or
        `(k, rows, r)` per group. The generator's seed is derived from `core_seed`, `seed` and
        the operation, so no choice of seeds repeats the trained core."""
        p = self.params
        r = p.rank_
        shape = (rows_per_group, r) if p.shared_core else (self.groups, rows_per_group, r)
        key = f"{operation}:{p.core_seed}:{seed}".encode()
        derived = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1
        return seeded_normal(shape, derived, std=r**-0.5).to(self.core.device, self.core.dtype)

    def _rows_per_group(self, count: int, what: str) -> int:
        if count <= 0 or count % self.groups:
            raise VQBenchError(
                f"group_vq.{what}: {count} codes cannot be split over groups={self.groups}; "
                f"use a multiple of {self.groups}"
            )
        return count // self.groups

    def _with_core(self, core: torch.Tensor, new_size: int, group_sizes) -> GroupVQ:
        new = copy.deepcopy(self)
        new.params = self.params.model_copy(
            update={"codebook_size": new_size, "group_sizes": group_sizes}
        )
        self.validate_params(**new.params.model_dump())
        new.core = core
        return new

    def resample(self, new_size: int, seed: int = 1) -> GroupVQ:
        """A copy whose codebook is `new_size` fresh codes through the trained projectors."""
        rows = self._rows_per_group(new_size, f"resample({new_size})")
        core = self._new_core_rows(rows, seed, "resample")
        sizes = None if self.params.group_sizes is None else [rows] * self.groups
        return self._with_core(core.reshape(-1, core.shape[-1]), new_size, sizes)

    def extend(self, new_size: int, seed: int = 1) -> GroupVQ:
        """A copy that keeps every code and appends `(new_size - n)/k` new codes to each group.

        Shared layout: old codes keep their indices. Independent layout: group j's old codes
        keep their order at the start of group j's (now longer) index range.
        """
        added = self._rows_per_group(new_size - self.codebook_size, f"extend({new_size})")
        fresh = self._new_core_rows(added, seed, "extend")
        if self.params.shared_core:
            return self._with_core(torch.cat([self.core, fresh]), new_size, None)
        blocks = self.core.split(self.group_sizes)
        core = torch.cat([torch.cat([old, new]) for old, new in zip(blocks, fresh)])
        sizes = [s + added for s in self.group_sizes]
        return self._with_core(core, new_size, sizes if self.params.group_sizes else None)

    # ---- Fig. 5: per-group statistics ---------------------------------------------------------
    @torch.no_grad()
    def group_statistics(self, counts: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per group: mean and std of code norms, and usage if a code histogram is given."""
        codes = self.codebook()
        group = self.group_of(torch.arange(codes.shape[0], device=codes.device))
        size = torch.bincount(group, minlength=self.groups).float()
        norms = codes.norm(dim=1)
        mean = torch.zeros(self.groups, device=codes.device).index_add_(0, group, norms) / size
        sq = torch.zeros(self.groups, device=codes.device).index_add_(0, group, norms**2) / size
        var = (sq - mean**2).clamp_min(0) * size / (size - 1).clamp_min(1)
        stats = {"code_norm_mean": mean, "code_norm_std": var.sqrt()}
        if counts is not None:
            used = torch.zeros(self.groups, device=codes.device).index_add_(
                0, group, (counts > 0).float()
            )
            stats["usage"] = used / size
        return stats
