"""FID reference statistics (`vqbench fid-stats`, `eval.fid_stats`): the file round-trips and
gives the FID computed from the images; ADM reference batches load; bad files are one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.metrics.test_pretrained_metrics import random_inception_weights
from vqbench import VQBenchError
from vqbench.cli import main
from vqbench.data import EmbeddedPhotos, ImageFolder, to_uint8
from vqbench.evaluate import fid_statistics
from vqbench.metrics import FID, FIDStatistics
from vqbench.metrics.fid import FEATURES


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    random_inception_weights(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    photos = EmbeddedPhotos(32, train=False, size=6, seed=3)
    for i in range(len(photos)):
        array = to_uint8(photos[i][None])[0].permute(1, 2, 0).numpy()
        Image.fromarray(array).save(root / f"{i}.png")
    return root


def test_saved_statistics_give_the_fid_computed_from_the_images(weights, folder, tmp_path):
    stats = fid_statistics(folder, resolution=32, weights=str(weights), batch_size=4)
    assert stats.count == 6 and stats.backend == "torch-fidelity"
    stats.save(tmp_path / "stats.npz")
    loaded = FIDStatistics.load(tmp_path / "stats.npz")
    assert loaded.count == 6 and loaded.source == stats.source
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)

    originals = torch.stack([ImageFolder(folder, 32, train=False)[i] for i in range(6)])
    noise = 0.3 * torch.randn(originals.shape, generator=torch.Generator().manual_seed(0))
    reconstructions = (originals + noise).clamp(-1, 1)
    from_images = FID(str(weights))
    from_images.update(originals, reconstructions)
    from_file = FID(str(weights), reference=loaded)
    from_file.update(originals, reconstructions)
    assert from_file.real_n == 0  # the originals were not extracted again
    expected = from_images.compute()["rfid"]
    assert expected > 0
    assert from_file.compute()["rfid"] == pytest.approx(expected, rel=1e-6)


def test_an_adm_reference_batch_loads_and_a_foreign_backend_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, FEATURES))
    path = tmp_path / "VIRTUAL_imagenet256_labeled.npz"
    np.savez(path, arr_0=np.zeros((2, 4, 4, 3), np.uint8), mu=features.mean(0),
             sigma=np.cov(features, rowvar=False))  # fmt: skip
    adm = FIDStatistics.load(path)
    assert (adm.backend, adm.count) == ("adm", None)
    FID(reference=adm)  # the same network as both backends: accepted
    ours = FIDStatistics(adm.mu, adm.sigma, 50, "pytorch-fid", "test")
    with pytest.raises(VQBenchError, match="computed with pytorch-fid, this evaluation uses"):
        FID(backend="torch-fidelity", reference=ours)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "do not exist; write them with `vqbench fid-stats`"),
        (b"not a zip file", "cannot be read"),
        ({"mu": np.zeros(3), "sigma": np.zeros((3, 3))}, r"hold mu \(3,\) and sigma \(3, 3\)"),
        ({"mean": np.zeros(3)}, "has no 'mu' and 'sigma'"),
    ],
)
def test_bad_statistics_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "stats.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.savez(path, **content)
    with pytest.raises(VQBenchError, match=message) as err:
        FIDStatistics.load(path)
    assert "\n" not in str(err.value)


def test_the_command_writes_the_file_or_fails_in_one_line(weights, folder, tmp_path, capsys):
    out = tmp_path / "stats.npz"
    args = ["fid-stats", str(folder), "--out", str(out), "--resolution", "32"]
    assert main([*args, "--weights", str(weights)]) == 0
    assert FIDStatistics.load(out).count == 6
    missing = tmp_path / "none.npz"
    assert main(["fid-stats", str(tmp_path / "nowhere"), "--out", str(missing)]) == 2
    assert main([*args[:3], str(missing), "--resolution", "0"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 2 and "does not exist" in lines[0] and "--resolution 0" in lines[1]
    assert not missing.exists()
