"""The one interface every quantizer implements, its registry, and the machinery they share.

A quantizer maps a channel-first feature map `(B, dim, H, W)` to a `QuantizerOutput`. Subclasses
implement `quantize_tokens` on flattened float32 tokens `(N, dim)`; the base class handles the
layout, turns autocast off (distances, argmin and losses are always float32) and validates
parameters, so that every error names the quantizer, the field, the value and what is allowed.

What a quantizer can do beyond quantizing is asked of it, never guessed from its name: its
group layout (`independent_groups`, `code_groups`, `group_statistics`, `group_biases`),
whether it builds its codebook from data before training (`initialises_from_data`,
`init_from_data`) and whether it can resample or extend its codebook after training
(`resamplable`, `resample`, `extend`). The base class answers "cannot" for each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.bounded import check_fits
from vqbench.errors import VQBenchError
from vqbench.estimator import ESTIMATORS, Estimator, create_estimator
from vqbench.params import PluginParams, validate_params
from vqbench.registry import Registry
from vqbench.search import nearest_code


class QuantizerParams(PluginParams):
    """Declared parameters of a quantizer. Subclasses add fields with defaults and constraints.

    `estimator` names the gradient estimator (`vqbench list` shows them) and `estimator_params`
    its parameters; implicit quantizers (FSQ, LFQ) take `ste` only.

    `recipe` chooses the loss weights a parameter left unset takes: `reference` (default), the
    method's own code (the field defaults, then what the estimator's method asks of the
    quantizer, e.g. DiVeQ's no auxiliary loss), or `shared`, codebook 1.0 and commitment 0.25
    wherever the method has those terms (`shared_recipe` lists the fields that change). A
    value given explicitly always wins. `harmonised` is the old name of `shared`.
    """

    estimator: str = "ste"
    estimator_params: dict[str, Any] = {}
    recipe: Literal["reference", "shared"] = "reference"

    #: Field values of the `shared` recipe that differ from the (reference) field defaults.
    shared_recipe: ClassVar[dict[str, Any]] = {}

    @pydantic.model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, values: Any) -> Any:
        """Fill the fields left unset with the chosen recipe's values (explicit values win)."""
        if not isinstance(values, dict):
            return values
        if values.get("recipe") == "harmonised":
            values = {**values, "recipe": "shared"}
        recipe = values.get("recipe", "reference")
        defaults = dict(cls.shared_recipe) if recipe == "shared" else {}
        estimator = values.get("estimator", "ste")
        if recipe == "reference" and isinstance(estimator, str) and estimator in ESTIMATORS.names():
            defaults.update(ESTIMATORS.get(estimator).quantizer_defaults())
        unset = {k: v for k, v in defaults.items() if k in cls.model_fields and k not in values}
        return {**values, **unset}

    def lookup_bytes(self) -> int:
        """Bytes of the largest tensor the codebook needs; checked before anything is allocated."""
        return 0


