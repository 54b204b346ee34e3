"""Evaluation metrics, each accumulated over a whole split and reduced across processes."""

from vqbench.metrics.base import Metric, Unavailable
from vqbench.metrics.fid import FID
from vqbench.metrics.image import ImageQuality, psnr_per_image, ssim_per_image
from vqbench.metrics.perceptual import LPIPS
from vqbench.metrics.usage import CodebookUsage, usage_from_counts

__all__ = [
    "FID",
    "LPIPS",
    "CodebookUsage",
    "ImageQuality",
    "Metric",
    "Unavailable",
    "psnr_per_image",
    "ssim_per_image",
    "usage_from_counts",
]
