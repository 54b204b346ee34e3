"""Composites built from the registry: residual (RQ) and product (PQ) quantization.

Any registered quantizer composes, itself a composite included: `quantizer: NAME` and
`quantizer_params: {...}` build each stage or part through the registry (its `dim` is set by
the composite), `shared: true` uses one quantizer (one codebook) for every stage or part.
Indices are `(B, H, W, D)` with one column per stage or part (more when the inner quantizer
is itself a composite); `index_sizes()` lists their sizes and `codebook_size` is their
product, the number of distinct composite codes.

* `residual` (RQ; Zeghidour et al. 2021 SoundStream Alg. 1, Lee et al. 2022 RQ-VAE; as
  vector-quantize-pytorch's `ResidualVQ`): stage i quantizes the residual
  `r_i = r_{i-1} - sg(zq_{i-1})`, `r_1 = z`, and the output is `sum_i zq_i`. Each stage keeps
  its own estimator, so with `gradient: sum` (the library's) the input receives the sum of the
  stages' gradients (D times the decoder's gradient under the straight-through estimator);
  `gradient: straight_through` (RQ-VAE) puts one `z + sg(sum - z)` around the stack instead,
  so decoder gradients reach neither the stages' estimators nor their output projections.
  Reference recipe (RQ-VAE, kakaobrain/rq-vae-transformer `RQBottleneck`, and its
  `configs/imagenet256/stage1/*.yaml`): EMA codebooks (`quantizer: ema`, decay 0.99),
  `gradient: straight_through`, and the per-stage losses averaged over the depth
  (`stage_loss: mean`: RQ-VAE's `torch.mean(torch.stack(loss_list))` of
  `||x - sg(sum_{j<=i} q_j)||^2`, which equals stage i's commitment `||r_i - sg(q_i)||^2`,
  weight 0.25, in value and in gradient), one codebook shared by every depth (`shared: true`,
  the configs' `shared_codebook`), and RQ-VAE's restart of unused codes
  (`restart_unused_codes: true`: EMA counts from 0, a code whose count falls below 1 takes a
  random token of the batch; `RQ_VAE_EMA`, `quantizer_params: {dead_code_threshold: 0}` turns
  it off). `stage_loss: sum` is the library's examples (they sum the stages' losses),
  `shared: false` the library's default of one codebook per stage. One difference remains:
  RQ-VAE updates (and restarts) the shared codebook after each depth's lookup, inside the
  forward, so depth i+1 already sees depth i's update; here the update covers every depth's
  tokens once per optimiser step (as every EMA codebook of vqbench, so that gradient
  accumulation and processes cannot change it).
* `product` (PQ; Jegou et al. 2011; vqtorch's `GroupVectorQuant`, the library's
  `GroupedResidualVQ` with one quantizer per group): the channels are split into `parts`
  contiguous parts of `dim / parts`, each quantized on its own; the loss is the mean of the
  parts' losses (for squared-error losses: the loss over the whole vector, as vqtorch).

Stats are reduced like the losses. `after_optimizer_step` and `init_from_data` reach every
inner quantizer (the images are replayed to each, so a composite of data-initialised
quantizers holds them in memory). Not offered: the library's quantize dropout (its dropped
stages emit index -1), beam search and implicit neural codebooks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import pydantic
import torch
from torch import nn

from vqbench.errors import VQBenchError
from vqbench.quantizer import (
    Quantizer,
    QuantizerOutput,
    QuantizerParams,
    create_quantizer,
    get_quantizer_class,
    register_quantizer,
)


class CompositeParams(QuantizerParams):
    dim: pydantic.PositiveInt = 128
    quantizer: str = "vanilla"
    quantizer_params: dict[str, Any] = {"codebook_size": 256}
    shared: bool = False

    @pydantic.field_validator("quantizer")
    @classmethod
    def _registered(cls, name: str) -> str:
        get_quantizer_class(name)  # unknown names fail with a suggestion
        return name

    def components(self) -> int:  # pragma: no cover - each composite says
        raise NotImplementedError

    def inner_dim(self) -> int:
        return self.dim

    def inner_kwargs(self) -> dict[str, Any]:
        """The inner quantizer's keyword parameters: `quantizer_params`, the composite's `dim`
        (split for a product) and its `recipe` unless `quantizer_params` names one."""
        return {"recipe": self.recipe, **self.quantizer_params, "dim": self.inner_dim()}

    def inner_params(self) -> QuantizerParams:
        """The inner quantizer's validated parameters (nothing is allocated)."""
        if "dim" in self.quantizer_params:
            raise ValueError(
                "quantizer_params: 'dim' is set by the composite (its dim, split over the "
                "parts of a product); remove it"
            )
        params = self.inner_kwargs()
        try:
            return get_quantizer_class(self.quantizer).check_params(**params)
        except VQBenchError as err:
            raise ValueError(f"quantizer_params: {err}") from None

    @pydantic.model_validator(mode="after")
    def _inner_is_valid(self) -> CompositeParams:
        self.inner_params()
        return self

    def lookup_bytes(self) -> int:
        copies = 1 if self.shared else self.components()
        return copies * self.inner_params().lookup_bytes()


