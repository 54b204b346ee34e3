"""VQBridge / FVQ (Chang et al. 2025, arXiv 2509.10140; official code yfChang-cv/FVQ,
`tokenizer/tokenizer_image/vq_model_qbridge_release.py` `VectorQuantizer` with the ViT projector
of `qbridge_ViT.py`, the paper's version per the repository's README).

The lookup codebook is not a free table: a base codebook `E` (`codebook_size x dim`) is laid
out as a `sqrt(K) x sqrt(K)` image with `dim` channels (code `k` at row `k // sqrt(K)`, column
`k % sqrt(K)`) and passed through a small ViT, the "bridge" (paper Sec. 3.2):

    compress:  p x p patches of codes -> one token each (a strided convolution, PatchEmbed)
    process:   `depth` pre-norm transformer blocks (attention + GELU MLP, no positional code)
    recover:   LayerNorm, a linear layer to p * p * dim, un-patchify back to the K codes

    C = Bridge(E),   k = argmin_j ||z - C_j||^2,   z_q = z + sg(C_k - z)

so a gradient reaching one code moves every code through the shared bridge, which is what
keeps every code in use. The loss is VQ-VAE's on the projected codes (codebook 1.0,
commitment 0.25, as `VectorQuantizer.forward` with `commit_loss_beta: 0.25`,
`entropy_loss_ratio: 0.0`). Initialisation follows `VQBridge.initialize_weights`: E ~
U(-1/K, 1/K), every linear layer (and the patch convolution, viewed as a matrix) Xavier-uniform
with zero bias, the recover layer zero, so the projected codebook starts at zero.

At inference the bridge is a constant: `codebook()` caches its output while neither training
nor recording gradients, keyed on the parameters' versions (an optimiser step or a loaded
checkpoint recomputes it).

The reference trains every parameter with an annealed learning rate (warmup, hold, linear
decay, its `sche_type: lin`): that is the engine's schedule `optim.schedule.kind:
hold_linear` (`vqbench.build.schedule_factor`), stepped by the trainer and kept in checkpoints.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pydantic
import torch
from timm.models.vision_transformer import Attention, Mlp, PatchEmbed
from torch import nn

from vqbench.quantizer import ExplicitCodebookParams, ExplicitCodebookQuantizer, register_quantizer

#: Largest codebook the release scripts pair with 4 x 4 patches (`FVQ-16384.sh`, QBridge-L/4);
#: larger ones use 8 x 8 (`FVQ-65536.sh`, `FVQ-262144.sh`, QBridge-L/8).
SMALL_PATCH_MAX_CODES = 16_384


class BridgeBlock(nn.Module):
    """Pre-norm transformer block without affine norms (the reference's `ViTBlock`)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), act_layer=lambda: nn.GELU("tanh"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    """Recover: LayerNorm (no affine) and a linear layer to `patch * patch * channels`."""

    def __init__(self, hidden: int, patch: int, channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm_final(x))


class Bridge(nn.Module):
    """The compress-process-recover ViT over a `(1, channels, side, side)` codebook image.

    Parameter names are the reference's (`x_embedder`, `blocks`, `final_layer`), so its
    weights load as they are.
    """

    def __init__(
        self, side: int, channels: int, patch: int, depth: int, heads: int, head_dim: int,
        mlp_ratio: float,
    ) -> None:  # fmt: skip
        super().__init__()
        hidden = head_dim * heads
        self.patch = patch
        self.x_embedder = PatchEmbed(side, patch, channels, hidden, bias=True)
        self.blocks = nn.ModuleList(BridgeBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden, patch, channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform linear maps and patch projection, zero biases, zero recover layer."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.x_embedder(image)  # (1, tokens, hidden)
        for block in self.blocks:
            x = block(x)
        return self.unpatchify(self.final_layer(x), image.shape[1])

    def unpatchify(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """`(N, T, p * p * C)` tokens back to the `(N, C, side, side)` image."""
        n, tokens, _ = x.shape
        grid, p = math.isqrt(tokens), self.patch
        x = x.reshape(n, grid, grid, p, p, channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, channels, grid * p, grid * p)


class VQBridgeParams(ExplicitCodebookParams):
    """`patch_size` None picks the release scripts' projector for the codebook size: 4 up to
    16,384 codes (QBridge-L/4), 8 above (QBridge-L/8); `depth`, `heads`, `head_dim` (the
    reference's `head_hidden_size`) and `mlp_ratio` are QBridge-L's. `train_base_codebook:
    false` freezes `E` (the reference's `emb_nograd`)."""

    codebook_size: pydantic.PositiveInt = 16_384
    patch_size: pydantic.PositiveInt | None = None
    depth: pydantic.PositiveInt = 2
    heads: pydantic.PositiveInt = 4
    head_dim: pydantic.PositiveInt = 64
    mlp_ratio: pydantic.PositiveFloat = 2.0
    train_base_codebook: bool = True

    @property
    def side(self) -> int:
        return math.isqrt(self.codebook_size)

    @property
    def patch(self) -> int:
        if self.patch_size is not None:
            return self.patch_size
        return 4 if self.codebook_size <= SMALL_PATCH_MAX_CODES else 8

    @pydantic.model_validator(mode="after")
    def _square_grid_of_patches(self) -> VQBridgeParams:
        side = self.side
        if side * side != self.codebook_size:
            raise ValueError(
                f"codebook_size={self.codebook_size} is not a square (the bridge sees the "
                f"codebook as a square image); use e.g. {side * side} or {(side + 1) ** 2}"
            )
        if side % self.patch:
            raise ValueError(
                f"the codebook's side {side} is not a multiple of patch_size={self.patch}; "
                f"use a codebook_size whose square root it divides"
            )
        return self

    def lookup_bytes(self) -> int:
        # Base and projected codes in float32, plus the bridge's activations of the same size.
        return 3 * 4 * self.codebook_size * self.dim


@register_quantizer("vqbridge")
class VQBridgeQuantizer(ExplicitCodebookQuantizer):
    """VQBridge (FVQ): a ViT projector maps a base codebook to the lookup codebook."""

    Params = VQBridgeParams
    small_config: ClassVar[dict[str, Any]] = {
        "codebook_size": 64, "dim": 16, "patch_size": 2, "head_dim": 8,
    }  # fmt: skip

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        # The reference's order of construction, so a seed gives its weights.
        self.embedding = nn.Embedding(p.codebook_size, p.dim)
        self.embedding.weight.data.uniform_(-1.0 / p.codebook_size, 1.0 / p.codebook_size)
        self.embedding.requires_grad_(p.train_base_codebook)
        self.qbridge = Bridge(p.side, p.dim, p.patch, p.depth, p.heads, p.head_dim, p.mlp_ratio)
        self._cached: tuple[tuple, torch.Tensor] | None = None

    def project(self) -> torch.Tensor:
        """The `(K, dim)` lookup codebook `Bridge(E)`, computed afresh."""
        p = self.params
        image = self.embedding.weight.t().reshape(1, p.dim, p.side, p.side)
        return self.qbridge(image).reshape(p.dim, p.codebook_size).t()

    def codebook(self) -> torch.Tensor:
        """`project()`; cached while neither training nor recording gradients."""
        if self.training or torch.is_grad_enabled():
            return self.project()
        key = tuple((t.data_ptr(), t._version) for t in self.parameters())
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self.project())
        return self._cached[1]

    def independent_groups(self) -> int:
        return 1  # every code's gradient passes through the one shared bridge
