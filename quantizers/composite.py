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

* `residual` with `implicit_codebook: mlp` (QINCo, Huijben et al. 2024, arXiv 2401.14732;
  vector-quantize-pytorch's `ResidualVQ(implicit_neural_codebook=True)`): stage i >= 2
  searches, per token, the codes `f_i(c_k, x_hat)` that a small network predicts from its
  stage's base codebook `c_k` and the partial reconstruction `x_hat = sum_{j<i} zq_j`.
  `mlp_style: library` (default: the library's `MLP`, the reference for a tokenizer, since
  QINCo's own code trains a standalone compressor without an encoder gradient):
  `f = h_D(...h_1(W_in [x_hat, c] + b_in))`, `h(y) = y + W_2 silu(W_1 y + b_1) + b_2`, depth
  4, hidden `dim`. `mlp_style: qinco` is QINCo's `QINCoStep` (facebookresearch/Qinco
  `qinco_v1/model_qinco.py`): `y = c + W [c, x_hat] + b`, then `y + W_2 relu(W_1 y)`
  (bias-free) blocks. As QINCo's `encode`, the search over every (token, code) pair runs
  without a gradient, in blocks, and the chosen code is computed again with one; the
  gradient is the library's (it reaches the chosen code, the network and, through
  `x_hat`, the input), with `(N, K, dim)` held one block at a time. Under `recipe:
  reference` the unset fields take the library's setting: `vanilla` stages with codebook
  and commitment weights 1 and 1 (its one undetached `mse(q, r)`), `gradient: sum`,
  `stage_loss: sum`, and the base codebooks drawn as the library draws them
  (`implicit_init: library`; `stage` keeps the stage quantizer's own). Not offered: the
  library's cosine-similarity codebooks (`l2norm_output`); QINCo's initialisation from a
  trained RQ (faiss) and its loss, the reconstruction error after every stage with the
  gradient through `x_hat` into earlier stages (QINCo compresses fixed vectors; here each
  stage learns its residual and the encoder learns through the estimator, as the library);
  the stages' dead-code restart does not see implicit stages' usage.

Stats are reduced like the losses. `after_optimizer_step` and `init_from_data` reach every
inner quantizer (the images are replayed to each, so a composite of data-initialised
quantizers holds them in memory). Not offered: the library's quantize dropout (its dropped
stages emit index -1) and beam search.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.errors import VQBenchError
from vqbench.quantizer import (
    ExplicitCodebookQuantizer,
    Quantizer,
    QuantizerOutput,
    QuantizerParams,
    codebook_and_commitment_loss,
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


#: What `implicit_codebook: mlp` sets under `recipe: reference` where a field is left unset
#: (vector-quantize-pytorch's `ResidualVQ(implicit_neural_codebook=True)`).
IMPLICIT_RECIPE = {
    "quantizer": "vanilla",
    "gradient": "sum",
    "stage_loss": "sum",
    "shared": False,
}
IMPLICIT_STAGE_RECIPE = {"codebook_weight": 1.0, "beta": 1.0}


class ResidualParams(CompositeParams):
    quantizer: str = "ema"
    shared: bool = True
    stages: pydantic.PositiveInt = 2
    gradient: Literal["sum", "straight_through"] = "straight_through"
    stage_loss: Literal["mean", "sum"] = "mean"
    implicit_codebook: Literal["none", "mlp"] = "none"
    mlp_style: Literal["library", "qinco"] = "library"
    mlp_depth: pydantic.NonNegativeInt = 4
    mlp_hidden: pydantic.PositiveInt | None = None  # default: dim
    implicit_init: Literal["library", "stage"] = "library"

    def components(self) -> int:
        return self.stages

    def inner_kwargs(self) -> dict[str, Any]:
        """The composite's, plus RQ-VAE's EMA codebook under the reference recipe (values in
        `quantizer_params` win)."""
        kwargs = super().inner_kwargs()
        if self.quantizer == "ema" and kwargs["recipe"] == "reference":
            kwargs = {**RQ_VAE_EMA, **kwargs}
        return kwargs

    @pydantic.model_validator(mode="before")
    @classmethod
    def _implicit_recipe(cls, values: Any) -> Any:
        """`implicit_codebook: mlp` under `recipe: reference`: the library's setting for the
        fields left unset (explicit values win)."""
        if not isinstance(values, dict) or values.get("implicit_codebook") != "mlp":
            return values
        if values.get("recipe", "reference") != "reference":
            return values
        filled = {**IMPLICIT_RECIPE, **values}
        if filled["quantizer"] == IMPLICIT_RECIPE["quantizer"]:  # the library's stage
            inner = dict(filled.get("quantizer_params", {"codebook_size": 256}))
            filled["quantizer_params"] = {**IMPLICIT_STAGE_RECIPE, **inner}
        return filled

    @pydantic.model_validator(mode="after")
    def _implicit_needs_trained_codes(self) -> ResidualParams:
        if self.implicit_codebook == "none":
            return self
        if self.shared:
            raise ValueError(
                "implicit_codebook: mlp predicts each stage's codes with its own network; "
                "use shared: false"
            )
        if not issubclass(get_quantizer_class(self.quantizer), ExplicitCodebookQuantizer):
            raise ValueError(
                f"implicit_codebook: mlp needs stages with an explicit codebook to condition, "
                f"not '{self.quantizer}'; use quantizer: vanilla"
            )
        return self

    def lookup_bytes(self) -> int:
        # The implicit search holds one block of (tokens x codes x dim) candidates.
        extra = 4 * IMPLICIT_BLOCK_ELEMENTS * 3 if self.implicit_codebook == "mlp" else 0
        return super().lookup_bytes() + extra


#: Largest (tokens x codes x channels) block of predicted codes held at once by the search.
IMPLICIT_BLOCK_ELEMENTS = 1 << 24


class LibraryMLP(nn.Module):
    """vector-quantize-pytorch's implicit-codebook `MLP`: `proj_in([condition, code])`, then
    `depth` residual blocks `y + Linear(silu(Linear(y)))`."""

    def __init__(self, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(2 * dim, dim)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))
            for _ in range(depth)
        )

    def forward(self, codes: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Codes `(..., dim)` conditioned on `condition` broadcast to the same shape."""
        x = self.proj_in(torch.cat(torch.broadcast_tensors(condition, codes), dim=-1))
        for layer in self.layers:
            x = layer(x) + x
        return x


class QINCoMLP(nn.Module):
    """QINCo's `QINCoStep` network: `y = c + MLPconcat([c, x_hat])`, then `depth` bias-free
    residual blocks `y + Linear(relu(Linear(y)))` (Huijben et al. 2024, Fig. 2)."""

    def __init__(self, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.concat = nn.Linear(2 * dim, dim)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False)
            )
            for _ in range(depth)
        )

    def forward(self, codes: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        codes, condition = torch.broadcast_tensors(codes, condition)
        y = codes + self.concat(torch.cat((codes, condition), dim=-1))
        for layer in self.layers:
            y = y + layer(y)
        return y


IMPLICIT_MLPS = {"library": LibraryMLP, "qinco": QINCoMLP}


@register_quantizer("residual")
class ResidualQuantizer(CompositeQuantizer):
    """Residual quantization: each stage quantizes what the previous stages left."""

    Params = ResidualParams
    small_config = {"stages": 2, "quantizer_params": {"codebook_size": 8}, "dim": 16}

    def reduction(self) -> str:
        return self.params.stage_loss

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self.mlps = nn.ModuleList()
        if p.implicit_codebook == "mlp":
            mlp = IMPLICIT_MLPS[p.mlp_style]
            hidden = p.mlp_hidden or p.dim
            self.mlps.extend(mlp(p.dim, hidden, p.mlp_depth) for _ in range(p.stages - 1))
            for stage in self.quantizers:
                self.init_base_codebook(stage)

    def init_base_codebook(self, stage: Quantizer) -> None:
        """The library's `uniform_init` (`kaiming_uniform_` of its `(1, K, d)` codebook:
        U(-b, b), `b = sqrt(6 / (K d))`) unless `implicit_init: stage` keeps the stage's own."""
        codes = stage.codebook()
        if not isinstance(codes, nn.Parameter):
            raise VQBenchError(
                f"residual: implicit_codebook: mlp trains the stages' codebooks by gradient; "
                f"'{stage.name}' has no trained codebook parameter; use quantizer: vanilla"
            )
        if self.params.implicit_init == "library":
            bound = math.sqrt(6.0 / codes.numel())
            with torch.no_grad():
                codes.uniform_(-bound, bound)

    def independent_groups(self) -> int:
        """An implicit stage's codes come from one network: one group each."""
        if not len(self.mlps):
            return super().independent_groups()
        return self.quantizers[0].independent_groups() + len(self.mlps)

    def implicit_stage(self, i: int, residual: torch.Tensor, condition: torch.Tensor):
        """Stage `i >= 1` of an implicit codebook: the nearest of the codes predicted for each
        token (searched without a gradient, in blocks), then the chosen one with a gradient."""
        stage, mlp = self.component(i), self.mlps[i - 1]
        base = stage.codebook()
        indices = implicit_search(mlp, base, residual.detach(), condition.detach())
        q = mlp(F.embedding(indices, base), condition)
        loss, terms = codebook_and_commitment_loss(
            residual, q, codebook_weight=stage.params.codebook_weight, beta=stage.params.beta
        )
        return QuantizerOutput(stage.estimator(residual, q), indices, loss, terms)

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        residual, total, outputs = z, torch.zeros_like(z), []
        for i in range(self.params.stages):
            if i and len(self.mlps):
                out = self.implicit_stage(i, residual, total)
            else:
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
            codes = self.component(i).decode_tokens(columns[i])
            total = total + (self.mlps[i - 1](codes, total) if len(self.mlps) else codes)
        return total


@torch.no_grad()
def implicit_search(
    mlp: nn.Module, base: torch.Tensor, residual: torch.Tensor, condition: torch.Tensor
) -> torch.Tensor:
    """`argmin_k ||r_n - f(c_k, x_hat_n)||^2` for every token `n`, holding at most
    `IMPLICIT_BLOCK_ELEMENTS` predicted code entries at once (QINCo's exhaustive `encode`)."""
    k, d = base.shape
    rows = max(1, IMPLICIT_BLOCK_ELEMENTS // (k * d))
    chosen = []
    for r, c in zip(residual.split(rows), condition.split(rows), strict=True):
        codes = mlp(base.unsqueeze(0), c.unsqueeze(1))  # (rows, K, d)
        chosen.append((codes - r.unsqueeze(1)).square().sum(-1).argmin(1))
    return torch.cat(chosen)


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
