"""Run configuration: one autoencoder + one quantizer + one dataset + one optimiser setting.

Read with `yaml.safe_load` only (no YAML tag can build a Python object), validated by pydantic
before anything is written; every error is one line naming the file, the field and the fix.
The defaults are the paper's protocol (SPEC section 1); the resolved config (every default
filled in) is what a run directory records and what its fingerprints are computed from:

* `fingerprint()`: what determines the trained weights (two runs with the same fingerprint
  train the same model); it leaves out the name, the evaluation and how often to log;
* `settings_fingerprint()`: the same without the quantizer and the seed, i.e. equal across
  the rows of a fair comparison.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from vqbench.errors import VQBenchError, did_you_mean
from vqbench.models import PRESETS, check_resolution, preset_downsampling
from vqbench.params import format_validation_error
from vqbench.quantizer import get_quantizer_class
from vqbench.registry import load_plugin

#: Keys (dotted) that do not change the trained weights: left out of both fingerprints.
NOT_IN_FINGERPRINT = (
    "name",
    "eval",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.val_every_epoch",
    "train.tensorboard",
    "train.time_quantizer",
)
#: Further keys left out of the settings fingerprint: what a comparison varies.
NOT_IN_SETTINGS = ("quantizer", "seed", "plugins")

#: A run or suite name: letters, digits, `_`, `-`, `.` (no path separators, no `..`).
NAME_PATTERN = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9_.-]+$")


def check_name(name: str, what: str, *, parts: bool = False) -> str:
    """`name` is safe as a folder name (with `parts`, each `/`-separated part is)."""
    pieces = name.split("/") if parts else [name]
    if not name or not all(NAME_PATTERN.match(p) for p in pieces):
        raise ValueError(
            f"{what} {name!r} must be made of letters, digits, '_', '-' and '.'"
            + (" (parts separated by '/')" if parts else "")
            + ", and not be '.' or '..': it names folders"
        )
    return name


#: An Adam beta: in [0, 1).
Beta = Annotated[float, pydantic.Field(ge=0.0, lt=1.0)]


class Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)


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
    preset: str = "vqgan"
    overrides: dict[str, Any] = {}

    @pydantic.field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(
                f"unknown preset;{did_you_mean(preset, PRESETS) or ''} presets: "
                f"{', '.join(PRESETS)}"
            )
        return preset


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
    # SimVQ's trainer never zeroes the discriminator's gradients after the generator's backward,
    # so its discriminator step uses grad(d_loss) + grad(gan_weight * g_loss) (protocol.md 2.5).
    disc_receives_generator_grad: bool = False


class OptimConfig(Section):
    lr: PositiveFloat = 1e-4
    betas: tuple[Beta, Beta] = (0.5, 0.9)
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
    tensorboard: bool = False  # also log to run_dir/tb/ (TensorBoard event files)
    time_quantizer: bool = False  # log the quantizer's ms per step and share (vqbench.timing)

    @pydantic.field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, on: bool) -> bool:
        if on and importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "needs the tensorboard package: pip install 'vqbench[tensorboard]' (or set it "
                "to false; metrics.jsonl is always written)"
            )
        return on

    @pydantic.model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        if self.steps is not None:
            self.epochs = None
        if self.time_quantizer and self.compile:
            raise ValueError(
                "time_quantizer stamps the quantizer from Python hooks, which torch.compile "
                "would break up; turn off compile or time_quantizer"
            )
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
    paper_batch_size: PositiveInt = 64  # the batches of the paper's batch PSNR and SSIM
    use_ema: bool = True
    lpips_net: Literal["vgg", "alex"] = "vgg"
    lpips_weights: str | None = None  # torchvision's VGG16/AlexNet file (offline use)
    inception_weights: str | None = None  # the FID backend's Inception file (offline use)
    # torch-fidelity (uint8, TF-style resize) or pytorch-fid (float, PyTorch bilinear resize,
    # its own weights: what SimVQ and the paper used).
    fid_backend: Literal["torch-fidelity", "pytorch-fid"] = "torch-fidelity"


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

    @pydantic.field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name, "name", parts=True)

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
        """Hash of what determines the trained weights. Where the plugins are loaded from does
        not (the quantizer's name and parameters do): they hash as an empty list, so that runs
        made before `plugins:` was added keep their fingerprint."""
        return _digest({**self.resolved(), "plugins": []}, NOT_IN_FINGERPRINT, 16)

    def settings_fingerprint(self) -> str:
        """Hash of everything but the quantizer and the seed: equal across a fair block."""
        return _digest(self.resolved(), NOT_IN_FINGERPRINT + NOT_IN_SETTINGS, 12)

    def first_difference(self, recorded: dict[str, Any], exclude: tuple[str, ...] = ()) -> str:
        """The first setting (dotted) that differs from a recorded resolved config, as
        `"optim.lr: 0.0002 there, 0.0001 here"`; '' when none does (or none is recorded)."""
        skip = NOT_IN_FINGERPRINT + ("plugins",) + exclude
        ours, theirs = _flatten(self.resolved()), _flatten(recorded)
        for key in list(ours) + [k for k in theirs if k not in ours]:
            if any(key == s or key.startswith(s + ".") for s in skip):
                continue
            here, there = ours.get(key, "(unset)"), theirs.get(key, "(unset)")
            if here != there:
                return f"{key}: {there!r} there, {here!r} here"
        return ""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values (lists and tuples compare as lists)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): list(data) if isinstance(data, tuple) else data}


def _digest(data: dict[str, Any], exclude: tuple[str, ...], length: int) -> str:
    data = json.loads(json.dumps(data))  # a deep copy of plain data
    for key in exclude:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


def format_config_error(
    source: str, err: pydantic.ValidationError, model: type[pydantic.BaseModel] = RunConfig
) -> str:
    return format_validation_error(source, err, model)


def check_quantizer(config: RunConfig, source: str) -> None:
    """Validate the quantizer name and parameters (and its estimator) without building it."""
    for module in config.plugins:
        load_plugin(module)
    try:
        get_quantizer_class(config.quantizer.name).check_params(**config.quantizer.params)
    except VQBenchError as err:
        raise VQBenchError(f"{source}: quantizer: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (PyYAML keeps the last
    silently, so `lr` written twice would quietly take the second value)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key != "<<":
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise VQBenchError(f"config file '{path}' {what}; check the path")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise VQBenchError(
            f"{path}: not a text file (it is not UTF-8); give a YAML config file"
        ) from None
    except OSError as err:
        raise VQBenchError(f"config file '{path}' cannot be read ({err.strerror})") from None
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


def check_model(config: RunConfig, source: str) -> None:
    """The model overrides exist and the resolution fits the model's downsampling."""
    try:
        factor = preset_downsampling(config.model.preset, **config.model.overrides)
        check_resolution(config.data.resolution, factor)
    except VQBenchError as err:
        raise VQBenchError(f"{source}: {err}") from None


def parse_run_config(data: dict[str, Any], source: str) -> RunConfig:
    try:
        config = RunConfig(**data)
    except pydantic.ValidationError as err:
        raise VQBenchError(format_config_error(source, err)) from None
    check_model(config, source)
    check_quantizer(config, source)
    return config


def load_run_config(path: str | Path) -> RunConfig:
    return parse_run_config(read_yaml(path), str(path))
