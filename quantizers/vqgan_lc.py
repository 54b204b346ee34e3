"""VQGAN-LC (Zhu et al. 2024, arXiv 2406.11837): a frozen codebook of k-means'd image features.

Before training, image features are clustered into `codebook_size` centres that form a frozen
table `F` (`codebook_size x feature_dim`). Only a projector `P: feature_dim -> lookup_dim` is
trained, so the lookup codes are `C = P(F)`; tokens enter the lookup space through a 1x1 conv
(`dim -> lookup_dim`, the reference's `quant_conv`) and leave through its mirror. Lookup and
STE are vanilla VQ's. Loss weights (`recipe`): `reference` (default), VQGAN-LC's own
`rate_q 0.1 x (commitment 1 + codebook 0.33)`, i.e. beta 0.1 and codebook_weight 0.033, or
`shared` (codebook 1.0, commitment 0.25; `harmonised` is its old name).

k-means (`kmeans_method`): `lloyd` (default) is the reference's `kmeans_pytorch.kmeans`:
full-batch Lloyd from random distinct features to `kmeans_tolerance` 1e-4
(`vqbench.kmeans.lloyd`), capped at 300 iterations (`kmeans_iterations`; the reference has
no cap, which never ends when there are fewer distinct features than centres);
`minibatch` is mini-batch k-means++ (scikit-learn's `MiniBatchKMeans`, or faiss where
installed), `kmeans_iterations` (default 20) iterations.

Feature extractors (`extractor`):
* `patches` (default, needs no download): raw `patch_size x patch_size` RGB patches of the
  training images, `3 p^2` features each.
* any timm model name with weights. The paper's is CLIP ViT-L/14: use
  `vit_large_patch14_clip_quickgelu_224.openai` (timm's QuickGELU variant, which timm documents
  for reproducing the original OpenAI results). As the reference does
  (`codebook_generation/clip_feature_generation.py`: `ln_post(tokens) @ proj`), every patch
  token goes through the model's final norm and its projection head (`projection: head`,
  768-d for ViT-L/14), and the 16 x 16 grid is average-pooled to `pool_to x pool_to` (4 x 4,
  the reference's `--downsample 4`). Weights come from timm's cache or download, or a local file
  given as `extractor_weights`.

Sampling (what k-means sees): the trainer hands `init_from_data` the training images in a
seeded, class-balanced random order (`vqbench.data.balanced_order`: every prefix holds about
as many images of each class), with their class labels; features are read until
`max_features`. `kmeans: global` clusters them all at once; `kmeans: per_class` is the
reference's `minibatch_kmeans_per_class.py`: each class's features are clustered into its own
share of the centres (100 per class for 1,000 classes and 100,000 codes; shares differ by at
most one when the classes do not divide the codebook), which needs labelled data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal
from unittest import mock

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.errors import VQBenchError
from vqbench.kmeans import kmeans, kmeans_backend, lloyd
from vqbench.pretrained import offline, unreachable
from vqbench.quantizer import (
    ExplicitCodebookParams,
    ExplicitCodebookQuantizer,
    QuantizerOutput,
    register_quantizer,
)

#: VQGAN-LC's own loss weights: rate_q 0.1 x (commitment 1 + codebook 0.33).
REFERENCE_WEIGHTS = {"beta": 0.1, "codebook_weight": 0.033}


class VQGANLCParams(ExplicitCodebookParams):
    lookup_dim: pydantic.PositiveInt = 8
    extractor: str = "patches"
    extractor_weights: str | None = None
    projection: Literal["head", "none"] = "head"
    patch_size: pydantic.PositiveInt = 4
    pool_to: pydantic.PositiveInt = 4
    max_features: pydantic.PositiveInt = 1_000_000
    kmeans: Literal["global", "per_class"] = "global"
    kmeans_seed: pydantic.NonNegativeInt = 0
    kmeans_method: Literal["lloyd", "minibatch"] = "lloyd"
    kmeans_tolerance: pydantic.PositiveFloat = 1e-4
    kmeans_iterations: pydantic.PositiveInt | None = None
    beta: pydantic.NonNegativeFloat = REFERENCE_WEIGHTS["beta"]
    codebook_weight: pydantic.NonNegativeFloat = REFERENCE_WEIGHTS["codebook_weight"]

    shared_recipe: ClassVar[dict[str, Any]] = {"beta": 0.25, "codebook_weight": 1.0}


def hub_offline(on: bool):
    """Hugging Face Hub in offline mode (its cache only: no retries) while `on`."""
    if not on:
        return contextlib.nullcontext()
    from huggingface_hub import constants

    return mock.patch.object(constants, "HF_HUB_OFFLINE", True)


#: Extractors whose weights could not be had in this process (name -> the error's line), so
#: that a missing file is reported once and never looked for again.
_MISSING_EXTRACTORS: dict[str, str] = {}


def check_extractor(name: str, weights: str | None) -> None:
    """`name` is a timm model and `weights`, where given, a file (nothing is loaded)."""
    import timm

    if not timm.is_model(name):
        raise VQBenchError(
            f"vqgan_lc.extractor='{name}' is neither 'patches' nor a timm model "
            f"name; see timm.list_models('*clip*')"
        )
    if weights and not Path(weights).is_file():
        raise VQBenchError(
            f"vqgan_lc.extractor='{name}' needs pretrained weights that could not be loaded "
            f"(extractor_weights '{weights}' does not exist); set extractor_weights to a local "
            f".safetensors/.pth file of that model"
        )


def extractor_width(name: str, keep_head: bool) -> int:
    """The width of the extractor's features (its head's output with `keep_head`), from the
    architecture alone: built on the meta device, without weights, so nothing is downloaded."""
    import timm

    extra = {} if keep_head else {"num_classes": 0}
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **extra)
    return model.num_classes if keep_head else model.num_features


def _weights_source(name: str) -> str:
    """The address timm downloads `name`'s weights from (the Hub, or a plain URL)."""
    import timm
    from huggingface_hub import constants

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and not cfg.hf_hub_id and cfg.url:
        return cfg.url
    return constants.ENDPOINT


