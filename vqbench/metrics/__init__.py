"""Evaluation metrics, each accumulated over a whole split and reduced across processes.

Every metric follows one contract (`vqbench.metrics.base.Metric`): `update(originals,
reconstructions, indices)` and `compute() -> {name: value or Unavailable}`.
"""

from __future__ import annotations

import torch

from vqbench.metrics.base import Metric, Unavailable
from vqbench.metrics.fid import FID, FIDStatistics, SampleFID
from vqbench.metrics.image import ImageQuality, psnr_per_image, ssim_per_image
from vqbench.metrics.perceptual import LPIPS
from vqbench.metrics.usage import CodebookUsage, usage_from_counts

#: The metric names an evaluation may ask for (`eval.metrics`).
METRIC_NAMES = ("usage", "psnr", "ssim", "lpips", "fid")


def build_metrics(
    names: list[str],
    *,
    codebook_size: int,
    code_groups: torch.Tensor | None = None,
    index_sizes: list[int] | None = None,
    lpips_net: str = "vgg",
    lpips_weights: str | None = None,
    inception_weights: str | None = None,
    fid_backend: str = "torch-fidelity",
    fid_mode: str | None = None,
    fid_stats: str | None = None,
    fid_protocol: str | None = None,
    paper_batch: int = 64,
    device: torch.device | str = "cpu",
) -> list[Metric]:
    """Usage (always; per index and as the product for a composite's `index_sizes`) and the
    metrics `names` asks for, in a fixed order (usage, image quality, LPIPS, FID).
    `fid_protocol`: the evaluation protocol's label, checked against `fid_stats`'."""
    wanted = set(names)
    metrics: list[Metric] = [CodebookUsage(codebook_size, code_groups, index_sizes).to(device)]
    if {"psnr", "ssim"} & wanted:
        metrics.append(ImageQuality(paper_batch))
    if "lpips" in wanted:
        metrics.append(LPIPS(lpips_net, lpips_weights, device=device))
    if "fid" in wanted:
        reference = FIDStatistics.load(fid_stats) if fid_stats else None
        metrics.append(
            FID(
                inception_weights,
                device=device,
                backend=fid_backend,
                reference=reference,
                mode=fid_mode,
                protocol=fid_protocol,
            )
        )
    return metrics


__all__ = [
    "FID",
    "FIDStatistics",
    "LPIPS",
    "METRIC_NAMES",
    "CodebookUsage",
    "ImageQuality",
    "Metric",
    "SampleFID",
    "Unavailable",
    "build_metrics",
    "psnr_per_image",
    "ssim_per_image",
    "usage_from_counts",
]