@dataclass
class QuantizerOutput:
    """What `Quantizer.forward` returns.

    z_q: the quantized features, `(B, dim, H, W)` from `forward` (`(N, dim)` from
        `quantize_tokens`); its value is the code, its gradient reaches the input.
    indices: int64 code indices, `(B, H, W)` (`(N,)` from `quantize_tokens`); a composite of D
        stages or parts gives `(B, H, W, D)` (`(N, D)`), see `Quantizer.index_sizes`.
    loss: scalar, already weighted; zero where the quantizer has none.
    stats: detached scalars (e.g. the codebook and commitment terms) for logging.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


#: Parameters that size a codebook, named in the error when it cannot fit.
SIZE_PARAMS = ("codebook_size", "levels", "dim", "lookup_dim", "groups", "stages", "parts")


def check_codebook_fits(
    name: str, params: QuantizerParams, what: str | None = None, device: object = None
) -> None:
    """Refuse parameters whose codebook (`lookup_bytes`) passes the memory available (on
    `device`, default the host), before anything is allocated; `what` names the size typed
    (default: the sizing parameters)."""
    if what is None:
        given = params.model_dump()
        what = f"{name} with " + ", ".join(f"{k}={given[k]}" for k in SIZE_PARAMS if k in given)
    check_fits(what, params.lookup_bytes(), "use a smaller codebook_size or dim", device)


class Quantizer(nn.Module):
    """Base class of every quantizer.

    Subclasses declare `Params` (a `QuantizerParams` model) and implement `quantize_tokens`
    and `decode_tokens`; explicit-codebook quantizers also implement `codebook`.
    """

    Params: ClassVar[type[QuantizerParams]] = QuantizerParams
    #: Registry name, set by `register_quantizer`.
    name: ClassVar[str] = "quantizer"
    #: True when the quantizer looks codes up in an explicit `(K, d)` table.
    explicit_codebook: ClassVar[bool] = True
    #: A small, fast configuration (keyword parameters) that the shared tests build every
    #: registered quantizer with (`tests/helpers.py` reads it from the registry); a plugin
    #: declares one so that the interface and engine tests cover it.
    small_config: ClassVar[dict[str, Any] | None] = None

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = self.validate_params(**params)
        self.estimator = self.build_estimator()

    # ---- parameters ---------------------------------------------------------------------
    @classmethod
    def validate_params(cls, **params: Any) -> QuantizerParams:
        """Validate keyword parameters; raise `VQBenchError` with one line on bad input."""
        validated = validate_params(cls.name, cls.Params, params)
        check_codebook_fits(cls.name, validated)
        return validated

    @classmethod
    def check_params(cls, **params: Any) -> QuantizerParams:
        """Validate parameters and the estimator they name, allocating nothing."""
        validated = cls.validate_params(**params)
        cls._check_estimator_params(validated)
        return validated

    @classmethod
    def _check_estimator_params(cls, validated: QuantizerParams) -> pydantic.BaseModel:
        cls._check_estimator_supported(validated)
        try:
            estimator = ESTIMATORS.get(validated.estimator)
            return validate_params(estimator.name, estimator.Params, validated.estimator_params)
        except VQBenchError as err:
            raise VQBenchError(f"{cls.name}.estimator: {err}") from None

    @classmethod
    def resolved_params(cls, **params: Any) -> dict[str, Any]:
        """The parameters with every default filled in, the recipe's and the estimator's
        included, as plain data: what decides the quantizer, however the config spelled it."""
        validated = cls.validate_params(**params)
        resolved = validated.model_dump(mode="json")
        resolved["estimator_params"] = cls._check_estimator_params(validated).model_dump(
            mode="json"
        )
        return resolved

    @classmethod
    def _check_estimator_supported(cls, p: QuantizerParams) -> None:
        if not cls.explicit_codebook and p.estimator != "ste":
            raise VQBenchError(
                f"{cls.name}.estimator='{p.estimator}' is not supported: implicit-codebook "
                f"quantizers take 'ste' only; drop the estimator or use an explicit codebook"
            )

    def build_estimator(self) -> Estimator:
        """The gradient estimator named by the parameters (implicit quantizers: `ste` only)."""
        self._check_estimator_supported(self.params)
        try:
            return create_estimator(self.params.estimator, **self.params.estimator_params)
        except VQBenchError as err:
            raise VQBenchError(f"{self.name}.estimator: {err}") from None

    @property
    def codebook_size(self) -> int:
        """Number of distinct codes (for a composite, the product of `index_sizes()`)."""
        return int(self.params.codebook_size)

    @classmethod
    def codebook_kind(cls) -> str:
        """How `vqbench list` describes the codebook: explicit, implicit (or composite)."""
        return "explicit" if cls.explicit_codebook else "implicit"

    @property
    def dim(self) -> int:
        """Channels of the feature map the quantizer takes and returns."""
        return int(self.params.dim)

    # ---- the interface --------------------------------------------------------------------
    def codebook(self) -> torch.Tensor | None:
        """The explicit `(codebook_size, lookup_dim)` codes used for the lookup, or None."""
        return None

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:  # pragma: no cover
        """Quantize float32 tokens `(N, dim)`."""
        raise NotImplementedError

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """Features `(N, dim)` for flat indices `(N,)`."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise VQBenchError(
                f"{self.name}: expected a feature map (B, {self.dim}, H, W), got "
                f"{tuple(z.shape)}; match the model's z_channels to the quantizer's dim"
            )
        b, _, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            tokens = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
            out = self.quantize_tokens(tokens)
        z_q = out.z_q.reshape(b, h, w, self.dim).permute(0, 3, 1, 2).to(z.dtype)
        stats = {k: v.detach() for k, v in out.stats.items()}
        indices = out.indices.reshape(b, h, w, *out.indices.shape[1:])  # (B, H, W[, D])
        return QuantizerOutput(z_q, indices, out.loss, stats)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """`(B, H, W)` indices (`(B, H, W, D)` for a composite) to `(B, dim, H, W)` features;
        equals `forward(z).z_q` in value."""
        b, h, w = indices.shape[:3]
        with torch.autocast(device_type=indices.device.type, enabled=False):
            tokens = self.decode_tokens(indices.reshape(b * h * w, *indices.shape[3:]).long())
        return tokens.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)

    # ---- capabilities (asked of the quantizer; the defaults say "cannot") ------------------
    #: True when `init_from_data` must see training images before step 0 (VQGAN-LC's k-means).
    initialises_from_data: ClassVar[bool] = False
    #: True when `resample` and `extend` can change the codebook after training (Group-VQ).
    resamplable: ClassVar[bool] = False

    def independent_groups(self) -> int:
        """How many groups of codes are updated independently (the paper's 'Group' column).

        A free codebook updates every code on its own (`codebook_size`); codes generated by
        one shared map form one group; an implicit codebook, fixed, has none (0).
        """
        return self.codebook_size if self.explicit_codebook else 0

    def index_sizes(self) -> list[int]:
        """How many values each component of a code index takes.

        `[codebook_size]` for a quantizer that emits one index per position (`forward` gives
        indices `(B, H, W)`). A composite of D stages or parts (residual, product) returns the
        D sizes and gives indices `(B, H, W, D)`; its `codebook_size` is their product. Usage
        and priors over tokens read this instead of assuming one index per position.
        """
        return [self.codebook_size]

    def code_groups(self) -> torch.Tensor | None:
        """`(codebook_size,)` group id of every code, or None without a group layout."""
        return None

    def group_statistics(self, counts: torch.Tensor | None = None) -> dict[str, Any] | None:
        """Per-group statistics of the codes (Group-VQ Fig. 5), or None without groups."""
        return None

    def group_biases(self) -> torch.Tensor | None:
        """`(groups, dim)` per-group biases (Group-VQ Fig. 9), or None."""
        return None

    def after_optimizer_step(self) -> None:
        """Called by the trainer once per optimiser step, after it: codebook upkeep that must
        see the whole global batch (every micro-batch and process), such as EMA statistics
        or dead-code restart. Nothing by default. Outside the trainer, call it where you
        call `optimizer.step()`."""

    def codebook_replaced(self) -> bool:
        """True once after `after_optimizer_step` replaced the codebook wholesale (SF-DiVeQ's
        initialisation from pooled latents mid-training), so that the trainer restarts the
        model EMA's copy of the quantizer from it instead of averaging across the jump.
        Reading it clears it. Never, by default."""
        return False

    def init_from_data(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]
    ) -> dict[str, Any] | None:
        """Build the codebook from `(images, labels or None)` batches of training images, in a
        seeded, class-balanced random order; returns what was done."""
        return None

    def resample(self, new_size: int, seed: int = 1) -> Quantizer:
        """A copy whose codebook is `new_size` freshly drawn codes (Group-VQ Algorithm 2)."""
        raise self._cannot("resample")

    def extend(self, new_size: int, seed: int = 1) -> Quantizer:
        """A copy that keeps every code and adds new ones up to `new_size` (Algorithm 2)."""
        raise self._cannot("extend")

    def _cannot(self, operation: str) -> VQBenchError:
        return VQBenchError(
            f"quantizer '{self.name}' cannot {operation} its codebook: only quantizers that "
            f"generate codes from a sampled core can (see `vqbench list`)"
        )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())


