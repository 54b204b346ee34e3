"""What the adapters of Lightning-trained tokenizers with an EMA copy share (Open-MAGVIT2, IBQ,
SimVQ): their config files, named presets, and the checkpoint's EMA weights.

Those projects train a `LightningModule` whose `model_ema` (`LitEma`, from Stable Diffusion's
`ldm/modules/ema.py`) keeps a copy of every parameter that requires gradients as a buffer
named after the parameter without its dots (`encoder.conv_in.weight` ->
`model_ema.encoderconv_inweight`); their evaluation scripts (`evaluation_image.py`,
`evaluation.py`) run the model inside `ema_scope()` when the config says `use_ema: True`, that
is with those EMA weights, which is what `use_ema=True` loads here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml
from torch import nn
from vqbench_adapters._checkpoints import read_training_checkpoint

from vqbench.errors import VQBenchError
from vqbench.published import PublishedTokenizer, load_exact, state_dict_of

EMA_PREFIX = "model_ema."


def ema_key(name: str) -> str:
    """The buffer `LitEma` keeps for the parameter `name`."""
    return EMA_PREFIX + name.replace(".", "")


def with_ema_weights(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, file: str | Path
) -> dict[str, torch.Tensor]:
    """`state` with each trainable parameter of `module` replaced by its EMA copy (frozen
    parameters, e.g. SimVQ's codebook, have none and keep the stored value)."""
    state = dict(state)
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        key = ema_key(name)
        if key not in state:
            raise VQBenchError(
                f"checkpoint '{file}' holds no EMA weights ('{key}' is missing); pass "
                f"use_ema=False to load its training weights"
            )
        state[name] = state[key]
    return state


def load_lightning(
    module: nn.Module,
    checkpoint: str | Path,
    *,
    trust: bool,
    use_ema: bool,
    ignore: Iterable[str] = ("loss.",),
) -> None:
    """Load a Lightning checkpoint's `state_dict` into `module` strictly, the EMA weights if
    `use_ema`; the training loss (`loss.`: discriminator, LPIPS) and the EMA buffers are
    dropped."""
    file = Path(checkpoint)
    state = state_dict_of(read_training_checkpoint(file, trust=trust), ("state_dict",), file=file)
    if use_ema:
        state = with_ema_weights(module, state, file=file)
    load_exact(module, state, file=file, ignore=(*ignore, EMA_PREFIX))


def model_args(config: str | Path) -> dict[str, Any]:
    """`model.init_args` of an official LightningCLI config file."""
    file = Path(config)
    if not file.is_file():
        raise VQBenchError(f"config '{file}' does not exist; give the official model's yaml file")
    try:
        loaded = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise VQBenchError(
            f"config '{file}' is not valid yaml ({str(err).splitlines()[0]})"
        ) from None
    args = (loaded or {}).get("model", {}) if isinstance(loaded, dict) else {}
    args = args.get("init_args") if isinstance(args, dict) else None
    if not isinstance(args, dict) or not isinstance(args.get("ddconfig"), dict):
        raise VQBenchError(
            f"config '{file}' has no model.init_args.ddconfig; give the official config file "
            f"the checkpoint was trained with"
        )
    size = _training_image_size(loaded)
    return {**args, "image_size": size or args["ddconfig"].get("resolution", 256)}


def _training_image_size(loaded: dict) -> int | None:
    """`data.init_args.train.params.config.size`, the size the tokenizer was trained at."""
    node: Any = loaded.get("data")
    for key in ("init_args", "train", "params", "config", "size"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, int) else None


def architecture(
    presets: Mapping[str, dict[str, Any]], preset: str | None, config: str | Path | None
) -> tuple[str, dict[str, Any]]:
    """The model arguments of `config` (an official yaml file) or of a named preset, and what
    they came from."""
    if config is not None and preset is not None:
        raise VQBenchError(f"give preset {preset!r} or config {config}, not both")
    if config is not None:
        return f"config {config}", model_args(config)
    if preset not in presets:
        raise VQBenchError(
            f"unknown preset {preset!r}; pick one of {', '.join(presets)} or give config=FILE "
            f"(the official yaml file)"
        )
    return f"preset {preset}", presets[preset]


def ddconfig_value(args: Mapping[str, Any], key: str, source: str) -> Any:
    """`ddconfig[key]` of the model arguments, one line where it is missing."""
    try:
        return args["ddconfig"][key]
    except KeyError:
        raise VQBenchError(f"{source} has no ddconfig.{key}; give the official config") from None


def model_value(args: Mapping[str, Any], key: str, source: str, default: Any = ...) -> Any:
    """`init_args[key]`, one line where it is missing and has no default."""
    if key in args:
        return args[key]
    if default is ...:
        raise VQBenchError(f"{source} has no model.init_args.{key}; give the official config")
    return default


def reject_unknown(adapter: str, given: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """One line naming the first option in `given` the adapter does not take."""
    allowed = tuple(allowed)
    unknown = [key for key in given if key not in allowed]
    if unknown:
        options = ", ".join(("preset", "config", "use_ema", *allowed))
        raise VQBenchError(f"unknown option '{unknown[0]}' for {adapter}; options: {options}")


class EMACheckpointTokenizer(PublishedTokenizer):
    """A released tokenizer whose architecture comes from an official config file or a named
    preset and whose weights from a Lightning checkpoint with an EMA copy."""

    #: Preset name -> the model arguments of the official config (`model.init_args`).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    default_preset: ClassVar[str] = ""
    #: Options besides preset, config and use_ema that `from_args` takes.
    extra_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_args(cls, args: dict[str, Any], source: str, **extra: Any) -> EMACheckpointTokenizer:
        """The architecture of the official model arguments `args` (random weights)."""
        raise NotImplementedError

    @classmethod
    def build(
        cls, *, preset: str | None = None, config: str | Path | None = None, **extra: Any
    ) -> tuple[EMACheckpointTokenizer, bool]:
        """The architecture of `config` (an official yaml file) or `preset`, with random
        weights, and whether its config evaluates with the EMA weights."""
        reject_unknown(cls.name or cls.__name__, extra, cls.extra_options)
        if preset is None and config is None:
            preset = cls.default_preset
        source, args = architecture(cls.presets, preset, config)
        model = cls.from_args(args, source, **extra)
        return model, bool(model_value(args, "use_ema", source, False))

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        trust: bool = False,
        preset: str | None = None,
        config: str | Path | None = None,
        use_ema: bool | None = None,
        **extra: Any,
    ) -> EMACheckpointTokenizer:
        """The released tokenizer in `checkpoint`, its architecture from `config` (the official
        yaml file) or `preset` (`default_preset` without either); `use_ema` defaults to the
        config's (the official evaluation's choice)."""
        model, config_ema = cls.build(preset=preset, config=config, **extra)
        ema = config_ema if use_ema is None else use_ema
        load_lightning(model, checkpoint, trust=trust, use_ema=ema)
        return model
