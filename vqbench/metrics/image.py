"""PSNR and SSIM over a split: ours, and the paper's (SimVQ's evaluation.py).

* `psnr` (ours, SPEC section 4): mean over images of each image's PSNR on the images rounded
  to uint8 (data range 1). It does not depend on how the split is batched.
* `psnr_batch` (the paper's, which follows SimVQ's `evaluation.py`; protocol.md section 2.7):
  the images are truncated to uint8 as SimVQ does (`(x + 1) / 2 * 255` cast to uint8, which
  also drops some original pixels by 1 LSB), and the PSNR of each batch's pooled MSE is
  averaged over batches of `paper_batch` (64) consecutive images of the split, the last,
  shorter batch counting as one. It is lower than the per-image mean (Jensen) and depends on
  the batch; the batches are the paper's whatever vqbench's eval batch or number of processes.
* `ssim` (the paper's and SPEC's): scikit-image's `structural_similarity` defaults (7x7 uniform
  window, K1 0.01, K2 0.03, sample covariance, data range 1, mean over channels of the valid
  region), per image on the truncated images, averaged within each batch of `paper_batch`
  images and then over batches, as SimVQ averages it. Computed on the device with box filters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqbench.data import to_uint8
from vqbench.distributed import gather_objects
from vqbench.metrics.base import Metric


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to the uint8 grid (rounded), as float64 in [0, 1]."""
    return to_uint8(images).double() / 255.0


def simvq_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images as SimVQ's evaluation quantises them: `((x + 1) / 2 * 255).to(uint8)`
    (truncation), back to float in [0, 1]."""
    return ((images.float() + 1) / 2 * 255.0).to(torch.uint8).double() / 255.0


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


def in_split_order(per_rank: list[torch.Tensor]) -> torch.Tensor:
    """Per-image values gathered from every process, back in the split's order.

    `vqbench.data.eval_loader` gives process r the images r, r + W, r + 2W, ... (W processes).
    """
    world = len(per_rank)
    out = torch.empty(sum(len(v) for v in per_rank), dtype=torch.float64)
    for rank, values in enumerate(per_rank):
        out[rank::world] = values
    return out


def batch_means(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Mean of each run of `batch` consecutive values (the last may be shorter)."""
    return torch.stack([chunk.mean() for chunk in values.split(batch)])


class ImageQuality(Metric):
    """PSNR per image (ours), and the paper's batch PSNR and SSIM (see the module doc)."""

    def __init__(self, paper_batch: int = 64) -> None:
        super().__init__()
        self.paper_batch = paper_batch
        self.add_state("psnr_sum", torch.zeros((), dtype=torch.float64))
        self.add_state("images", torch.zeros((), dtype=torch.float64))
        self.truncated_mse: list[torch.Tensor] = []
        self.truncated_ssim: list[torch.Tensor] = []

    def reset(self) -> None:
        super().reset()
        self.truncated_mse, self.truncated_ssim = [], []

    def update(
        self,
        originals: torch.Tensor,
        reconstructions: torch.Tensor,
        indices: torch.Tensor | None = None,
    ) -> None:
        x, y = unit_range(originals), unit_range(reconstructions)
        self.psnr_sum += psnr_per_image(x, y).sum().cpu()
        self.images += x.shape[0]
        xt, yt = simvq_unit_range(originals), simvq_unit_range(reconstructions)
        self.truncated_mse.append((xt - yt).pow(2).flatten(1).mean(1).cpu())
        self.truncated_ssim.append(ssim_per_image(yt, xt).cpu())

    def compute(self) -> dict[str, float]:
        s = self.synced_states()
        empty = [torch.zeros(0, dtype=torch.float64)]
        mse = in_split_order(gather_objects(torch.cat(self.truncated_mse + empty)))
        ssim = in_split_order(gather_objects(torch.cat(self.truncated_ssim + empty)))
        batch_psnr = 10 * torch.log10(1.0 / batch_means(mse, self.paper_batch))
        return {
            "psnr": float(s["psnr_sum"] / s["images"]),
            "psnr_batch": float(batch_psnr.mean()),
            "ssim": float(batch_means(ssim, self.paper_batch).mean()),
        }