def check_quantizer_class(cls: type[Quantizer], name: str) -> None:
    """A quantizer's `Params` fits what it is: a `QuantizerParams` model, and for an
    explicit-codebook quantizer an `ExplicitCodebookParams` (codebook_size, dim, beta, ...)."""
    params = getattr(cls, "Params", None)
    base = ExplicitCodebookParams if issubclass(cls, ExplicitCodebookQuantizer) else QuantizerParams
    if not (isinstance(params, type) and issubclass(params, base)):
        got = params.__mro__[1].__name__ if isinstance(params, type) else type(params).__name__
        raise VQBenchError(
            f"register_quantizer('{name}'): {cls.__name__}.Params derives from {got}; "
            f"derive it from vqbench.quantizer.{base.__name__}"
            + (" (codebook_size, dim, beta, ...)" if base is ExplicitCodebookParams else "")
        )


QUANTIZERS = Registry("quantizer", "vqbench.quantizers", Quantizer, check_quantizer_class)


def register_quantizer(name: str, *, override: bool = False):
    """Class decorator that registers a `Quantizer` subclass under `name`."""
    return QUANTIZERS.register(name, override=override)


def list_quantizers() -> list[str]:
    """Registered quantizer names, sorted."""
    return QUANTIZERS.names()


def get_quantizer_class(name: str) -> type[Quantizer]:
    """The class registered under `name`; unknown names fail with a suggestion."""
    return QUANTIZERS.get(name)


