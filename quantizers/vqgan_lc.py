"""VQGAN-LC (Zhu et al. 2024, arXiv 2406.11837): a frozen codebook of k-means'd image features.

Before training, image features are clustered into `codebook_size` centres that form a frozen
table `F` (`codebook_size x feature_dim`). Only a projector `P: feature_dim -> lookup_dim` is
trained, so the lookup codes are `C = P(F)`; tokens enter the lookup space through a 1x1 conv
(`dim -> lookup_dim`, the reference's `quant_conv`) and leave through its mirror. Lookup, loss
(harmonised: codebook 1.0, commitment 0.25) and STE are vanilla VQ's.

Feature extractors (`extractor`):
* `patches` (default, needs no download): raw `patch_size x patch_size` RGB patches of the
  training images, `3 p^2` features each.
* any timm model name with pretrained weights, e.g. `vit_large_patch14_clip_224.openai` (the
  paper's CLIP ViT-L/14): its patch features, average-pooled to a `pool_to x pool_to` grid
  (the reference pools 16x16 to 4x4). Weights come from timm's download, or from a local file
  given as `extractor_weights`.

The trainer calls `init_from_data(batches)` once before step 0; it returns (and keeps in
`init_info`) the extractor, the number of features clustered and the k-means backend.
"""

from __future__ import annotations

from collections.abc import Iterable

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.errors import VQBenchError
from vqbench.kmeans import kmeans, kmeans_backend
from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    QuantizerOutput,
    register_quantizer,
)


class VQGANLCParams(ExplicitCodebookParams):
    lookup_dim: pydantic.PositiveInt = 8
    extractor: str = "patches"
    extractor_weights: str | None = None
    patch_size: pydantic.PositiveInt = 4
    pool_to: pydantic.PositiveInt = 4
    max_features: pydantic.PositiveInt = 1_000_000
    kmeans_seed: pydantic.NonNegativeInt = 0
    kmeans_iterations: pydantic.PositiveInt = 20


def load_timm_extractor(name: str, weights: str | None) -> nn.Module:
    """A pretrained timm model without its head, or a one-line error saying how to get weights."""
    import timm

    if not timm.is_model(name):
        raise VQBenchError(
            f"vqgan_lc.extractor='{name}' is neither 'patches' nor a timm model "
            f"name; see timm.list_models('*clip*')"
        )
    overlay = {"file": weights} if weights else None
    try:
        model = timm.create_model(
            name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay
        )
    except Exception as err:  # network errors, missing files, wrong state dicts
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VQBenchError(
            f"vqgan_lc.extractor='{name}' needs pretrained weights that could not be loaded "
            f"({reason}); run once with internet access so timm caches them, or set "
            f"extractor_weights to a local .safetensors/.pth file of that model"
        ) from None
    return model.eval().requires_grad_(False)


@register_quantizer("vqgan_lc")
class VQGANLC(ExplicitCodebookQuantizer):
    """VQGAN-LC: frozen k-means codebook of image features, trained projector."""

    Params = VQGANLCParams
    initialises_from_data = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        self._extractor: list[nn.Module] = []  # kept out of state_dict and .to()
        if p.extractor == "patches":
            feature_dim = 3 * p.patch_size**2
        else:
            self._extractor.append(load_timm_extractor(p.extractor, p.extractor_weights))
            feature_dim = self._extractor[0].num_features
        self.register_buffer("features", torch.randn(p.codebook_size, feature_dim))
        self.projector = nn.Linear(feature_dim, p.lookup_dim)
        nn.init.normal_(self.projector.weight, std=p.lookup_dim**-0.5)
        self.project_in = nn.Linear(p.dim, p.lookup_dim)
        self.project_out = nn.Linear(p.lookup_dim, p.dim)
        self.init_info: dict[str, object] = {}

    # ---- codebook initialisation ----------------------------------------------------------
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """`(N, feature_dim)` features of images `(B, 3, H, W)` in [-1, 1]."""
        p = self.params
        if p.extractor == "patches":
            patches = F.unfold(images.float(), kernel_size=p.patch_size, stride=p.patch_size)
            return patches.transpose(1, 2).reshape(-1, patches.shape[1])
        model = self._extractor[0]
        cfg = model.pretrained_cfg
        x = F.interpolate(
            (images.float() + 1) / 2,
            size=cfg["input_size"][1:],
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1)
        feats = model.to(x.device).forward_features((x - mean) / std)
        if feats.ndim == 3:  # ViT tokens: drop class/register tokens, back to a grid
            feats = feats[:, getattr(model, "num_prefix_tokens", 0) :]
            side = int(feats.shape[1] ** 0.5)
            feats = feats.transpose(1, 2).reshape(feats.shape[0], -1, side, side)
        pooled = F.adaptive_avg_pool2d(feats.float(), p.pool_to)
        return pooled.flatten(2).transpose(1, 2).reshape(-1, pooled.shape[1])

    @torch.no_grad()
    def init_from_data(self, batches: Iterable[torch.Tensor]) -> dict[str, object]:
        """k-means the features of `batches` of images into the frozen codebook (once, step 0)."""
        p = self.params
        chunks, total = [], 0
        for images in batches:
            feats = self.extract_features(images.to(self.features.device))
            chunks.append(feats.cpu())
            total += feats.shape[0]
            if total >= p.max_features:
                break
        if not chunks:
            raise VQBenchError("vqgan_lc.init_from_data got no images; pass the training loader")
        features = torch.cat(chunks)[: p.max_features]
        centres = kmeans(
            features, p.codebook_size, seed=p.kmeans_seed, iterations=p.kmeans_iterations
        )
        self.features.copy_(centres.to(self.features))
        self.init_info = {
            "extractor": p.extractor,
            "features_clustered": int(features.shape[0]),
            "kmeans": kmeans_backend(),
        }
        return self.init_info

    # ---- quantization ------------------------------------------------------------------------
    def codebook(self) -> torch.Tensor:
        return self.projector(self.features)

    def independent_groups(self) -> int:
        return 1  # one shared projector moves every code

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        out = self.lookup(self.project_in(z), self.codebook())
        out.z_q = self.project_out(out.z_q)
        return out

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.embedding(indices, self.codebook()))
