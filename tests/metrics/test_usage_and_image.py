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


def simvq_evaluation_loop(originals, reconstructions, batch=64):
    """SimVQ's evaluation.py, PSNR and SSIM part, line for line (numpy, scikit-image)."""
    ssim_value = psnr_value = 0.0
    num_iter = 0
    for start in range(0, len(originals), batch):
        images = (originals[start : start + batch] + 1) / 2
        reconstructed_images = (reconstructions[start : start + batch].clamp(-1, 1) + 1) / 2
        rgb_restored = (reconstructed_images * 255.0).permute(0, 2, 3, 1).to(torch.uint8).numpy()
        rgb_gt = (images * 255.0).permute(0, 2, 3, 1).to(torch.uint8).numpy()
        rgb_restored = rgb_restored.astype(np.float32) / 255.0
        rgb_gt = rgb_gt.astype(np.float32) / 255.0
        ssim_temp = psnr_temp = 0
        b = rgb_restored.shape[0]
        for i in range(b):
            ssim_temp += structural_similarity(
                rgb_restored[i], rgb_gt[i], data_range=1.0, channel_axis=-1
            )
            psnr_temp += peak_signal_noise_ratio(rgb_gt, rgb_restored)  # the whole batch
        ssim_value += ssim_temp / b
        psnr_value += psnr_temp / b
        num_iter += 1
    return psnr_value / num_iter, ssim_value / num_iter


def test_the_papers_psnr_and_ssim_equal_simvqs_evaluation_whatever_our_batches(photo_pairs):
    originals, reconstructions = photo_pairs
    originals, reconstructions = originals.repeat(6, 1, 1, 1), reconstructions.repeat(6, 1, 1, 1)
    reference_psnr, reference_ssim = simvq_evaluation_loop(originals, reconstructions, batch=16)
    metric = ImageQuality(paper_batch=16)
    for start in range(0, len(originals), 10):  # our eval batches differ from the paper's
        metric.update(originals[start : start + 10], reconstructions[start : start + 10], None)
    result = metric.compute()
    assert result["psnr_batch"] == pytest.approx(reference_psnr, abs=1e-4)
    assert result["ssim"] == pytest.approx(reference_ssim, abs=1e-4)
    assert len(originals) % 16 != 0  # the last, shorter batch counts as one, as in SimVQ


def test_per_image_psnr_equals_scikit_image_on_rounded_images(photo_pairs):
    originals, reconstructions = photo_pairs
    metric = ImageQuality()
    metric.update(originals[:5], reconstructions[:5], None)
    metric.update(originals[5:], reconstructions[5:], None)
    result = metric.compute()
    gt, rec = as_numpy(originals), as_numpy(reconstructions)
    psnr = [peak_signal_noise_ratio(g, r, data_range=1.0) for g, r in zip(gt, rec)]
    assert result["psnr"] == pytest.approx(np.mean(psnr), abs=1e-4)
    ssim = [structural_similarity(g, r, data_range=1.0, channel_axis=-1) for g, r in zip(gt, rec)]
    per_image = ssim_per_image(unit_range(originals), unit_range(reconstructions))
    np.testing.assert_allclose(per_image.numpy(), ssim, atol=1e-4)
    assert result["psnr_batch"] < result["psnr"]  # Jensen: never above the per-image mean
