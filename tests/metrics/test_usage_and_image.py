import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vqbench import create_quantizer
from vqbench.data import EmbeddedPhotos
from vqbench.metrics import CodebookUsage, ImageQuality, ssim_per_image
from vqbench.metrics.image import unit_range


def test_usage_and_perplexity_on_constructed_indices():
    metric = CodebookUsage(8)
    metric.update(None, None, torch.tensor([0, 0, 1, 1]))
    metric.update(None, None, torch.tensor([[2, 3], [2, 3]]))
    result = metric.compute()
    assert result["usage"] == 4 / 8 and result["used_codes"] == 4
    assert result["perplexity"] == pytest.approx(4.0)  # four codes, equally used
    metric.reset()
    metric.update(None, None, torch.tensor([5, 5, 5, 6]))
    p = np.array([0.75, 0.25])
    assert metric.compute()["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_per_group_usage_follows_the_quantizer_layout():
    q = create_quantizer("group_vq", codebook_size=16, dim=4, groups=4)
    metric = CodebookUsage(16, code_groups=q.code_groups())
    metric.update(
        None, None, torch.tensor([0, 4, 8, 12, 1])
    )  # all four codes of group 0, one of group 1
    assert metric.compute()["group_usage"] == [1.0, 0.25, 0.0, 0.0]


@pytest.fixture(scope="module")
def photo_pairs():
    photos = torch.stack([EmbeddedPhotos(48, train=False, size=12, seed=2)[i] for i in range(12)])
    generator = torch.Generator().manual_seed(0)
    noisy = photos + 0.15 * torch.randn(photos.shape, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(photos, 3, stride=1, padding=1)
    return photos, torch.cat([noisy[:6], blurred[6:]]).clamp(-1, 1)


def as_numpy(images):
    return unit_range(images).permute(0, 2, 3, 1).numpy()


def test_psnr_and_ssim_equal_scikit_image_on_real_photos(photo_pairs):
    originals, reconstructions = photo_pairs
    metric = ImageQuality()
    metric.update(originals[:5], reconstructions[:5], None)
    metric.update(originals[5:], reconstructions[5:], None)
    result = metric.compute()
    gt, rec = as_numpy(originals), as_numpy(reconstructions)
    psnr = [peak_signal_noise_ratio(g, r, data_range=1.0) for g, r in zip(gt, rec)]
    ssim = [structural_similarity(g, r, data_range=1.0, channel_axis=-1) for g, r in zip(gt, rec)]
    assert result["psnr"] == pytest.approx(np.mean(psnr), abs=1e-4)
    assert result["ssim"] == pytest.approx(np.mean(ssim), abs=1e-4)
    per_image = ssim_per_image(unit_range(originals), unit_range(reconstructions))
    np.testing.assert_allclose(per_image.numpy(), ssim, atol=1e-4)
    # SimVQ's batch-level PSNR: the PSNR of each batch's pooled MSE, averaged over batches.
    batches = [
        peak_signal_noise_ratio(gt[:5], rec[:5], data_range=1.0),
        peak_signal_noise_ratio(gt[5:], rec[5:], data_range=1.0),
    ]
    assert result["psnr_batch"] == pytest.approx(np.mean(batches), abs=1e-6)
    assert result["psnr_batch"] < result["psnr"]  # Jensen: never above the per-image mean