def _create(name: str, weights: str | None, keep_head: bool, cache_only: bool) -> nn.Module:
    import timm

    overlay = {"file": weights} if weights else None
    extra = {} if keep_head else {"num_classes": 0}
    with hub_offline(cache_only):
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **extra)


def _weights_error(name: str, reason: str) -> VQBenchError:
    line = (
        f"vqgan_lc.extractor='{name}' needs pretrained weights that could not be loaded "
        f"({reason}); run once with internet access so timm caches them, or set "
        f"extractor_weights to a local .safetensors/.pth file of that model"
    )
    _MISSING_EXTRACTORS[name] = line
    return VQBenchError(line)


def load_timm_extractor(name: str, weights: str | None, keep_head: bool) -> nn.Module:
    """A pretrained timm model (with its head, the projection, if `keep_head`), or a one-line
    error saying how to get the weights. The file given, else timm's cache; a download only
    when the cache lacks the weights, the process is not offline (`VQBENCH_OFFLINE`,
    `HF_HUB_OFFLINE`) and the server answers within seconds (never the Hub's retries on a
    machine without network). A failure is remembered: once per process and extractor."""
    check_extractor(name, weights)
    if name in _MISSING_EXTRACTORS and not weights:
        raise VQBenchError(_MISSING_EXTRACTORS[name])
    try:
        model = _create(name, weights, keep_head, cache_only=True)
    except Exception as err:  # not cached, or a file that is not this model's state dict
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if weights:
            raise _weights_error(name, reason) from None
        why = "offline, and not in the cache" if offline() else unreachable(_weights_source(name))
        if why is not None:
            raise _weights_error(name, why) from None
        try:
            model = _create(name, None, keep_head, cache_only=False)
        except Exception as err:  # refused, interrupted, a server error after retries
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise _weights_error(name, reason) from None
    return model.eval().requires_grad_(False)


