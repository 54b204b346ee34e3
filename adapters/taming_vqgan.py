"""taming-transformers' VQGAN (`taming.models.vqgan.VQModel`, Esser et al. 2021) as a published
tokenizer.

A released model is a Lightning checkpoint (`last.ckpt`: `state_dict`, whose `loss.*` keys
are the LPIPS and discriminator of training and are ignored; the Lightning objects pickled
beside it are read into inert stand-ins, so neither trust nor Lightning is needed) and a
`model.yaml` whose `model.params` hold `ddconfig` (the encoder/decoder), `n_embed` and
`embed_dim`. Options:

* `config=PATH`: that yaml file (any `VQModel` config: `configs/*_vqgan.yaml` or a released
  `model.yaml`/`*-project.yaml`);
* `preset=NAME` (default `imagenet_f16_16384`): the released ImageNet models
  `vqgan_imagenet_f16_1024` and `vqgan_imagenet_f16_16384` (`ckpts/last.ckpt` with
  `configs/model.yaml`: `ch` 128, `ch_mult` [1, 1, 2, 2, 4], two res blocks per level,
  attention at 16x16, `z_channels` = `embed_dim` = 256, 1,024 or 16,384 codes, 256x256).

Encoding is `VectorQuantizer2`'s nearest code of `quant_conv(encoder(x))` (its legacy loss is
a training matter); decoding `decoder(post_quant_conv(codes))`. Not supported: `GumbelVQ`
(its official encoding samples Gumbel noise even in evaluation), `EMAVQ`, `remap`ped codebooks,
`double_z`, `resamp_with_conv: false`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import PositiveInt
from vqbench_adapters._checkpoints import read_training_checkpoint
from vqbench_adapters._taming_blocks import (
    CODER_KEYS,
    Codebook,
    VQAutoencoder,
    VQAutoencoderTokenizer,
    taming_coders,
)

from vqbench.errors import VQBenchError
from vqbench.params import format_validation_error
from vqbench.published import (
    load_exact,
    register_adapter,
    state_dict_of,
)

TARGET = "taming.models.vqgan.VQModel"
_IMAGENET_F16 = {
    "double_z": False,
    "z_channels": 256,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "dropout": 0.0,
}
#: `model.params` of the released models' `configs/model.yaml`.
PRESETS: dict[str, dict[str, Any]] = {
    "imagenet_f16_1024": {"embed_dim": 256, "n_embed": 1024, "ddconfig": _IMAGENET_F16},
    "imagenet_f16_16384": {"embed_dim": 256, "n_embed": 16384, "ddconfig": _IMAGENET_F16},
}


class DDConfig(pydantic.BaseModel):
    """`ddconfig`: what taming's `Encoder`/`Decoder` read (other keys are ignored, as their
    `**ignore_kwargs` do); `dropout` acts in training only."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    ch: PositiveInt
    ch_mult: tuple[PositiveInt, ...]
    num_res_blocks: PositiveInt
    attn_resolutions: tuple[int, ...]
    z_channels: PositiveInt
    resolution: PositiveInt
    in_channels: PositiveInt
    out_ch: PositiveInt
    double_z: bool = pydantic.Field(True, validate_default=True)  # the Encoder's default
    resamp_with_conv: bool = True
    give_pre_end: bool = False

    @pydantic.field_validator("double_z", "give_pre_end")
    @classmethod
    def _off(cls, value: bool) -> bool:
        if value:
            raise ValueError("not supported (a VQModel sets it false)")
        return value

    @pydantic.field_validator("resamp_with_conv")
    @classmethod
    def _on(cls, value: bool) -> bool:
        if not value:
            raise ValueError("not supported (the released models set it true)")
        return value

    @pydantic.model_validator(mode="after")
    def _group_norm_fits(self) -> DDConfig:
        if any(self.ch * mult % 32 for mult in self.ch_mult):
            raise ValueError(
                f"ch={self.ch} times each of ch_mult={list(self.ch_mult)} must be a multiple "
                f"of 32 (GroupNorm's 32 groups)"
            )
        return self