class CompositeQuantizer(Quantizer):
    """Shared machinery of the composites: inner quantizers, index columns, upkeep."""

    explicit_codebook: ClassVar[bool] = False
    Params: ClassVar[type[QuantizerParams]] = CompositeParams
    #: How the components' losses and stats combine: "sum" or "mean".
    loss_reduction: ClassVar[str] = "sum"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        copies = 1 if p.shared else p.components()
        self.quantizers = nn.ModuleList(
            create_quantizer(p.quantizer, **p.inner_kwargs()) for _ in range(copies)
        )
        self.initialises_from_data = any(q.initialises_from_data for q in self.quantizers)

    @classmethod
    def codebook_kind(cls) -> str:
        return "composite"

    @classmethod
    def _check_estimator_supported(cls, p: QuantizerParams) -> None:
        if p.estimator != "ste" or p.estimator_params:
            raise VQBenchError(
                f"{cls.name}.estimator: a composite has no estimator of its own; set it in "
                f"quantizer_params (e.g. quantizer_params: {{estimator: rotation}})"
            )

    def component(self, i: int) -> Quantizer:
        return self.quantizers[0 if self.params.shared else i]

    def index_sizes(self) -> list[int]:
        return [
            size
            for i in range(self.params.components())
            for size in self.component(i).index_sizes()
        ]

    @property
    def codebook_size(self) -> int:
        return math.prod(self.index_sizes())

    def index_columns(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """The `(N, D)` indices split per component (`(N,)` for a one-index component)."""
        widths = [len(self.component(i).index_sizes()) for i in range(self.params.components())]
        columns = indices.split(widths, dim=1)
        return [c.squeeze(1) if c.shape[1] == 1 else c for c in columns]

    def reduction(self) -> str:
        """How the components' losses combine here: "sum" or "mean"."""
        return self.loss_reduction

    def combine(self, outputs: list[QuantizerOutput]) -> tuple[torch.Tensor, dict]:
        """The components' losses and stats, summed or averaged (`reduction()`)."""
        scale = 1.0 if self.reduction() == "sum" else 1.0 / len(outputs)
        loss = sum(out.loss for out in outputs) * scale
        stats: dict[str, torch.Tensor] = {}
        for out in outputs:
            for key, value in out.stats.items():
                stats[key] = stats.get(key, 0.0) + value * scale
        return loss, stats

    def stacked_indices(self, outputs: list[QuantizerOutput]) -> torch.Tensor:
        return torch.cat([out.indices.reshape(out.indices.shape[0], -1) for out in outputs], 1)

    def independent_groups(self) -> int:
        return sum(q.independent_groups() for q in self.quantizers)

    def after_optimizer_step(self) -> None:
        for q in self.quantizers:
            q.after_optimizer_step()

    def init_from_data(self, batches: Iterable[torch.Tensor]) -> dict[str, Any] | None:
        seen: list[torch.Tensor] = []

        def replay():
            yield from seen
            for batch in batches:
                seen.append(batch)
                yield batch

        infos = [q.init_from_data(replay()) for q in self.quantizers if q.initialises_from_data]
        return {"components": infos} if infos else None


#: RQ-VAE's EMA codebook (`VQEmbeddingEMA` with `restart_unused_codes: true`, as every config
#: of rq-vae-transformer): counts start at 0, and a code whose moving-average count is below 1
#: after an update takes a random token of the batch with its count set to 1.
RQ_VAE_EMA = {"initial_cluster_size": 0.0, "dead_code_threshold": 1.0}


class ResidualParams(CompositeParams):
    quantizer: str = "ema"
    shared: bool = True
    stages: pydantic.PositiveInt = 2
    gradient: Literal["sum", "straight_through"] = "straight_through"
    stage_loss: Literal["mean", "sum"] = "mean"

    def components(self) -> int:
        return self.stages

    def inner_kwargs(self) -> dict[str, Any]:
        """The composite's, plus RQ-VAE's EMA codebook under the reference recipe (values in
        `quantizer_params` win)."""
        kwargs = super().inner_kwargs()
        if self.quantizer == "ema" and kwargs["recipe"] == "reference":
            kwargs = {**RQ_VAE_EMA, **kwargs}
        return kwargs


@register_quantizer("residual")
class ResidualQuantizer(CompositeQuantizer):
    """Residual quantization: each stage quantizes what the previous stages left."""

    Params = ResidualParams
    small_config = {"stages": 2, "quantizer_params": {"codebook_size": 8}, "dim": 16}

    def reduction(self) -> str:
        return self.params.stage_loss

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        residual, total, outputs = z, torch.zeros_like(z), []
        for i in range(self.params.stages):
            out = self.component(i).quantize_tokens(residual)
            outputs.append(out)
            total = total + out.z_q
            residual = residual - out.z_q.detach()
        if self.params.gradient == "straight_through":
            total = z + (total - z).detach()
        loss, stats = self.combine(outputs)
        return QuantizerOutput(total, self.stacked_indices(outputs), loss, stats)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        columns = self.index_columns(indices)
        total = self.component(0).decode_tokens(columns[0])
        for i in range(1, len(columns)):
            total = total + self.component(i).decode_tokens(columns[i])
        return total


class ProductParams(CompositeParams):
    parts: pydantic.PositiveInt = 2

    def components(self) -> int:
        return self.parts

    def inner_dim(self) -> int:
        return self.dim // self.parts

    @pydantic.model_validator(mode="before")
    @classmethod
    def _parts_divide_dim(cls, values: Any) -> Any:
        if isinstance(values, dict):
            dim, parts = values.get("dim", 128), values.get("parts", 2)
            if isinstance(dim, int) and isinstance(parts, int) and parts > 0 and dim % parts:
                raise ValueError(f"parts={parts} does not divide dim={dim}; use a divisor of {dim}")
        return values


@register_quantizer("product")
class ProductQuantizer(CompositeQuantizer):
    """Product quantization: the channels split into parts, each quantized on its own."""

    Params = ProductParams
    small_config = {
        "parts": 2,
        "quantizer": "vanilla",
        "quantizer_params": {"codebook_size": 8},
        "dim": 16,
    }
    loss_reduction = "mean"

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        pieces = z.split(self.params.inner_dim(), dim=1)
        outputs = [self.component(i).quantize_tokens(x) for i, x in enumerate(pieces)]
        loss, stats = self.combine(outputs)
        z_q = torch.cat([out.z_q for out in outputs], dim=1)
        return QuantizerOutput(z_q, self.stacked_indices(outputs), loss, stats)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        columns = self.index_columns(indices)
        return torch.cat([self.component(i).decode_tokens(c) for i, c in enumerate(columns)], 1)
