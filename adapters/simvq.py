"""SimVQ's image tokenizer (youngsheen/SimVQ, `taming/models/vq.py` `VQModel`).

The MAGVIT-v2-style encoder and decoder without adaptive norms (`_magvit2_blocks`,
`adaptive=False`) around SimVQ's quantizer (Zhu et al. 2024, Eq. 5-6): a frozen basis `C^`
(`quantize.embedding`) mapped by one linear layer (`quantize.embedding_proj`) to the codebook
`C = W C^ + b`; a token's index is its nearest code in squared Euclidean distance, computed as
the official code does (`|z|^2 + |c|^2 - 2 z.c`, first index among ties), its code `C[index]`.
Released checkpoints are Lightning `.ckpt` files; their evaluation uses the EMA weights
(`use_ema: True` in the config), as `use_ema` does here by default.

Presets (`preset=`), the released ImageNet 128x128 tokenizers of the README's table
(`vq_log/simvq_{1k,8k,65k,262k}`, f8): `imagenet128_1k`, `imagenet128_8k`, `imagenet128_65k`,
`imagenet128_262k`. Their own config files are published beside the weights
(`vq_log/simvq_<n>/size128/config.yaml`), not in the repository: the presets are the
repository's `configs/imagenet_simvq_128_B.yaml` with the codebook size of each release; give
`config=` the release's file to be sure.

Not supported: the audio tokenizers (`vq_audio.py`) and the `remap` option.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from vqbench_adapters._lightning_ema import EMACheckpointTokenizer, ddconfig_value, model_value
from vqbench_adapters._magvit2_blocks import Decoder, Encoder

from vqbench.errors import VQBenchError

#: The released ImageNet 128x128 tokenizers (README, Table 1) and their codebook sizes.
RELEASES = {"1k": 1024, "8k": 8192, "65k": 65536, "262k": 262144}


def _preset(codes: int) -> dict[str, Any]:
    ddconfig = {"z_channels": 128, "ch": 128, "ch_mult": [1, 2, 2, 4], "num_res_blocks": 2}
    quant = {"n_e": codes, "e_dim": 128}
    return {"ddconfig": ddconfig, "quantconfig": {"params": quant}, "use_ema": True} | {
        "image_size": 128
    }


#: Images whose distances to the codebook `encode` holds at once.
LOOKUP_BATCH = 8
PRESETS = {f"imagenet128_{name}": _preset(codes) for name, codes in RELEASES.items()}


class SimVQQuantizer(nn.Module):
    """The frozen basis and its linear map, under the official names."""

    def __init__(self, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, dim)
        self.embedding.weight.requires_grad_(False)  # frozen: no EMA copy in the checkpoint
        self.embedding_proj = nn.Linear(dim, dim)

    def codebook(self) -> torch.Tensor:
        """C = W C^ + b (Eq. 5)."""
        return self.embedding_proj(self.embedding.weight)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) -> (B, h, w): the nearest code, the distances as the official code
        sums them."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.codebook()
        distances = (
            torch.sum(flat**2, dim=1, keepdim=True)
            + torch.sum(codes**2, dim=1)
            - 2 * torch.einsum("bd,dn->bn", flat, codes.t())
        )
        return torch.argmin(distances, dim=1).view(b, h, w)


class SimVQ(EMACheckpointTokenizer):
    """SimVQ's image `VQModel`, in evaluation mode."""

    presets = PRESETS
    default_preset = "imagenet128_65k"

    source: ClassVar[str] = (
        "youngsheen/SimVQ@d8bd94d9ca30, taming/models/vq.py VQModel "
        "(modules/diffusionmodules/improved_model.py, modules/vqvae/quantize.py SimVQ)"
    )

    def __init__(self, *, blocks: dict[str, Any], codebook_size: int, resolution: int = 128):
        super().__init__()
        self.encoder = Encoder(**blocks)
        self.decoder = Decoder(**blocks, adaptive=False)
        self.quantize = SimVQQuantizer(codebook_size, blocks["z_channels"])
        self.resolution = resolution
        self._downsampling = 2 ** (len(blocks["ch_mult"]) - 1)

    @classmethod
    def from_args(cls, args: dict[str, Any], source: str) -> SimVQ:
        keys = ("ch", "ch_mult", "num_res_blocks", "z_channels")
        blocks = {key: ddconfig_value(args, key, source) for key in keys}
        codebook_size = _quantizer_size(args, blocks["z_channels"], source)
        resolution = int(args.get("image_size", 128))
        return cls(blocks=blocks, codebook_size=codebook_size, resolution=resolution)

    @property
    def downsampling(self) -> int:
        return self._downsampling

    def index_sizes(self) -> list[int]:
        return [self.quantize.embedding.num_embeddings]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """`LOOKUP_BATCH` images at a time: the distances to 2^18 codes take 0.27 GB per
        128x128 image (and as much again for the products)."""
        parts = images.split(LOOKUP_BATCH)
        return torch.cat([self.quantize.indices(self.encoder(part)) for part in parts])

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        codes = F.embedding(indices, self.quantize.codebook())
        return self.decoder(codes.permute(0, 3, 1, 2).contiguous())


def _quantizer_size(args: dict[str, Any], z_channels: int, source: str) -> int:
    """`quantconfig.params.n_e`, checking that the codes have the encoder's width (`e_dim`:
    SimVQ's `VQModel` has no `quant_conv`)."""
    params = model_value(args, "quantconfig", source).get("params", {})
    if "n_e" not in params or params.get("e_dim") != z_channels:
        raise VQBenchError(
            f"{source}: quantconfig.params needs n_e and e_dim = ddconfig.z_channels "
            f"({z_channels}); give the official config"
        )
    return int(params["n_e"])