def create_quantizer(name: str, **params: Any) -> Quantizer:
    """Build the quantizer registered under `name` with validated `params`."""
    return QUANTIZERS.create(name, **params)


def seeded_normal(shape: tuple[int, ...], seed: int, std: float = 1.0) -> torch.Tensor:
    """N(0, std^2) entries drawn from their own generator, independent of the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * std


# ---- shared pieces of explicit-codebook quantizers ------------------------------------------
def codebook_and_commitment_loss(
    z: torch.Tensor, q: torch.Tensor, *, codebook_weight: float, beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VQ-VAE loss `codebook_weight * ||q - sg(z)||^2 + beta * ||sg(q) - z||^2` (means).

    The codebook term trains the codes (or what generates them); the commitment term pulls the
    encoder towards its code. Returns the weighted sum and the two unweighted terms.
    """
    codebook_term = F.mse_loss(q, z.detach())
    commitment_term = F.mse_loss(z, q.detach())
    loss = codebook_weight * codebook_term + beta * commitment_term
    return loss, {"codebook": codebook_term, "commitment": commitment_term}


class ScalarLevelsParams(QuantizerParams):
    """Parameters of the scalar-grid quantizers (FSQ and its relatives): `levels[i]` values on
    channel i of `len(levels)` projected channels, an implicit codebook of `prod(levels)` codes
    (`codebook_size`, when given, must agree)."""

    levels: list[int] = [8, 8, 8, 5, 5, 5]
    dim: pydantic.PositiveInt = 128
    codebook_size: pydantic.PositiveInt | None = None

    @pydantic.field_validator("levels")
    @classmethod
    def _levels_at_least_two(cls, levels: list[int]) -> list[int]:
        if not levels or any(level < 2 for level in levels):
            raise ValueError("every level must be an integer >= 2, e.g. [8, 8, 8, 5, 5, 5]")
        return levels

    @pydantic.model_validator(mode="after")
    def _size_matches_levels(self) -> ScalarLevelsParams:
        product = math.prod(self.levels)
        if self.codebook_size is not None and self.codebook_size != product:
            raise ValueError(
                f"codebook_size={self.codebook_size} disagrees with levels={self.levels} "
                f"(product {product}); drop codebook_size or change the levels"
            )
        return self


class ExplicitCodebookParams(QuantizerParams):
    """Parameters every explicit-codebook quantizer shares (SPEC section 2 weights).

    `search_precision` is the arithmetic of the nearest-code distances: `fp32`, or `tf32` /
    `bf16` (tensor cores on CUDA) certified to give the same indices as `fp32`
    (`vqbench.search`).
    """

    codebook_size: pydantic.PositiveInt = 65536
    dim: pydantic.PositiveInt = 128
    beta: pydantic.NonNegativeFloat = 0.25
    codebook_weight: pydantic.NonNegativeFloat = 1.0
    search_precision: Literal["fp32", "tf32", "bf16"] = "fp32"

    def lookup_bytes(self) -> int:
        # The lookup codes in float32, plus what generates them (about as large again).
        return 2 * 4 * self.codebook_size * self.dim


class ExplicitCodebookQuantizer(Quantizer):
    """A quantizer that picks, for each token, the nearest row of `codebook()`.

    Subclasses provide `codebook()`; the lookup, the loss and the gradient estimator (`ste` by
    default, any registered estimator by name) are shared.
    """

    explicit_codebook: ClassVar[bool] = True
    Params: ClassVar[type[QuantizerParams]] = ExplicitCodebookParams

    def lookup(self, z: torch.Tensor, codes: torch.Tensor) -> QuantizerOutput:
        """Nearest code for each token of `z` (both in the lookup space), loss, estimator."""
        indices = nearest_code(z, codes, precision=self.params.search_precision)
        q = F.embedding(indices, codes)
        loss, terms = codebook_and_commitment_loss(
            z, q, codebook_weight=self.params.codebook_weight, beta=self.params.beta
        )
        return QuantizerOutput(self.estimator(z, q), indices, loss, terms)

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        return self.lookup(z, self.codebook())

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook())
