"""Autoencoders: an encoder, any registered quantizer, a decoder.

Presets (`build_autoencoder`):
* `vqgan`: SimVQ's conv network, ch 128, ch_mult [1, 2, 2, 4], 2 ResBlocks per level, no
  attention: 128 x 128 images -> 16 x 16 x z_channels (protocol.md section 2.2).
* `taming`: the same with a self-attention block at the lowest resolution.
* `vit_vqgan`: ViT-VQGAN-small from timm blocks (patch 8, width 512, depth 8, 8 heads, MLP 2048).
* `tiny`: the conv design scaled down (ch 32, ch_mult [1, 2, 2], 1 ResBlock, f = 4), for CPU.
"""

from __future__ import annotations

from typing import Any

import pydantic
import torch
from pydantic import PositiveInt
from torch import nn

from vqbench.errors import VQBenchError, did_you_mean
from vqbench.models.conv import ConvDecoder, ConvEncoder
from vqbench.params import format_validation_error
from vqbench.quantizer import Quantizer, QuantizerOutput

PRESETS: dict[str, dict[str, Any]] = {
    "vqgan": dict(kind="conv", ch=128, ch_mult=[1, 2, 2, 4], num_res_blocks=2, attention=False),
    "taming": dict(kind="conv", ch=128, ch_mult=[1, 2, 2, 4], num_res_blocks=2, attention=True),
    "tiny": dict(kind="conv", ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, attention=False),
    "vit_vqgan": dict(kind="vit", patch=8, width=512, depth=8, heads=8, mlp=2048),
}


class Autoencoder(nn.Module):
    """`x -> encoder -> quantizer -> decoder`; the quantizer's `dim` equals `z_channels`."""

    def __init__(
        self, encoder: nn.Module, quantizer: Quantizer, decoder: nn.Module, downsampling: int
    ) -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.downsampling = downsampling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        out = self.quantizer(self.encoder(x))
        return self.decoder(out.z_q), out

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.decode_indices(indices))

    def last_layer(self) -> torch.Tensor:
        """The decoder's final weight (for taming's adaptive generator weight)."""
        last = getattr(self.decoder, "conv_out", None) or self.decoder.out
        return last.weight

    def parameter_counts(self) -> dict[str, int]:
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters() if p.requires_grad)

        return {
            "encoder": count(self.encoder),
            "quantizer": count(self.quantizer),
            "decoder": count(self.decoder),
        }


class ConvSettings(pydantic.BaseModel):
    """The settings of a conv preset, checked before a model is built."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    ch: PositiveInt
    ch_mult: list[PositiveInt] = pydantic.Field(min_length=1)
    num_res_blocks: PositiveInt
    attention: bool

    @pydantic.model_validator(mode="after")
    def _group_norm_fits(self) -> ConvSettings:
        for width in (self.ch * m for m in self.ch_mult):
            if width > 32 and width % 32:
                raise ValueError(
                    f"ch x ch_mult gives {width} channels, which GroupNorm's 32 groups do not "
                    f"divide; use widths that are multiples of 32 (or at most 32)"
                )
        return self


class ViTSettings(pydantic.BaseModel):
    """The settings of a ViT preset, checked before a model is built."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)
    patch: PositiveInt
    width: PositiveInt
    depth: PositiveInt
    heads: PositiveInt
    mlp: PositiveInt

    @pydantic.model_validator(mode="after")
    def _heads_divide_width(self) -> ViTSettings:
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not a multiple of heads={self.heads}")
        return self


def check_overrides(preset: str, overrides: dict[str, Any]) -> None:
    """Every key of `model.overrides` is a setting of the preset (z_channels is the quantizer's)
    and every value has the right type and range."""
    allowed = sorted(set(_preset(preset)) - {"kind"})
    for key in overrides:
        if key == "z_channels":
            raise VQBenchError(
                "model.overrides.z_channels: the latent channels are the quantizer's dim; "
                "set quantizer.params.dim instead"
            )
        if key not in allowed:
            raise VQBenchError(
                f"model.overrides: unknown key '{key}' for preset '{preset}';"
                f"{did_you_mean(key, allowed) or ' remove it'} (settings: {', '.join(allowed)})"
            )
    spec = {**_preset(preset), **overrides}
    settings = ViTSettings if spec.pop("kind") == "vit" else ConvSettings
    try:
        settings(**spec)
    except pydantic.ValidationError as err:
        raise VQBenchError(
            format_validation_error("model.overrides", err, settings, joiner=".")
        ) from None


def preset_downsampling(preset: str, **overrides: Any) -> int:
    check_overrides(preset, overrides)
    spec = {**_preset(preset), **overrides}
    if spec["kind"] == "vit":
        return spec["patch"]
    return 2 ** (len(spec["ch_mult"]) - 1)


def check_resolution(resolution: int, downsampling: int) -> None:
    if resolution <= 0 or resolution % downsampling:
        nearest = max(1, resolution // downsampling) * downsampling
        raise VQBenchError(
            f"data.resolution={resolution} is not a positive multiple of the model's "
            f"downsampling factor {downsampling}; use e.g. {nearest}"
        )


def _preset(preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise VQBenchError(
            f"unknown model preset '{preset}';{did_you_mean(preset, PRESETS)} "
            f"presets: {', '.join(PRESETS)}"
        )
    return dict(PRESETS[preset])


def build_autoencoder(
    preset: str, quantizer: Quantizer, resolution: int, **overrides: Any
) -> Autoencoder:
    """The preset's encoder and decoder around `quantizer` (z_channels = quantizer.dim)."""
    spec = {**_preset(preset), **overrides}
    kind = spec.pop("kind")
    factor = preset_downsampling(preset, **overrides)
    check_resolution(resolution, factor)
    if kind == "vit":
        from vqbench.models.vit import ViTDecoder, ViTEncoder  # timm, imported when used

        encoder = ViTEncoder(resolution, z_channels=quantizer.dim, **spec)
        decoder = ViTDecoder(resolution, z_channels=quantizer.dim, **spec)
    else:
        encoder = ConvEncoder(z_channels=quantizer.dim, **spec)
        decoder = ConvDecoder(z_channels=quantizer.dim, **spec)
    return Autoencoder(encoder, quantizer, decoder, factor)
