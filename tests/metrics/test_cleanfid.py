"""clean-fid as the third FID backend, on a TorchScript file the test makes (no download;
clean-fid's interface around a small random network, fast on a CPU):
vqbench's accumulated statistics give clean-fid's own FID of the same images, in both modes;
statistics files record stack and protocol and refuse another's in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.metrics.inception_files import SmallLayers, write_torchscript_inception
from vqbench import VQBenchError
from vqbench.cli import main
from vqbench.data import EmbeddedPhotos, to_uint8
from vqbench.evaluate import fid_statistics
from vqbench.metrics import FID, FIDStatistics, Unavailable


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    return {"clean-fid": write_torchscript_inception(folder, SmallLayers())}


@pytest.fixture(scope="module")
def images():
    photos = EmbeddedPhotos(32, train=False, size=6, seed=1)
    originals = torch.stack([photos[i] for i in range(len(photos))])
    noise = 0.3 * torch.randn(originals.shape, generator=torch.Generator().manual_seed(0))
    return originals, (originals + noise).clamp(-1, 1)


def save_pngs(images: torch.Tensor, folder) -> str:
    folder.mkdir()
    for i, image in enumerate(to_uint8(images)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return str(folder)


# `legacy_tensorflow` differs only in the resize inside the network (both modes' features are
# compared in the default run below); its equality with clean-fid is the slow tier's (40-80 s).
@pytest.mark.parametrize(
    "mode", ["clean", pytest.param("legacy_tensorflow", marks=pytest.mark.slow)]
)
def test_fid_equals_clean_fid_on_the_same_images_and_network(files, images, tmp_path, mode):
    from cleanfid import fid as cleanfid
    from cleanfid.inception_torchscript import InceptionV3W

    originals, reconstructions = images
    metric = FID(str(files["clean-fid"]), backend="clean-fid", mode=mode)
    metric.update(originals[:4], reconstructions[:4])
    metric.update(originals[4:], reconstructions[4:])
    ours = metric.compute()["rfid"]

    network = InceptionV3W(
        str(files["clean-fid"].parent), download=False, resize_inside=mode == "legacy_tensorflow"
    ).eval()
    reference = cleanfid.compute_fid(
        save_pngs(reconstructions, tmp_path / "fake"),
        save_pngs(originals, tmp_path / "real"),
        mode=mode,
        num_workers=0,
        batch_size=3,
        device=torch.device("cpu"),
        custom_feat_extractor=network,
        verbose=False,
        use_dataparallel=False,
    )
    # clean-fid takes the mean of float32 features in float32; vqbench sums in float64.
    assert ours == pytest.approx(reference, rel=1e-6) and ours > 0


def test_the_modes_differ_and_without_weights_the_backend_is_unavailable(
    files, images, monkeypatch
):
    originals, _ = images
    features = {
        mode: FID(str(files["clean-fid"]), backend="clean-fid", mode=mode).features(originals)
        for mode in ("clean", "legacy_tensorflow")
    }  # the two resizes (PIL bicubic outside the network, TensorFlow's inside) differ
    assert features["clean"].shape == (6, 2048)
    assert not torch.allclose(features["clean"], features["legacy_tensorflow"], rtol=1e-3)
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")
    monkeypatch.delenv("VQBENCH_CLEANFID_INCEPTION_WEIGHTS", raising=False)
    missing = FID(backend="clean-fid").compute()["rfid"]
    assert isinstance(missing, Unavailable)
    assert "VQBENCH_CLEANFID_INCEPTION_WEIGHTS" in str(missing)
    with pytest.raises(ValueError, match="has no modes"):
        FID(backend="torch-fidelity", mode="clean")


def test_a_statistics_file_of_another_mode_or_protocol_is_refused_in_one_line(files, tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 2048))
    stats = FIDStatistics(
        features.mean(0), np.cov(features, rowvar=False), 50, "clean-fid", "test",
        "legacy_tensorflow", "imagenet256 v1",
    )  # fmt: skip
    stats.save(tmp_path / "stats.npz")
    loaded = FIDStatistics.load(tmp_path / "stats.npz")
    assert (loaded.mode, loaded.protocol) == ("legacy_tensorflow", "imagenet256 v1")
    weights = str(files["clean-fid"])
    FID(weights, backend="clean-fid", mode="legacy_tensorflow", reference=loaded,
        protocol="imagenet256 v1")  # fmt: skip
    with pytest.raises(VQBenchError, match=r"computed with clean-fid \(legacy_tensorflow\)"):
        FID(weights, backend="clean-fid", mode="clean", reference=loaded)
    with pytest.raises(VQBenchError, match="under protocol imagenet256 v1, this evaluation uses"):
        FID(weights, backend="clean-fid", mode="legacy_tensorflow", reference=loaded,
            protocol="vqbench v1")  # fmt: skip
    # A file written before files recorded their protocol is the default protocol's.
    np.savez(tmp_path / "old.npz", mu=stats.mu, sigma=stats.sigma, count=np.int64(50),
             backend=np.str_("torch-fidelity"), source=np.str_("old"))  # fmt: skip
    assert FIDStatistics.load(tmp_path / "old.npz").protocol == "vqbench v1"


def test_fid_stats_under_a_protocol_records_it(files, images, tmp_path, capsys):
    folder = tmp_path / "images"
    save_pngs(images[0], folder)
    out = tmp_path / "stats.npz"
    weights = str(files["clean-fid"])
    args = ["fid-stats", str(folder), "--out", str(out), "--weights", weights]
    code = main([*args, "--resolution", "32", "--backend", "clean-fid", "--mode", "clean"])
    assert code == 0
    saved = FIDStatistics.load(out)
    assert (saved.backend, saved.mode, saved.protocol, saved.count) == (
        "clean-fid",
        "clean",
        "vqbench v1",
        6,
    )
    direct = fid_statistics(folder, resolution=32, backend="clean-fid", weights=weights)
    np.testing.assert_allclose(saved.sigma, direct.sigma, rtol=1e-12)
    # imagenet256 fixes 256 px and clean-fid's legacy_tensorflow mode: a contradiction is one
    # line, exit 2, nothing written; and it measures 50,000 images, not 6.
    out.unlink()
    assert main([*args, "--protocol", "imagenet256", "--backend", "pytorch-fid"]) == 2
    assert main([*args, "--protocol", "imagenet256"]) == 2
    assert main([*args, "--protocol", "nosuch"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 3
    assert "--backend pytorch-fid contradicts protocol imagenet256 v1" in lines[0]
    assert "measures 50,000 val images, the data holds 6" in lines[1]
    assert "unknown protocol 'nosuch'" in lines[2]
    assert not out.exists()