class VQModelParams(pydantic.BaseModel):
    """`model.params` of a `VQModel` config (the training settings in it are ignored)."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    embed_dim: PositiveInt
    n_embed: PositiveInt
    ddconfig: DDConfig
    remap: str | None = None

    @pydantic.field_validator("remap")
    @classmethod
    def _no_remap(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("a remapped codebook is not supported; remove remap")
        return value


def parse_params(params: Mapping[str, Any], where: str) -> VQModelParams:
    """`params` validated, or one line naming the setting this adapter does not build."""
    try:
        return VQModelParams.model_validate(dict(params))
    except pydantic.ValidationError as err:
        raise VQBenchError(format_validation_error(where, err, VQModelParams)) from None


def read_config(path: str | Path) -> dict[str, Any]:
    """`model.params` of a taming `VQModel` yaml file."""
    file = Path(path)
    if not file.is_file():
        raise VQBenchError(f"taming_vqgan config '{file}' does not exist; give the model.yaml")
    try:
        loaded = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise VQBenchError(f"taming_vqgan config '{file}' is not yaml ({first})") from None
    model = loaded.get("model") if isinstance(loaded, Mapping) else None
    if not isinstance(model, Mapping) or not isinstance(model.get("params"), Mapping):
        raise VQBenchError(f"taming_vqgan config '{file}' has no model.params; give a model.yaml")
    if model.get("target") != TARGET:
        raise VQBenchError(
            f"taming_vqgan config '{file}' builds {model.get('target')}, not {TARGET}; "
            f"only VQModel checkpoints are supported"
        )
    return dict(model["params"])


def build(params: VQModelParams) -> VQAutoencoder:
    """taming's `VQModel` architecture."""
    dd = params.ddconfig
    encoder, decoder = taming_coders(
        **dd.model_dump(include=set(CODER_KEYS)), in_channels=dd.in_channels, out_ch=dd.out_ch
    )
    codebook = Codebook(params.n_embed, params.embed_dim)
    return VQAutoencoder(encoder, decoder, codebook, dd.z_channels)


@register_adapter("taming_vqgan")
class TamingVQGAN(VQAutoencoderTokenizer):
    """A released taming-transformers VQGAN (`VQModel`)."""

    source = (
        "CompVis/taming-transformers@3ba01b241669f5ade541ce990f7650a3b8f65318, "
        "taming/models/vqgan.py VQModel (taming/modules/diffusionmodules/model.py Encoder, "
        "Decoder; taming/modules/vqvae/quantize.py VectorQuantizer2)"
    )

    def __init__(self, params: VQModelParams) -> None:
        super().__init__()
        self.params = params
        self.model = build(params)
        self.resolution = params.ddconfig.resolution

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        trust: bool = False,
        config: str | Path | None = None,
        preset: str | None = None,
        **options: Any,
    ) -> TamingVQGAN:
        """`checkpoint` (a `.ckpt` with `state_dict`, or a bare state dict) built as `config`
        says, else as the released model `preset` (default `imagenet_f16_16384`)."""
        if options:
            raise VQBenchError(
                f"taming_vqgan has no option '{next(iter(options))}'; it takes config=PATH "
                f"or preset=({'|'.join(PRESETS)})"
            )
        tokenizer = cls(parse_params(*_params(config, preset)))
        loaded = read_training_checkpoint(checkpoint, trust=trust)  # Lightning's objects inert
        state = state_dict_of(loaded, ("state_dict",), file=checkpoint)
        load_exact(tokenizer.model, state, file=checkpoint, ignore=("loss.",))
        return tokenizer


def _params(config: str | Path | None, preset: str | None) -> tuple[dict[str, Any], str]:
    if config is not None and preset is not None:
        raise VQBenchError("taming_vqgan takes config=PATH or preset=NAME, not both")
    if config is not None:
        return read_config(config), f"taming_vqgan config '{config}'"
    name = preset or "imagenet_f16_16384"
    if name not in PRESETS:
        raise VQBenchError(
            f"taming_vqgan has no preset '{name}'; choose one of {', '.join(PRESETS)} "
            f"or give config=PATH"
        )
    return PRESETS[name], f"taming_vqgan preset '{name}'"
