"""The VQGAN autoencoder of taming-transformers and of LlamaGen's VQ tokenizer, in vqbench's code.

IBQ's encoder and decoder are taming's too (TencentARC/SEED-Voken
`src/IBQ/modules/diffusionmodules/model.py` is taming's `model.py` but for line endings), so
`taming_coders` builds them for the `ibq` adapter. Both codebases build the same network
(LlamaGen's `vq_model.py` says it is modified from taming's
`taming/modules/diffusionmodules/model.py`): a convolutional encoder of resolution
levels (res blocks, self-attention at some levels, a strided convolution between levels), a
middle of res block, attention, res block, GroupNorm(32 groups, eps 1e-6) and swish before the
output convolution, and a mirrored decoder with one res block more per level and nearest
upsampling; a 1x1 `quant_conv` into the codebook's dimension, the nearest code, and a 1x1
`post_quant_conv` back. What differs is what the state dicts call the parts (`Layout`),
where attention sits (taming: at the listed resolutions; LlamaGen: the lowest level only) and
whether codes and latents are l2-normalised before the search (LlamaGen's
`codebook_l2_norm`). Dropout is left out: the adapters only evaluate, where it does nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vqbench.published import PublishedTokenizer
from vqbench.search import nearest_code


@dataclass(frozen=True)
class Layout:
    """The names a codebase's state dict gives the parts of the encoder and decoder."""

    #: The encoder's and the decoder's list of resolution levels.
    encoder_levels: str
    decoder_levels: str
    #: A level's list of res blocks (its attention blocks are `attn`).
    blocks: str
    #: The middle's res block, attention block, res block.
    middle: tuple[str, str, str]
    #: The decoder's levels listed by level (index 0: full resolution), else in decoding order.
    decoder_by_level: bool


#: taming-transformers: `down.{i}.block.{j}`, `mid.block_1`, `up.{i}` with `i` the level.
TAMING = Layout("down", "up", "block", ("block_1", "attn_1", "block_2"), True)
#: LlamaGen: `conv_blocks.{i}.res.{j}`, `mid.{0,1,2}`, the decoder's levels lowest first.
LLAMAGEN = Layout("conv_blocks", "conv_blocks", "res", ("0", "1", "2"), False)


