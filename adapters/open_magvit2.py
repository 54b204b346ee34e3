"""Open-MAGVIT2's image tokenizer (TencentARC/SEED-Voken, `src/Open_MAGVIT2/models/lfqgan.py`).

`VQModel`: the improved encoder (`_magvit2_blocks.Encoder`), lookup-free quantization of its
`z_channels` outputs (one bit per channel: `q = sign(z)` with 0 -> -1, Yu et al. 2024, Eq. 3),
and the decoder with adaptive group norms. The index of a token is the official one,
`sum_i [z_i > 0] 2^i` in [0, 2^bits) (bit i is channel i); `token_factorization=True` gives the
two sub-indices of the autoregressive stage instead (`factorized_bits`, e.g. 9 + 9 bits), as
`(B, h, w, 2)`. Released checkpoints are Lightning `.ckpt` files; their evaluation uses the EMA
weights (`use_ema: True` in the configs), as `use_ema` does here by default.

Presets (`preset=`), the released image tokenizers (hyperparameters from the configs in
`configs/Open-MAGVIT2/gpu/`; checkpoint names as in `scripts/evaluation/`):

- `imagenet_128_L`: `imagenet_128_L.ckpt`, 128x128, f8 (ch_mult 1,2,2,4), 2^18 codes.
- `imagenet_256_L`: `imagenet_256_L.ckpt`, 256x256, f16 (ch_mult 1,1,2,2,4), 2^18 codes.
- `pretrain_256_262144`, `pretrain_256_16384`: `pretrain256_262144.ckpt` and
  `pretrain256_16384.ckpt` (`lfqgan_pretrain.py`'s `VQModel`: the same encoder, decoder, LFQ and
  state-dict layout), 256x256, f16, 2^18 and 2^14 codes.

Not supported: the video tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from vqbench_adapters._lightning_ema import EMACheckpointTokenizer, ddconfig_value, model_value
from vqbench_adapters._magvit2_blocks import Decoder, Encoder

from vqbench.errors import VQBenchError


def _preset(ch_mult: list[int], image_size: int, bits: int = 18) -> dict[str, Any]:
    ddconfig = {"z_channels": bits, "ch": 128, "ch_mult": ch_mult, "num_res_blocks": 4}
    return {"ddconfig": ddconfig, "n_embed": 2**bits, "embed_dim": bits, "use_ema": True} | {
        "image_size": image_size
    }


PRESETS = {
    "imagenet_128_L": _preset([1, 2, 2, 4], 128),
    "imagenet_256_L": _preset([1, 1, 2, 2, 4], 256),
    "pretrain_256_262144": _preset([1, 1, 2, 2, 4], 256),
    "pretrain_256_16384": _preset([1, 1, 2, 2, 4], 256, bits=14),
}


class OpenMAGVIT2(EMACheckpointTokenizer):
    """Open-MAGVIT2's `VQModel` (LFQ), in evaluation mode."""

    presets = PRESETS
    default_preset = "imagenet_256_L"
    extra_options = ("token_factorization",)

    source: ClassVar[str] = (
        "TencentARC/SEED-Voken@b9a17eac8e2c, src/Open_MAGVIT2/models/lfqgan.py VQModel "
        "(modules/diffusionmodules/improved_model.py, modules/vqvae/lookup_free_quantize.py)"
    )

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        factorized_bits: Sequence[int] | None = None,
        resolution: int = 256,
    ) -> None:
        super().__init__()
        blocks = {"ch": ch, "ch_mult": ch_mult, "num_res_blocks": num_res_blocks}
        self.encoder = Encoder(**blocks, z_channels=z_channels)
        self.decoder = Decoder(**blocks, z_channels=z_channels, adaptive=True)
        self.bits = z_channels
        self.factorized_bits = list(factorized_bits) if factorized_bits else None
        self.resolution = resolution
        self._downsampling = 2 ** (len(ch_mult) - 1)

    @classmethod
    def from_args(
        cls, args: dict[str, Any], source: str, *, token_factorization: bool | None = None
    ) -> OpenMAGVIT2:
        """`token_factorization` defaults to the config's (False for the ImageNet
        tokenizers)."""
        bits = _lfq_bits(args, source)
        factorize = token_factorization
        if factorize is None:
            factorize = bool(model_value(args, "token_factorization", source, False))
        split = model_value(args, "factorized_bits", source, [9, 9]) if factorize else None
        if split is not None and sum(split) != bits:
            raise VQBenchError(f"factorized_bits {split} do not add up to the {bits} LFQ bits")
        return cls(
            ch=ddconfig_value(args, "ch", source),
            ch_mult=ddconfig_value(args, "ch_mult", source),
            num_res_blocks=ddconfig_value(args, "num_res_blocks", source),
            z_channels=bits,
            factorized_bits=split,
            resolution=int(args.get("image_size", 256)),
        )

    @property
    def downsampling(self) -> int:
        return self._downsampling

    def index_sizes(self) -> list[int]:
        if self.factorized_bits:
            return [2**b for b in self.factorized_bits]
        return [2**self.bits]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        z = self.encoder(images)
        bits = (z > 0).long()  # LFQ: sign(z), 0 counted as -1
        widths = self.factorized_bits or [self.bits]
        parts = [_bits_to_index(group) for group in bits.split(widths, dim=1)]
        return parts[0] if not self.factorized_bits else torch.stack(parts, dim=-1)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        if self.factorized_bits:
            parts = indices.unbind(-1)
            bits = torch.cat([_index_to_bits(p, n) for p, n in zip(parts, self.factorized_bits)], 1)
        else:
            bits = _index_to_bits(indices, self.bits)
        codes = bits.to(self.decoder.conv_in.weight.dtype) * 2 - 1
        # The official LFQ hands the decoder a channels-last view ('b h w c -> b c h w'); the
        # convolutions sum in another order on that layout (about 1e-5 apart), so use it too.
        return self.decoder(codes.contiguous(memory_format=torch.channels_last))


def _bits_to_index(bits: torch.Tensor) -> torch.Tensor:
    """(B, n, h, w) of 0/1 -> (B, h, w) int64, channel i weighing 2^i."""
    weights = 2 ** torch.arange(bits.shape[1], device=bits.device)
    return (bits * weights.view(1, -1, 1, 1)).sum(1)


def _index_to_bits(indices: torch.Tensor, n: int) -> torch.Tensor:
    """(B, h, w) -> (B, n, h, w) of 0/1: bit i of each index as channel i."""
    weights = 2 ** torch.arange(n, device=indices.device)
    return ((indices.unsqueeze(1) & weights.view(1, -1, 1, 1)) != 0).long()


def _lfq_bits(args: dict[str, Any], source: str) -> int:
    """The bits per token: `embed_dim` = `z_channels` = log2(`n_embed`) (LFQ has no
    projection in `VQModel`)."""
    z = ddconfig_value(args, "z_channels", source)
    dim = model_value(args, "embed_dim", source)
    size = model_value(args, "n_embed", source)
    if dim != z or size != 2**dim:
        raise VQBenchError(
            f"{source}: LFQ needs embed_dim = z_channels = log2(n_embed) (got {dim}, {z}, "
            f"{size}); give the official config"
        )
    return int(math.log2(size))
