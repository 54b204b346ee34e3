"""Run configuration: one autoencoder + one quantizer + one dataset + one optimiser setting.

Read with `yaml.safe_load` only (no YAML tag can build a Python object), validated by pydantic
before anything is written; every error is one line naming the file, the field and the fix.
The defaults are the paper's protocol (SPEC section 1); the resolved config (every default
filled in) is what a run directory records and what its fingerprint is computed from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from vqbench.errors import VQBenchError, did_you_mean


class Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class DataConfig(Section):
    kind: Literal["embedded", "imagefolder"] = "embedded"
    root: str | None = None
    val_root: str | None = None
    file_list: str | None = None
    val_file_list: str | None = None
    resolution: PositiveInt = 128
    train_size: PositiveInt | None = None  # embedded only: number of crops
    val_size: PositiveInt | None = None
    workers: NonNegativeInt = 0

    @pydantic.model_validator(mode="after")
    def _folders_given(self) -> DataConfig:
        if self.kind == "imagefolder" and (self.root is None or self.val_root is None):
            raise ValueError(
                "data.kind 'imagefolder' needs data.root and data.val_root "
                "(folders of training and validation images)"
            )
        return self


class ModelConfig(Section):
    preset: Literal["vqgan", "taming", "tiny", "vit_vqgan"] = "vqgan"
    overrides: dict[str, Any] = {}


class QuantizerConfig(Section):
    name: str = "simvq"
    params: dict[str, Any] = {}


class LossConfig(Section):
    perceptual_weight: NonNegativeFloat = 1.0
    perceptual_net: Literal["vgg", "alex"] = "vgg"
    perceptual_weights: str | None = None
    gan_weight: NonNegativeFloat = 0.1
    adaptive_gan_weight: bool = False
    disc_start: NonNegativeInt = 0
    quantizer_weight: NonNegativeFloat = 1.0


class OptimConfig(Section):
    lr: PositiveFloat = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    disc_lr: PositiveFloat | None = None


class TrainConfig(Section):
    epochs: PositiveInt | None = 50
    steps: PositiveInt | None = None
    batch_size: PositiveInt = 256  # global, over all processes and accumulation
    micro_batch_size: PositiveInt | None = None  # per process and step; default: batch / world
    ema_decay: float = pydantic.Field(0.999, ge=0.0, lt=1.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    channels_last: bool = False
    log_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 1000
    keep_checkpoints: PositiveInt = 2
    val_every_epoch: bool = False

    @pydantic.model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        if self.steps is not None:
            self.epochs = None
        return self


class EvalConfig(Section):
    metrics: list[Literal["usage", "psnr", "ssim", "lpips", "fid"]] = [
        "usage",
        "psnr",
        "ssim",
        "lpips",
        "fid",
    ]
    batch_size: PositiveInt = 64
    use_ema: bool = True
    lpips_net: Literal["vgg", "alex"] = "vgg"
    inception_weights: str | None = None


class RunConfig(Section):
    name: str = "run"
    seed: NonNegativeInt = 0
    plugins: list[str] = []
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    quantizer: QuantizerConfig = QuantizerConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @pydantic.model_validator(mode="after")
    def _patchgan_fits(self) -> RunConfig:
        if self.loss.gan_weight > 0 and self.data.resolution < 32:
            raise ValueError(
                f"loss.gan_weight={self.loss.gan_weight} needs data.resolution >= 32 "
                f"for the 3-layer PatchGAN (got {self.data.resolution}); raise the "
                f"resolution or set loss.gan_weight: 0"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """Every field with its value (defaults included), as plain data."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """Hash of what determines the trained weights (the name and eval settings excluded)."""
        data = self.resolved()
        for key in ("name", "eval"):
            data.pop(key)
        data["train"] = {
            k: v
            for k, v in data["train"].items()
            if k not in ("log_every", "checkpoint_every", "keep_checkpoints", "val_every_epoch")
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _field_names(model: type[pydantic.BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at `loc` (for 'did you mean')."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def format_config_error(
    source: str, err: pydantic.ValidationError, model: type[pydantic.BaseModel] = RunConfig
) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc)
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _field_names(model, loc))
        return f"{source}: unknown key '{where}';{hint or ' remove it'}"
    msg = first["msg"].removeprefix("Value error, ")
    if not loc:
        return f"{source}: {msg}"
    if isinstance(first.get("input"), dict):  # a check across fields: the message names them
        return f"{source}: {where}: {msg}"
    return f"{source}: {where}={first.get('input')!r} is invalid: {msg}"


def check_quantizer(config: RunConfig, source: str) -> None:
    """Validate the quantizer name and parameters (and its estimator) without building it."""
    from vqbench.registry import get_quantizer_class, load_plugin

    for module in config.plugins:
        load_plugin(module)
    try:
        get_quantizer_class(config.quantizer.name).check_params(**config.quantizer.params)
    except VQBenchError as err:
        raise VQBenchError(f"{source}: quantizer: {err}") from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise VQBenchError(f"config file '{path}' does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise VQBenchError(
            f"{path}: invalid YAML{where}: {problem}; fix the syntax "
            f"(only plain YAML is read, no tags)"
        ) from None
    if data is None:
        raise VQBenchError(f"{path}: the file is empty; write a mapping of settings")
    if not isinstance(data, dict):
        raise VQBenchError(
            f"{path}: the top level must be a mapping (key: value), not a {type(data).__name__}"
        )
    return data


def parse_run_config(data: dict[str, Any], source: str) -> RunConfig:
    try:
        config = RunConfig(**data)
    except pydantic.ValidationError as err:
        raise VQBenchError(format_config_error(source, err)) from None
    check_quantizer(config, source)
    return config


def load_run_config(path: str | Path) -> RunConfig:
    return parse_run_config(read_yaml(path), str(path))