def group_norm(channels: int) -> nn.GroupNorm:
    """Both codebases' `Normalize`: 32 groups, eps 1e-6, affine."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def conv3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def conv1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


class ResnetBlock(nn.Module):
    """`x + conv2(swish(norm2(conv1(swish(norm1(x))))))`, the skip through a 1x1
    `nin_shortcut` when the channels change (no time embedding: `temb_channels=0`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv3(in_channels, out_channels)
        self.norm2 = group_norm(out_channels)
        self.conv2 = conv3(out_channels, out_channels)
        if in_channels != out_channels:
            self.nin_shortcut = conv1(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the `h*w` positions, queries, keys and values from 1x1
    convolutions of the normalised input, scaled by `1/sqrt(c)`, residual after `proj_out`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = conv1(channels, channels)
        self.k = conv1(channels, channels)
        self.v = conv1(channels, channels)
        self.proj_out = conv1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)

        def tokens(conv: nn.Conv2d) -> torch.Tensor:  # (b, 1 head, hw, c)
            return conv(normed).reshape(b, 1, c, h * w).transpose(2, 3)

        q, k, v = tokens(self.q), tokens(self.k), tokens(self.v)
        attended = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c)
        return x + self.proj_out(attended.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve the size: pad one zero row and column at the bottom and right, then a stride-2
    3x3 convolution (`resamp_with_conv=True`, what both codebases use)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double the size: nearest neighbour, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Chain(nn.Module):
    """Modules applied one after the other, registered under the given names."""

    def __init__(self, named: Iterable[tuple[str, nn.Module]]) -> None:
        super().__init__()
        for name, module in named:
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class Level(nn.Module):
    """One resolution level: res blocks, each followed by attention when the level has it,
    then the resampling (`downsample` / `upsample`) unless it is the last level."""

    def __init__(
        self,
        layout: Layout,
        blocks: list[ResnetBlock],
        attention: bool,
        resample: tuple[str, nn.Module] | None,
    ) -> None:
        super().__init__()
        self.blocks_name = layout.blocks
        self.add_module(layout.blocks, nn.ModuleList(blocks))
        channels = blocks[-1].conv2.out_channels
        self.attn = nn.ModuleList([AttnBlock(channels) for _ in blocks] if attention else [])
        self.resample = resample[0] if resample else None
        if resample:
            self.add_module(*resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(getattr(self, self.blocks_name)):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return getattr(self, self.resample)(h) if self.resample else h


def middle(channels: int, layout: Layout) -> Chain:
    """Res block, attention, res block at the lowest resolution."""
    parts = (ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels))
    return Chain(zip(layout.middle, parts, strict=True))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> latents (B, out_channels, H/f, W/f), f = 2^(levels-1).

    `ch_mult[i]` times `ch` channels at level `i`; `attention_levels` the levels whose res
    blocks are each followed by self-attention."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attention_levels: Collection[int],
        out_channels: int,
        layout: Layout,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.downsampling = 2 ** (len(ch_mult) - 1)
        self.conv_in = conv3(in_channels, ch)
        levels, block_in = [], ch
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            blocks = [ResnetBlock(block_in if j == 0 else out, out) for j in range(num_res_blocks)]
            last = i == len(ch_mult) - 1
            down = None if last else ("downsample", Downsample(out))
            levels.append(Level(layout, blocks, i in attention_levels, down))
            block_in = out
        self.levels_name = layout.encoder_levels
        self.add_module(layout.encoder_levels, nn.ModuleList(levels))
        self.mid = middle(block_in, layout)
        self.norm_out = group_norm(block_in)
        self.conv_out = conv3(block_in, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in getattr(self, self.levels_name):
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents (B, z_channels, h, w) -> image (B, out_channels, h*f, w*f): the encoder
    mirrored, with `num_res_blocks + 1` res blocks per level."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attention_levels: Collection[int],
        z_channels: int,
        layout: Layout,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = conv3(z_channels, block_in)
        self.mid = middle(block_in, layout)
        decoding = []  # lowest resolution first
        for i in reversed(range(len(ch_mult))):
            out = ch * ch_mult[i]
            blocks = [
                ResnetBlock(block_in if j == 0 else out, out) for j in range(num_res_blocks + 1)
            ]
            up = None if i == 0 else ("upsample", Upsample(out))
            decoding.append(Level(layout, blocks, i in attention_levels, up))
            block_in = out
        self.by_level = layout.decoder_by_level
        self.levels_name = layout.decoder_levels
        stored = decoding[::-1] if layout.decoder_by_level else decoding
        self.add_module(layout.decoder_levels, nn.ModuleList(stored))
        self.norm_out = group_norm(block_in)
        self.conv_out = conv3(block_in, out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        levels = list(getattr(self, self.levels_name))
        for level in reversed(levels) if self.by_level else levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


#: The `ddconfig` keys that shape taming's encoder and decoder (besides the image channels).
CODER_KEYS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resolution", "z_channels")


def taming_coders(
    *,
    ch: int,
    ch_mult: Sequence[int],
    num_res_blocks: int,
    attn_resolutions: Collection[int],
    resolution: int,
    z_channels: int,
    in_channels: int = 3,
    out_ch: int = 3,
) -> tuple[Encoder, Decoder]:
    """taming's `Encoder(**ddconfig)` and `Decoder(**ddconfig)` (`double_z` off, as `VQModel`
    configs set it): level `i` (size `resolution / 2^i`) has attention when that size is in
    `attn_resolutions`."""
    attention = {i for i in range(len(ch_mult)) if resolution // 2**i in attn_resolutions}
    shared = {"ch": ch, "ch_mult": ch_mult, "num_res_blocks": num_res_blocks}
    shared |= {"attention_levels": attention, "layout": TAMING}
    encoder = Encoder(**shared, out_channels=z_channels, in_channels=in_channels)
    decoder = Decoder(**shared, z_channels=z_channels, out_channels=out_ch)
    return encoder, decoder


class Codebook(nn.Module):
    """`embedding.weight` (K, d) and the nearest-code search; with `l2_norm`, latents and codes
    are unit vectors before the search and the lookup (LlamaGen's `codebook_l2_norm`).
    `usage_buffer` registers LlamaGen's `codebook_used` (65,536 recent indices, training
    statistics only) so that a checkpoint holding it loads strictly."""

    def __init__(self, size: int, dim: int, *, l2_norm: bool = False, usage_buffer: bool = False):
        super().__init__()
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(size, dim)
        if usage_buffer:
            self.register_buffer("codebook_used", torch.zeros(65536))

    def codes(self) -> torch.Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, p=2, dim=-1) if self.l2_norm else weight

    def indices(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) -> (B, h, w): the code nearest each position's latent (normalising
        the latent, as LlamaGen does, does not change which unit code is nearest)."""
        b, d, h, w = latents.shape
        flat = latents.permute(0, 2, 3, 1).reshape(-1, d)
        if self.l2_norm:
            flat = F.normalize(flat, p=2, dim=-1)
        return nearest_code(flat, self.codes()).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) -> (B, d, h, w): the codes."""
        return self.codes()[indices].permute(0, 3, 1, 2).contiguous()


class VQAutoencoder(nn.Module):
    """`encoder`, `quant_conv`, `quantize`, `post_quant_conv`, `decoder`: the state-dict
    names of both `VQModel`s. `encode` gives indices, `decode` images."""

    def __init__(
        self, encoder: Encoder, decoder: Decoder, quantize: Codebook, z_channels: int
    ) -> None:
        super().__init__()
        dim = quantize.embedding.embedding_dim
        self.encoder, self.decoder, self.quantize = encoder, decoder, quantize
        self.quant_conv = conv1(z_channels, dim)
        self.post_quant_conv = conv1(dim, z_channels)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Before quantisation: `quant_conv(encoder(images))`."""
        return self.quant_conv(self.encoder(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantize.indices(self.latents(images))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(self.quantize.lookup(indices)))


class VQAutoencoderTokenizer(PublishedTokenizer):
    """A published tokenizer whose network is a `VQAutoencoder` (`self.model`): one index per
    latent position, `model.encode` and `model.decode` without gradients."""

    model: VQAutoencoder

    @property
    def downsampling(self) -> int:
        return self.model.encoder.downsampling

    def index_sizes(self) -> list[int]:
        return [self.model.quantize.embedding.num_embeddings]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.model.decode(indices)