@register_quantizer("vqgan_lc")
class VQGANLC(ExplicitCodebookQuantizer):
    """VQGAN-LC: frozen k-means codebook of image features, trained projector."""

    Params = VQGANLCParams
    small_config = {"codebook_size": 64, "dim": 16, "lookup_dim": 4, "patch_size": 2}
    initialises_from_data = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        self._extractor: list[nn.Module] = []  # kept out of state_dict and .to()
        if p.extractor == "patches":
            feature_dim = 3 * p.patch_size**2
        else:  # its weights are loaded when features are first extracted (`extractor`)
            check_extractor(p.extractor, p.extractor_weights)
            feature_dim = extractor_width(p.extractor, p.projection == "head")
        self.register_buffer("features", torch.randn(p.codebook_size, feature_dim))
        self.projector = nn.Linear(feature_dim, p.lookup_dim)
        nn.init.normal_(self.projector.weight, std=p.lookup_dim**-0.5)
        self.project_in = nn.Linear(p.dim, p.lookup_dim)
        self.project_out = nn.Linear(p.lookup_dim, p.dim)
        self.init_info: dict[str, object] = {}

    # ---- codebook initialisation ----------------------------------------------------------
    def extractor(self) -> nn.Module:
        """The pretrained feature extractor, loaded on first use: only the codebook's
        initialisation needs it, so a trained model (evaluation, export, a dry run's parameter
        count) is built without its weights."""
        if not self._extractor:
            p = self.params
            keep_head = p.projection == "head"
            self._extractor.append(load_timm_extractor(p.extractor, p.extractor_weights, keep_head))
        return self._extractor[0]

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """`(N, feature_dim)` features of images `(B, 3, H, W)` in [-1, 1]."""
        p = self.params
        if p.extractor == "patches":
            patches = F.unfold(images.float(), kernel_size=p.patch_size, stride=p.patch_size)
            return patches.transpose(1, 2).reshape(-1, patches.shape[1])
        model = self.extractor()
        cfg = model.pretrained_cfg
        x = F.interpolate(
            (images.float() + 1) / 2,
            size=cfg["input_size"][1:],
            mode=cfg.get("interpolation", "bicubic"),  # CLIP's preprocessing resizes bicubically
            antialias=True,
            align_corners=False,
        )
        mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1)
        feats = model.to(x.device).forward_features((x - mean) / std)  # final norm included
        if feats.ndim == 3:  # ViT tokens: drop class/register tokens, back to a grid
            feats = feats[:, getattr(model, "num_prefix_tokens", 0) :]
            if p.projection == "head":  # CLIP's `@ proj`, on every patch token
                feats = model.get_classifier()(feats)
            side = int(feats.shape[1] ** 0.5)
            feats = feats.transpose(1, 2).reshape(feats.shape[0], -1, side, side)
        pooled = F.adaptive_avg_pool2d(feats.float(), p.pool_to)
        return pooled.flatten(2).transpose(1, 2).reshape(-1, pooled.shape[1])

    @torch.no_grad()
    def read_features(self, batches) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (and each one's class) of the first `max_features` of `batches`, which
        yields `(images, labels or None)` in a class-balanced random order."""
        p = self.params
        chunks, classes, total = [], [], 0
        for images, labels in batches:
            feats = self.extract_features(images.to(self.features.device)).cpu()
            chunks.append(feats)
            if labels is not None:
                classes.append(labels.repeat_interleave(feats.shape[0] // len(labels)))
            total += feats.shape[0]
            if total >= p.max_features:
                break
        if not chunks:
            raise VQBenchError("vqgan_lc.init_from_data got no images; pass the training loader")
        features = torch.cat(chunks)[: p.max_features]
        labels = torch.cat(classes)[: p.max_features] if classes else None
        return features, labels

    def cluster(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """`(codebook_size, D)` centres: one k-means, or one per class (the reference's)."""
        p = self.params
        if p.kmeans_method == "lloyd":

            def run(x: torch.Tensor, k: int) -> torch.Tensor:
                return lloyd(
                    x,
                    k,
                    seed=p.kmeans_seed,
                    tol=p.kmeans_tolerance,
                    max_iterations=p.kmeans_iterations or 300,
                )
        else:

            def run(x: torch.Tensor, k: int) -> torch.Tensor:
                return kmeans(x, k, seed=p.kmeans_seed, iterations=p.kmeans_iterations or 20)

        if p.kmeans == "global":
            return run(features, p.codebook_size)
        if labels is None:
            raise VQBenchError(
                "vqgan_lc.kmeans='per_class' needs labelled images (class folders of an image "
                "folder); use kmeans='global' for unlabelled data such as the embedded photos"
            )
        present = labels.unique()
        shares = torch.full((len(present),), p.codebook_size // len(present))
        shares[: p.codebook_size % len(present)] += 1
        if (shares == 0).any():
            raise VQBenchError(
                f"vqgan_lc.kmeans='per_class': {len(present)} classes for {p.codebook_size} "
                f"codes leaves classes without a centre; use more codes or kmeans='global'"
            )
        return torch.cat([run(features[labels == c], int(k)) for c, k in zip(present, shares)])

    def init_from_data(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]
    ) -> dict[str, object]:
        """k-means image features into the frozen codebook (once, before step 0).

        `batches` yields `(images, labels)` (labels None for unlabelled data) in the order the
        features should be read: the trainer passes a seeded, class-balanced random order.
        """
        features, labels = self.read_features(batches)
        self.features.copy_(self.cluster(features, labels).to(self.features))
        self.init_info = {
            "extractor": self.params.extractor,
            "features_clustered": int(features.shape[0]),
            "classes": int(labels.unique().numel()) if labels is not None else None,
            "kmeans": f"{self.params.kmeans} ({self.kmeans_name()})",
        }
        return self.init_info

    def kmeans_name(self) -> str:
        """How the clustering is described in reports."""
        if self.params.kmeans_method == "lloyd":
            return f"full-batch Lloyd, tol {self.params.kmeans_tolerance:g}"
        return f"mini-batch k-means++, {kmeans_backend()}"

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
