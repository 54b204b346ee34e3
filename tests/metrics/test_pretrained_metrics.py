"""LPIPS and FID with weight files the tests create, against the libraries' own computation."""

import os

import lpips
import pytest
import torch
import torch_fidelity
import torchvision
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from vqbench.data import EmbeddedPhotos, to_uint8
from vqbench.metrics import FID, LPIPS, Unavailable
from vqbench.pretrained import INCEPTION_FILE, VGG16_FILE


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    for name in ("VQBENCH_VGG16_WEIGHTS", "VQBENCH_INCEPTION_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.fixture(scope="module")
def images():
    photos = torch.stack([EmbeddedPhotos(32, train=False, size=16, seed=1)[i] for i in range(16)])
    generator = torch.Generator().manual_seed(0)
    return photos, (photos + 0.2 * torch.randn(photos.shape, generator=generator)).clamp(-1, 1)


def test_metrics_without_weights_are_unavailable_with_the_reason(torch_home):
    value = LPIPS().compute()["lpips_vgg"]
    assert isinstance(value, Unavailable)
    assert "VQBENCH_VGG16_WEIGHTS" in str(value) and str(value).startswith("n/a (")
    fid = FID()
    fid.update(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32), None)
    assert "VQBENCH_INCEPTION_WEIGHTS" in str(fid.compute()["rfid"])
    os.environ["VQBENCH_VGG16_WEIGHTS"] = "/no/such/file.pth"
    try:
        assert "does not exist" in str(LPIPS().compute()["lpips_vgg"])
    finally:
        del os.environ["VQBENCH_VGG16_WEIGHTS"]


def test_lpips_from_a_local_vgg16_file_equals_the_library_with_the_same_weights(
    torch_home, images, tmp_path, monkeypatch
):
    torch.manual_seed(0)
    state = {
        f"features.{k}": v for k, v in torchvision.models.vgg16().features.state_dict().items()
    }
    for name, shape in [
        ("0.weight", (4096, 25088)),
        ("0.bias", (4096,)),
        ("3.weight", (4096, 4096)),
        ("3.bias", (4096,)),
        ("6.weight", (1000, 4096)),
        ("6.bias", (1000,)),
    ]:
        # The classifier is unused by LPIPS; stride-0 zeros keep the file small.
        state[f"classifier.{name}"] = torch.zeros(1).expand(shape)
    torch.save(state, torch_home / VGG16_FILE)  # the library's own cache location
    originals, reconstructions = images
    reference = lpips.LPIPS(net="vgg", verbose=False)(reconstructions, originals)
    explicit = tmp_path / "my_vgg16.pth"
    os.link(torch_home / VGG16_FILE, explicit)
    (torch_home / VGG16_FILE).unlink()  # now only the explicit file has the weights
    monkeypatch.setenv("VQBENCH_VGG16_WEIGHTS", str(explicit))
    metric = LPIPS()
    metric.update(originals[:7], reconstructions[:7], None)
    metric.update(originals[7:], reconstructions[7:], None)
    assert metric.compute()["lpips_vgg"] == pytest.approx(reference.mean().item(), rel=1e-5)


def random_inception_weights(path):
    """A state dict in torch-fidelity's format, randomly initialised (no download)."""

    class Random(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    import torch_fidelity.feature_extractor_inceptionv3 as module

    original = module.load_state_dict_from_url
    module.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(0)
        extractor = Random("inception-v3-compat", ["2048"])
    finally:
        module.load_state_dict_from_url = original
    torch.save(extractor.state_dict(), path)


class Uint8Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = to_uint8(images)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def test_fid_from_a_local_inception_file_equals_torch_fidelity(
    torch_home, images, tmp_path, monkeypatch
):
    weights = tmp_path / INCEPTION_FILE
    random_inception_weights(weights)
    monkeypatch.setenv("VQBENCH_INCEPTION_WEIGHTS", str(weights))
    originals, reconstructions = images[0][:6], images[1][:6]  # Inception is slow on a CPU
    metric = FID()
    metric.update(originals[:4], reconstructions[:4], None)
    metric.update(originals[4:], reconstructions[4:], None)
    ours = metric.compute()["rfid"]
    reference = torch_fidelity.calculate_metrics(
        input1=Uint8Images(reconstructions),
        input2=Uint8Images(originals),
        fid=True,
        cuda=False,
        batch_size=8,
        verbose=False,
        feature_extractor_weights_path=str(weights),
        save_cpu_ram=True,
    )["frechet_inception_distance"]
    assert ours == pytest.approx(reference, rel=1e-3) and ours > 0


def random_pytorch_fid_weights(path):
    """A state dict of pytorch-fid's FID Inception, randomly initialised (no download)."""
    from unittest import mock

    from pytorch_fid import inception as pf

    no_load = mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None)
    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: {}), no_load:
        torch.manual_seed(0)
        net = pf.fid_inception_v3()
    torch.save(net.state_dict(), path)


def test_fid_with_the_pytorch_fid_backend_equals_pytorch_fid(torch_home, images, tmp_path):
    """The paper's rFID: float images in [0, 1], pytorch-fid's network and distance."""
    from unittest import mock

    import numpy as np
    from pytorch_fid import inception as pf
    from pytorch_fid.fid_score import calculate_frechet_distance

    from vqbench.pretrained import PT_INCEPTION_FILE

    weights = tmp_path / PT_INCEPTION_FILE
    random_pytorch_fid_weights(weights)
    originals, reconstructions = images[0][:6], images[1][:6]
    metric = FID(str(weights), backend="pytorch-fid")
    metric.update(originals[:4], reconstructions[:4], None)
    metric.update(originals[4:], reconstructions[4:], None)
    ours = metric.compute()["rfid"]
    state = torch.load(weights, weights_only=True)
    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: state):
        model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    with torch.no_grad():
        real = model((originals + 1) / 2)[0].squeeze(3).squeeze(2).numpy()
        fake = model((reconstructions + 1) / 2)[0].squeeze(3).squeeze(2).numpy()
    reference = calculate_frechet_distance(
        real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    )
    assert ours == pytest.approx(reference, rel=1e-3) and ours > 0
    # Without its weights file the backend is unavailable, naming its own variable.
    assert "VQBENCH_PT_INCEPTION_WEIGHTS" in str(FID(backend="pytorch-fid").compute()["rfid"])
