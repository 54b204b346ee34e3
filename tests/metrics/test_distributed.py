"""Every metric reduced across two gloo processes equals the same metric on one process.

Each process updates with its own half of the images (as `eval_loader` shards a split); the
reduced `compute()` on every rank must equal one process that saw everything.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.metrics.test_pretrained_metrics import random_inception_weights
from vqbench import create_quantizer
from vqbench.data import EmbeddedPhotos
from vqbench.metrics import build_metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batches():
    photos = torch.stack([EmbeddedPhotos(32, train=False, size=12, seed=3)[i] for i in range(12)])
    generator = torch.Generator().manual_seed(1)
    noisy = (photos + 0.2 * torch.randn(photos.shape, generator=generator)).clamp(-1, 1)
    indices = torch.randint(0, 64, (12, 8, 8), generator=generator)
    return [(photos[i : i + 3], noisy[i : i + 3], indices[i : i + 3]) for i in range(0, 12, 3)]


def metrics_of(weights_dir: str):
    q = create_quantizer("group_vq", codebook_size=64, dim=8, groups=4)
    return build_metrics(
        ["usage", "psnr", "ssim", "lpips", "fid"],
        codebook_size=64,
        code_groups=q.code_groups(),
        lpips_weights=os.path.join(weights_dir, "vgg16.pth"),
        inception_weights=os.path.join(weights_dir, "inception.pth"),
    )


def compute_all(metrics) -> dict:
    results = {}
    for metric in metrics:
        results.update(metric.compute())
    return results


def worker(rank: int, port: int, weights_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        metrics = metrics_of(weights_dir)
        for x, y, idx in batches()[rank::2]:  # this process's shard
            for metric in metrics:
                metric.update(x, y, idx)
        torch.save(compute_all(metrics), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    import torchvision

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16().features.state_dict()
    torch.save({f"features.{k}": v for k, v in vgg.items()}, folder / "vgg16.pth")
    random_inception_weights(folder / "inception.pth")
    return folder


def test_two_gloo_processes_reduce_to_the_one_process_result(weights_dir, tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(worker, args=(free_port(), str(weights_dir), out), nprocs=2, join=True)
    metrics = metrics_of(str(weights_dir))
    for x, y, idx in batches():
        for metric in metrics:
            metric.update(x, y, idx)
    single = compute_all(metrics)
    assert set(single) >= {
        "usage",
        "group_usage",
        "psnr",
        "ssim",
        "psnr_batch",
        "lpips_vgg",
        "rfid",
    }
    for rank in (0, 1):
        reduced = torch.load(f"{out}.{rank}", weights_only=False)
        assert reduced.keys() == single.keys()
        for key, value in single.items():
            assert reduced[key] == pytest.approx(value, rel=1e-6), (rank, key)
