"""gFID behind the metric contract: `SampleFID` fed its two sides separately equals `FID` fed
them together, and `reset()` keeps the real side (one reference for every seed)."""

from __future__ import annotations

import pytest
import torch

from vqbench.metrics import FID, SampleFID, Unavailable
from vqbench.metrics import fid as fid_module
from vqbench.metrics.fid import FEATURES
from vqbench.pretrained import WeightsUnavailable


class Projection:
    """A fixed random linear 'Inception': images (B, 3, 4, 4) to (B, FEATURES) features."""

    def __init__(self) -> None:
        self.weight = torch.randn(48, FEATURES, generator=torch.Generator().manual_seed(0))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


@pytest.fixture(autouse=True)
def projection(monkeypatch):
    """The projection stands in for Inception (its weights cannot be downloaded here)."""
    monkeypatch.setattr(fid_module, "load_inception", lambda weights, device: Projection())


def images(seed: int, n: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_sides_fed_apart_equal_fid_fed_together_and_reset_keeps_the_reference():
    real, fake, other = images(1), images(2), images(3)
    together = FID()
    together.update(real, fake)
    expected = together.compute()["rfid"]
    sample = SampleFID()
    sample.update(real, None)
    sample.update(None, fake)
    assert sample.compute() == {"gfid": pytest.approx(expected, rel=1e-9)}
    for name in ("real_sum", "real_outer", "real_n", "fake_sum", "fake_outer", "fake_n"):
        torch.testing.assert_close(getattr(sample, name), getattr(together, name))
    sample.reset()  # a new seed: new samples against the same reference
    assert float(sample.fake_n) == 0 and float(sample.real_n) == 6
    sample.update(None, other)
    again = FID()
    again.update(real, other)
    gfid = sample.compute()["gfid"]
    assert gfid == pytest.approx(again.compute()["rfid"], rel=1e-9)
    assert gfid != pytest.approx(expected, rel=1e-3)


def test_without_inception_weights_gfid_is_unavailable_and_updates_do_nothing(monkeypatch):
    def missing(weights, device):
        raise WeightsUnavailable("no Inception file here")

    monkeypatch.setattr(fid_module, "load_inception", missing)
    sample = SampleFID()
    assert not sample.available
    sample.update(images(1), images(2))
    assert isinstance(sample.compute()["gfid"], Unavailable)
