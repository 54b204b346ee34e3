"""Run configuration: one autoencoder + one quantizer + one dataset + one optimiser setting.

Read with `yaml.safe_load` only (no YAML tag can build a Python object), within the bounds of
`vqbench.bounded` (size, depth, aliases), validated by pydantic
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

from vqbench.bounded import LIMITS, check_fits, check_yaml, read_text
from vqbench.errors import VQBenchError, did_you_mean
from vqbench.models import PRESETS, check_resolution, preset_downsampling
from vqbench.params import format_validation_error
from vqbench.protocols import DEFAULT_PROTOCOL, get_protocol
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
#: Keys added after runs were recorded: left out of both fingerprints while at their default, so
#: that the fingerprints of earlier runs (and of configs that do not use them) stay the same.
OMITTED_AT_DEFAULT = {
    "optim.schedule": {"kind": "constant", "warmup_steps": 0, "min_lr_ratio": 0.0},
    "data.urls": None,
    "data.val_urls": None,
    "data.shuffle_buffer": 1000,
}
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
    """Where the images come from: `embedded` photos, an `imagefolder`, or `webdataset` shards
    (`urls` / `val_urls`: brace patterns such as `shards/train-{000000..000146}.tar`, read as
    streams shuffled by shard and through a buffer of `shuffle_buffer` samples:
    `vqbench.shards`)."""

    kind: Literal["embedded", "imagefolder", "webdataset"] = "embedded"
    root: str | None = None
    val_root: str | None = None
    file_list: str | None = None
    val_file_list: str | None = None
    resolution: PositiveInt = 128
    train_size: PositiveInt | None = None  # embedded only: number of crops
    val_size: PositiveInt | None = None
    workers: NonNegativeInt = 0  # DataLoader processes (webdataset: decoding threads)
    urls: str | None = None  # webdataset only: the training shards
    val_urls: str | None = None  # webdataset only: the validation shards
    shuffle_buffer: PositiveInt = 1000  # webdataset only: samples in the shuffle buffer

    @pydantic.model_validator(mode="after")
    def _folders_given(self) -> DataConfig:
        if self.kind == "imagefolder" and (self.root is None or self.val_root is None):
            raise ValueError(
                "data.kind 'imagefolder' needs data.root and data.val_root "
                "(folders of training and validation images)"
            )
        if self.kind == "webdataset" and (not self.urls or not self.val_urls):
            raise ValueError(
                "data.kind 'webdataset' needs data.urls and data.val_urls (training and "
                "validation shards, e.g. 'shards/train-{000000..000146}.tar'; write them with "
                "vqbench data shards)"
            )
        if self.kind != "webdataset" and (self.urls or self.val_urls):
            raise ValueError(
                "data.urls and data.val_urls are read with data.kind 'webdataset' only"
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


class ScheduleConfig(Section):
    """The learning rate over training (`vqbench.build.schedule_factor`): `constant` (the
    default, as in taming-transformers and SimVQ), `linear_warmup`, `cosine` (after an
    optional linear warmup, down to `min_lr_ratio` of the rate at the last step), or
    `hold_linear` (FVQ's annealing: warmup, hold, linear decay to `min_lr_ratio`)."""

    kind: Literal["constant", "linear_warmup", "cosine", "hold_linear"] = "constant"
    warmup_steps: NonNegativeInt = 0
    min_lr_ratio: float = pydantic.Field(0.0, ge=0.0, le=1.0)

    @pydantic.model_validator(mode="after")
    def _meaningful(self) -> ScheduleConfig:
        if self.kind == "constant" and (self.warmup_steps or self.min_lr_ratio):
            raise ValueError(
                "a constant schedule has no warmup_steps or min_lr_ratio; use kind "
                "linear_warmup or cosine, or drop them"
            )
        if self.kind == "linear_warmup" and self.warmup_steps == 0:
            raise ValueError("linear_warmup needs warmup_steps > 0 (or use kind constant)")
        return self


class OptimConfig(Section):
    lr: PositiveFloat = 1e-4
    betas: tuple[Beta, Beta] = (0.5, 0.9)
    disc_lr: PositiveFloat | None = None
    schedule: ScheduleConfig = ScheduleConfig()


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
    # torch-fidelity (uint8, TF-style resize), pytorch-fid (float, PyTorch bilinear resize,
    # its own weights: what SimVQ and the paper used) or clean-fid (uint8, in `fid_mode`).
    fid_backend: Literal["torch-fidelity", "pytorch-fid", "clean-fid"] = "torch-fidelity"
    # clean-fid's mode (default clean); the other backends have none.
    fid_mode: Literal["clean", "legacy_tensorflow"] | None = None
    # Reference statistics of the real images (`vqbench fid-stats`, or an ADM reference batch):
    # rFID and the probe's gFID take the real side from it instead of extracting it each time.
    fid_stats: str | None = None
    # The evaluation protocol (`vqbench.protocols`): it fixes the split, image count, resize and
    # crop, and the eval settings above that it names; an explicit setting contradicting it is
    # an error. `eval.json` records its name and version.
    protocol: str = DEFAULT_PROTOCOL

    @pydantic.model_validator(mode="after")
    def _apply_protocol(self) -> EvalConfig:
        """The protocol's settings filled in; an explicit contradicting one is refused."""
        protocol = get_protocol(self.protocol)
        for key, value in protocol.eval_settings().items():
            if key in self.model_fields_set and getattr(self, key) != value:
                raise ValueError(
                    f"{key}: {getattr(self, key)} contradicts protocol {protocol.label}, which "
                    f"sets {value}; drop eval.{key} or choose another eval.protocol"
                )
            setattr(self, key, value)
        if self.fid_backend == "clean-fid" and self.fid_mode is None:
            self.fid_mode = "clean"
        if self.fid_backend != "clean-fid" and self.fid_mode is not None:
            raise ValueError(
                f"fid_mode is clean-fid's; drop it or set fid_backend: clean-fid "
                f"(it is {self.fid_backend})"
            )
        return self


def check_protocol_resolution(data: DataConfig, eval_config: EvalConfig) -> None:
    """A protocol that fixes the image size gets data at that size (ValueError otherwise)."""
    protocol = get_protocol(eval_config.protocol)
    if protocol.resolution and protocol.resolution != data.resolution:
        raise ValueError(
            f"eval.protocol {protocol.label} evaluates at {protocol.resolution}x"
            f"{protocol.resolution}, data.resolution is {data.resolution}; use "
            f"{protocol.resolution} or choose a protocol at {data.resolution} "
            f"(e.g. {DEFAULT_PROTOCOL})"
        )


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
    def _protocol_resolution(self) -> RunConfig:
        check_protocol_resolution(self.data, self.eval)
        return self

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
        """Every field with its value (defaults included), as plain data; the quantizer's
        parameters as written (`resolved_quantizer_params` fills in theirs)."""
        return self.model_dump(mode="json")

    def resolved_quantizer_params(self) -> dict[str, Any]:
        """The quantizer's parameters with every default filled in by its class (recipe and
        estimator defaults included); needs the quantizer registered (plugins loaded)."""
        for module in self.plugins:
            load_plugin(module)
        cls = get_quantizer_class(self.quantizer.name)
        return cls.resolved_params(**self.quantizer.params)

    def fingerprint(self) -> str:
        """Hash of what determines the trained weights, the quantizer's parameters resolved
        (so a changed default is a different run, and spelling a default out is the same run).
        Where the plugins are loaded from does not count: they hash as an empty list."""
        data = self.resolved()
        data["quantizer"]["params"] = self.resolved_quantizer_params()
        return _digest({**data, "plugins": []}, NOT_IN_FINGERPRINT, 16)

    def legacy_fingerprint(self) -> str:
        """The fingerprint as vqbench 0.2.0 computed it, over the quantizer's parameters as
        written: a run folder recorded with it cannot tell which defaults it was trained with."""
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
    for key in exclude + tuple(OMITTED_AT_DEFAULT):
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        if key in exclude or node.get(leaf) == OMITTED_AT_DEFAULT[key]:
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
        text = read_text(path, LIMITS.yaml_bytes, "config file")
        check_yaml(text, path)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
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


def image_bytes(config: RunConfig) -> int:
    """A floor on the memory one image costs in a step: the float32 image and the two
    full-resolution activations beside it (the encoder's first layer, the decoder's last)."""
    spec = {**PRESETS[config.model.preset], **config.model.overrides}
    pixels = config.data.resolution**2
    if spec["kind"] == "vit":
        return 4 * (3 * pixels + 2 * (pixels // spec["patch"] ** 2) * spec["width"])
    return 4 * pixels * (3 + 2 * spec["ch"])


def check_sizes(config: RunConfig, source: str) -> None:
    """The batch sizes, resolution and embedded dataset fit the host's memory (checked before
    anything is allocated; one line naming the size, the memory it needs and what there is)."""
    r = config.data.resolution
    per_image = image_bytes(config)
    train = config.train.micro_batch_size or config.train.batch_size
    fix = "lower the batch size or data.resolution"
    check_fits(f"{source}: train batch of {train} at data.resolution={r}", train * per_image, fix)
    b = config.eval.batch_size
    check_fits(f"{source}: eval.batch_size={b} at data.resolution={r}", b * per_image, fix)
    if config.data.kind == "embedded":  # every crop is made up front, as uint8
        crops = (config.data.train_size or 2048) + (config.data.val_size or 256)
        check_fits(
            f"{source}: {crops:,} embedded crops at data.resolution={r}",
            crops * 3 * r * r,
            "lower data.train_size, data.val_size or data.resolution",
        )


def parse_run_config(data: dict[str, Any], source: str) -> RunConfig:
    try:
        config = RunConfig(**data)
    except pydantic.ValidationError as err:
        raise VQBenchError(format_config_error(source, err)) from None
    check_model(config, source)
    check_sizes(config, source)
    check_quantizer(config, source)
    return config


def load_run_config(path: str | Path) -> RunConfig:
    return parse_run_config(read_yaml(path), str(path))


# ---- the downstream probe (`vqbench.probe`) ------------------------------------------------
class ProbeConfig(pydantic.BaseModel):
    """The prior and its training, identical for every run a suite probes."""

    model_config = pydantic.ConfigDict(extra="forbid")
    # the transformer (Hugging Face GPT-2 from a config)
    layers: PositiveInt = 2
    width: PositiveInt = 64
    heads: PositiveInt = 4
    dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    # index components with more values are predicted as mixed-radix digits of at most this many
    softmax_limit: int = pydantic.Field(4096, ge=2)
    class_conditional: bool = True  # a class token where the data has labels
    # training: AdamW, linear warm-up then cosine decay to zero, gradient norm clipped at 1
    steps: PositiveInt = 240
    batch_size: PositiveInt = 32  # token grids (images) per step, over all processes
    lr: PositiveFloat = 4e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: NonNegativeFloat = 0.01
    warmup_steps: NonNegativeInt = 20
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seeds: list[NonNegativeInt] = pydantic.Field([0], min_length=1)
    # evaluation and generation
    samples: NonNegativeInt = 256  # sampled token grids decoded for gFID and sample usage
    temperature: PositiveFloat = 1.0
    gfid: bool = True
    eval_batch_size: PositiveInt = 128
    figure_samples: NonNegativeInt = 16

    @pydantic.field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds

    def fingerprint(self) -> str:
        """Hash of what the results depend on (everything but the seeds: each seed is kept)."""
        data = self.model_dump(mode="json", exclude={"seeds", "eval_batch_size"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (
            f"GPT-2 {self.layers} layers x {self.width} wide ({self.heads} heads), AdamW lr "
            f"{self.lr}, {self.steps} steps of {self.batch_size} images, seeds {self.seeds}, "
            f"{self.samples} samples"
        )


def parse_probe_config(data: Any, source: str) -> ProbeConfig:
    """A probe section (a mapping, or a file's `probe:` mapping) validated, one-line errors."""
    if isinstance(data, dict) and isinstance(data.get("probe"), dict):
        data = data["probe"]
    if not isinstance(data, dict):
        raise VQBenchError(f"{source}: the probe settings must be a mapping (key: value)")
    try:
        return ProbeConfig(**data)
    except pydantic.ValidationError as err:
        raise VQBenchError(format_config_error(f"{source}: probe", err, ProbeConfig)) from None
