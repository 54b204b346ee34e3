"""LlamaGen's VQ tokenizer (`tokenizer/tokenizer_image/vq_model.py`, Sun et al. 2024) as a
published tokenizer.

A released tokenizer is the training checkpoint of LlamaGen's `vq_train.py`, a dict with the
weights under `model` (beside `optimizer`, `discriminator`, `optimizer_disc`, `steps`, `args`,
and `ema` when trained with EMA); the pickled `args` namespace is read into an inert
stand-in, so the file needs no trust. `weights="auto"` (default) reads the state dict as
LlamaGen's own reconstruction evaluation (`reconstruction_vq_ddp.py`, its rFID) and `vq_demo.py`
do: `ema` when the file has it, else `model` (else `state_dict`, else a bare state dict);
`weights="model"` (what its class-conditional samplers load) or `weights="ema"` pick one.
Its `quantize.codebook_used` buffer (recent indices, a training statistic) is loaded when the
file has it.

Presets (`preset=NAME`, default `vq_ds16_c2i`) are the released ImageNet tokenizers:
`vq_ds16_c2i` (`vq_ds16_c2i.pt`, `VQ_16`: `ch_mult` [1, 1, 2, 2, 4]) and `vq_ds8_c2i`
(`vq_ds8_c2i.pt`, `VQ_8`: [1, 2, 2, 4]); both 16,384 codes of dimension 8, l2-normalised,
`z_channels` 256, `ch` 128, two res blocks per level, 256x256. Any `ModelArgs` field that
shapes the model overrides the preset (`codebook_size`, `codebook_embed_dim`,
`codebook_l2_norm`, `encoder_ch_mult`, `decoder_ch_mult`, `z_channels`), as do the arguments
of its `Encoder`/`Decoder` that `VQModel` leaves at their defaults (`ch`, `num_res_blocks`).
`norm_type="batch"` (SyncBatchNorm, not used by the released models) is not supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
from pydantic import PositiveInt
from vqbench_adapters._checkpoints import read_training_checkpoint
from vqbench_adapters._taming_blocks import (
    LLAMAGEN,
    Codebook,
    Decoder,
    Encoder,
    VQAutoencoder,
    VQAutoencoderTokenizer,
)

from vqbench.errors import VQBenchError
from vqbench.params import PluginParams, validate_params
from vqbench.published import (
    load_exact,
    register_adapter,
    state_dict_of,
)


class Architecture(PluginParams):
    """`ModelArgs`' fields that shape the model, and the `Encoder`/`Decoder` defaults
    (`VQ_16`'s)."""

    codebook_size: PositiveInt = 16384
    codebook_embed_dim: PositiveInt = 8
    codebook_l2_norm: bool = True
    encoder_ch_mult: tuple[PositiveInt, ...] = (1, 1, 2, 2, 4)
    decoder_ch_mult: tuple[PositiveInt, ...] = (1, 1, 2, 2, 4)
    z_channels: PositiveInt = 256
    ch: PositiveInt = 128
    num_res_blocks: PositiveInt = 2

    @pydantic.model_validator(mode="after")
    def _group_norm_fits(self) -> Architecture:
        for mult in (*self.encoder_ch_mult, *self.decoder_ch_mult):
            if self.ch * mult % 32:
                raise ValueError(
                    f"ch={self.ch} times channel multiplier {mult} is not a multiple of 32 "
                    f"(GroupNorm's 32 groups); use a ch that is"
                )
        return self


#: The released tokenizers' settings (`VQ_16`, `VQ_8` with their `ModelArgs` defaults).
PRESETS: dict[str, dict[str, Any]] = {
    "vq_ds16_c2i": {},
    "vq_ds8_c2i": {"encoder_ch_mult": (1, 2, 2, 4), "decoder_ch_mult": (1, 2, 2, 4)},
}
WEIGHTS = ("auto", "model", "ema")


def build(arch: Architecture, *, usage_buffer: bool) -> VQAutoencoder:
    """LlamaGen's `VQModel`: attention after every res block of the lowest level only."""

    def shared(ch_mult: tuple[int, ...]) -> dict[str, Any]:
        return {
            "ch": arch.ch,
            "ch_mult": ch_mult,
            "num_res_blocks": arch.num_res_blocks,
            "attention_levels": {len(ch_mult) - 1},
            "layout": LLAMAGEN,
        }

    encoder = Encoder(**shared(arch.encoder_ch_mult), out_channels=arch.z_channels)
    decoder = Decoder(**shared(arch.decoder_ch_mult), z_channels=arch.z_channels)
    codebook = Codebook(
        arch.codebook_size,
        arch.codebook_embed_dim,
        l2_norm=arch.codebook_l2_norm,
        usage_buffer=usage_buffer,
    )
    return VQAutoencoder(encoder, decoder, codebook, arch.z_channels)


def architecture(preset: str | None, overrides: dict[str, Any]) -> Architecture:
    """The preset (default `vq_ds16_c2i`) with `overrides`, validated (one line per mistake)."""
    name = preset or "vq_ds16_c2i"
    if name not in PRESETS:
        raise VQBenchError(
            f"llamagen_vq16 has no preset '{name}'; choose one of {', '.join(PRESETS)}"
        )
    return validate_params("llamagen_vq16", Architecture, {**PRESETS[name], **overrides})


@register_adapter("llamagen_vq16")
class LlamaGenVQ(VQAutoencoderTokenizer):
    """A released LlamaGen VQ tokenizer (`VQ_16`, or `VQ_8` with its preset)."""

    source = (
        "FoundationVision/LlamaGen@ce98ec41803a74a90ce68c40ababa9eaeffeb4ec, "
        "tokenizer/tokenizer_image/vq_model.py VQModel (VQ_16, VQ_8)"
    )

    def __init__(self, arch: Architecture, *, usage_buffer: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.model = build(arch, usage_buffer=usage_buffer)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        trust: bool = False,
        preset: str | None = None,
        weights: str = "auto",
        **options: Any,
    ) -> LlamaGenVQ:
        """The weights under `weights` (`auto`, `model` or `ema`) of `checkpoint`, in the
        architecture of `preset` with `options` overriding its fields."""
        if weights not in WEIGHTS:
            raise VQBenchError(f"llamagen_vq16 weights='{weights}': choose auto, model or ema")
        arch = architecture(preset, dict(options))
        loaded = read_training_checkpoint(checkpoint, trust=trust, inert=("argparse.Namespace",))
        if weights == "ema" and "ema" not in loaded:
            raise VQBenchError(f"'{checkpoint}' holds no 'ema' weights; use weights='model'")
        if weights == "auto":  # as reconstruction_vq_ddp.py and vq_demo.py read
            weights = "ema" if "ema" in loaded else "model"
        keys = ("ema",) if weights == "ema" else ("model", "state_dict")
        state = state_dict_of(loaded, keys, file=checkpoint)
        tokenizer = cls(arch, usage_buffer="quantize.codebook_used" in state)
        load_exact(tokenizer.model, state, file=checkpoint)
        return tokenizer
