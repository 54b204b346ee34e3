"""IBQ's image tokenizer (TencentARC/SEED-Voken, `src/IBQ/models/ibqgan.py`, class `IBQ`).

Taming's VQGAN encoder and decoder (`_taming_blocks.taming_coders`: IBQ's `model.py` is
taming's) around `quant_conv` / `post_quant_conv` and index backpropagation quantization (Shi
et al. 2024, Eq. 2-3): the index of a token is the argmax over the codebook of
`softmax(<z, e_n>)` (dot products, not distances), its code the codebook row.
Released checkpoints are Lightning `.ckpt` files; their evaluation uses the EMA weights
(`use_ema: True` in the configs), as `use_ema` does here by default.

Presets (`preset=`), the released 256x256 tokenizers (f16, 256 channels per code;
hyperparameters from `configs/IBQ/gpu/`): `imagenet256_1024`, `imagenet256_8192`,
`imagenet256_16384` and `imagenet256_262144` (`imagenet_ibqgan_<codes>.yaml`, the checkpoints
`imagenet256_<codes>.ckpt` of the official evaluation script), and `pretrain256_16384`,
`pretrain256_262144` (`pretrain_ibqgan_<codes>.yaml`, `pretrain256_<codes>.ckpt`; their configs
name the same class, `ibqgan.IBQ`).

Not supported: the `remap` option.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from vqbench_adapters._lightning_ema import EMACheckpointTokenizer, ddconfig_value, model_value
from vqbench_adapters._taming_blocks import CODER_KEYS, taming_coders


def _preset(codes: int) -> dict[str, Any]:
    ddconfig = {
        "z_channels": 256,
        "resolution": 256,
        "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 4,
        "attn_resolutions": [16],
        "dropout": 0.0,
    }
    return {"ddconfig": ddconfig, "n_embed": codes, "embed_dim": 256, "use_ema": True} | {
        "image_size": 256
    }


#: Images whose codebook logits `encode` holds at once.
LOOKUP_BATCH = 8
PRESETS = {f"imagenet256_{codes}": _preset(codes) for codes in (1024, 8192, 16384, 262144)}
PRESETS |= {f"pretrain256_{codes}": _preset(codes) for codes in (16384, 262144)}


class IBQ(EMACheckpointTokenizer):
    """IBQ's `IBQ` model (index backpropagation quantization), in evaluation mode."""

    presets = PRESETS
    default_preset = "imagenet256_16384"

    source: ClassVar[str] = (
        "TencentARC/SEED-Voken@b9a17eac8e2c, src/IBQ/models/ibqgan.py IBQ "
        "(modules/diffusionmodules/model.py, modules/vqvae/quantize.py IndexPropagationQuantize)"
    )

    def __init__(
        self, *, blocks: dict[str, Any], codebook_size: int, dim: int, resolution: int = 256
    ) -> None:
        super().__init__()
        self.encoder, self.decoder = taming_coders(**blocks)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(codebook_size, dim)
        self.quant_conv = nn.Conv2d(blocks["z_channels"], dim, 1)
        self.post_quant_conv = nn.Conv2d(dim, blocks["z_channels"], 1)
        self.resolution = resolution
        self._downsampling = 2 ** (len(blocks["ch_mult"]) - 1)

    @classmethod
    def from_args(cls, args: dict[str, Any], source: str) -> IBQ:
        blocks = {key: ddconfig_value(args, key, source) for key in CODER_KEYS}
        return cls(
            blocks=blocks,
            codebook_size=model_value(args, "n_embed", source),
            dim=model_value(args, "embed_dim", source),
            resolution=int(args.get("image_size", 256)),
        )

    @property
    def downsampling(self) -> int:
        return self._downsampling

    def index_sizes(self) -> list[int]:
        return [self.quantize.embedding.num_embeddings]

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w): the dot products of each latent with each code."""
        z = self.quant_conv(self.encoder(images))
        return torch.einsum("b d h w, n d -> b n h w", z, self.quantize.embedding.weight)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The argmax of the softmax, as the official code takes it (saturated ties included),
        `LOOKUP_BATCH` images at a time: the (B, K, h, w) logits of the 2^18-code tokenizer
        take 0.27 GB per 256x256 image, twice with the softmax."""
        parts = images.split(LOOKUP_BATCH)
        return torch.cat([F.softmax(self._logits(part), dim=1).max(1)[1] for part in parts])

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        codes = self.quantize.embedding(indices).permute(0, 3, 1, 2).contiguous()
        return self.decoder(self.post_quant_conv(codes))
