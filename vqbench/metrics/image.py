"""PSNR and SSIM over a split, on images quantised to uint8 and scaled to [0, 1].

* PSNR: mean over images of each image's PSNR (data range 1). The batch-level variant SimVQ's
  evaluation computed (PSNR of each batch's pooled MSE, averaged over batches; protocol.md
  section 2.7) is kept as a separate, labelled value: it depends on the batch size.
* SSIM: scikit-image's `structural_similarity` defaults (7x7 uniform window, K1 0.01, K2 0.03,
  sample covariance, data range 1, mean over channels of the valid region), per image, mean
  over images, computed on the device with a box filter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqbench.data import to_uint8
from vqbench.metrics.base import Metric


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to the uint8 grid, as float64 in [0, 1]."""
    return to_uint8(images).double() / 255.0


def psnr_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def ssim_per_image(
    x: torch.Tensor,
    y: torch.Tensor,
    win: int = 7,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """SSIM of each image pair `(B, C, H, W)` as scikit-image computes it (see module doc)."""
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    n = win * win
    cov_norm = n / (n - 1)

    def mean(t: torch.Tensor) -> torch.Tensor:  # the valid region of a 7x7 box filter
        return F.avg_pool2d(t, win, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


class ImageQuality(Metric):
    """PSNR (per image and SimVQ's per batch) and SSIM, accumulated over a split."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("psnr_sum", "ssim_sum", "images", "batch_psnr_sum", "batches"):
            self.add_state(name, torch.zeros((), dtype=torch.float64))

    def update(
        self,
        originals: torch.Tensor,
        reconstructions: torch.Tensor,
        indices: torch.Tensor | None = None,
    ) -> None:
        x, y = unit_range(originals), unit_range(reconstructions)
        self.psnr_sum += psnr_per_image(x, y).sum().cpu()
        self.ssim_sum += ssim_per_image(x, y).sum().cpu()
        self.images += x.shape[0]
        self.batch_psnr_sum += 10 * torch.log10(1.0 / (x - y).pow(2).mean()).cpu()
        self.batches += 1

    def compute(self) -> dict[str, float]:
        s = self.synced_states()
        return {
            "psnr": float(s["psnr_sum"] / s["images"]),
            "ssim": float(s["ssim_sum"] / s["images"]),
            "psnr_batch": float(s["batch_psnr_sum"] / s["batches"]),
        }
