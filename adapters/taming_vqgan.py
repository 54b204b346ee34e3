"""taming-transformers' VQGAN (`taming.models.vqgan.VQModel`, Esser et al. 2021) as a published
tokenizer.

A released model is a Lightning checkpoint (`last.ckpt`: `state_dict`, whose `loss.*` keys
are the LPIPS and discriminator of training and are ignored) and a `model.yaml` whose
`model.params` hold `ddconfig` (the encoder/decoder), `n_embed` and `embed_dim`. Options:

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

import torch
import yaml
from vqbench_adapters._taming_blocks import TAMING, Codebook, Decoder, Encoder, VQAutoencoder

from vqbench.errors import VQBenchError
from vqbench.published import (
    PublishedTokenizer,
    load_exact,
    read_checkpoint,
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
#: `ddconfig` keys read here; the other keys a config may hold must keep these values.
_FIXED = {"double_z": False, "resamp_with_conv": True, "give_pre_end": False}


def read_config(path: str | Path) -> dict[str, Any]:
    """`model.params` of a taming `VQModel` yaml file, checked to be one this adapter builds."""
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


def check_params(params: Mapping[str, Any], where: str) -> None:
    """One line for a setting that this adapter does not build."""
    missing = [key for key in ("ddconfig", "n_embed", "embed_dim") if key not in params]
    if missing:
        raise VQBenchError(f"{where}: model.params lacks {missing[0]}; is it a VQModel config?")
    if params.get("remap") is not None:
        raise VQBenchError(f"{where}: a remapped codebook (remap) is not supported")
    ddconfig = params["ddconfig"]
    for key, value in _FIXED.items():
        if ddconfig.get(key, value) != value:
            raise VQBenchError(f"{where}: ddconfig.{key}={ddconfig[key]} is not supported")


def build(params: Mapping[str, Any]) -> VQAutoencoder:
    """taming's `VQModel` architecture from `model.params`: level `i` (size `resolution/2^i`)
    has attention when that size is in `attn_resolutions`."""
    dd = params["ddconfig"]
    levels = range(len(dd["ch_mult"]))
    attention = {i for i in levels if dd["resolution"] // 2**i in dd["attn_resolutions"]}
    shared = {"ch": dd["ch"], "ch_mult": dd["ch_mult"], "num_res_blocks": dd["num_res_blocks"]}
    shared |= {"attention_levels": attention, "layout": TAMING}
    encoder = Encoder(**shared, out_channels=dd["z_channels"], in_channels=dd["in_channels"])
    decoder = Decoder(**shared, z_channels=dd["z_channels"], out_channels=dd["out_ch"])
    codebook = Codebook(params["n_embed"], params["embed_dim"])
    return VQAutoencoder(encoder, decoder, codebook, dd["z_channels"])


@register_adapter("taming_vqgan")
class TamingVQGAN(PublishedTokenizer):
    """A released taming-transformers VQGAN (`VQModel`)."""

    source = (
        "CompVis/taming-transformers@3ba01b241669f5ade541ce990f7650a3b8f65318, "
        "taming/models/vqgan.py VQModel (taming/modules/diffusionmodules/model.py Encoder, "
        "Decoder; taming/modules/vqvae/quantize.py VectorQuantizer2)"
    )

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        self.params = dict(params)
        self.model = build(params)
        self.resolution = int(params["ddconfig"]["resolution"])

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
        params, where = _params(config, preset)
        check_params(params, where)
        tokenizer = cls(params)
        loaded = read_checkpoint(checkpoint, trust=trust)
        state = state_dict_of(loaded, ("state_dict",), file=checkpoint)
        load_exact(tokenizer.model, state, file=checkpoint, ignore=("loss.",))
        return tokenizer

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.params["ddconfig"]["ch_mult"]) - 1)

    def index_sizes(self) -> list[int]:
        return [int(self.params["n_embed"])]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.model.decode(indices)


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
