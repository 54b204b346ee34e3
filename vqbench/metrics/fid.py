"""rFID: Inception-v3 pool features of originals and reconstructions, two backends.

* `torch-fidelity` (default): images go to torch-fidelity's extractor as uint8 at the training
  resolution (it resizes to 299 itself, TF1-style); the distance is torch-fidelity's
  `fid_statistics_to_metric`.
* `pytorch-fid` (what SimVQ and the Group-VQ paper used; protocol.md section 2.7): images go to
  pytorch-fid's `InceptionV3` as float in [0, 1] (not quantised), resized bilinearly to 299 by
  PyTorch (`align_corners=False`), with pytorch-fid's own weights; the distance is pytorch-fid's
  `calculate_frechet_distance` (scipy `sqrtm`).

Features are not kept: the sums of features and of their outer products (float64) are
accumulated and summed across processes, giving the same mean and (unbiased) covariance as
both libraries compute from the full feature matrix. Originals and reconstructions pass through
the same resize, so the two backends differ only slightly; reports say which one a suite used.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import torch

from vqbench.data import to_uint8
from vqbench.metrics.base import Metric, Unavailable
from vqbench.pretrained import (
    WeightsUnavailable,
    describe_missing,
    read_state_dict,
    weights_file,
)

FEATURES = 2048
BACKENDS = ("torch-fidelity", "pytorch-fid")


def _load_error(kind: str, env: str, err: Exception) -> WeightsUnavailable:
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return WeightsUnavailable(
        f"Inception ({kind}) weights could not be loaded ({first}); set {env} to the file"
    )


def load_inception(weights: str | None = None, device: torch.device | str = "cpu"):
    """torch-fidelity's extractor on a local weights file; features of uint8 images."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = weights_file("inception", weights)
    try:
        extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", [str(FEATURES)], feature_extractor_weights_path=str(path)
        )
    except Exception as err:  # truncated or foreign file
        raise _load_error("FID, torch-fidelity", "VQBENCH_INCEPTION_WEIGHTS", err) from None
    # torch-fidelity 0.4 puts the extractor in eval mode itself, 0.3 does not (BatchNorm).
    extractor = extractor.eval().to(device)
    return lambda images: extractor(to_uint8(images))[0]


def load_pytorch_fid_inception(weights: str | None = None, device: torch.device | str = "cpu"):
    """pytorch-fid's `InceptionV3` on a local weights file; features of float images in [0, 1].

    pytorch-fid fetches its weights with `load_state_dict_from_url`; it is handed the file
    found by `vqbench.pretrained` instead, so nothing is downloaded by the library.
    """
    from pytorch_fid import inception as pf

    state = read_state_dict("pt_inception", weights_file("pt_inception", weights))
    try:
        with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: state):
            model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURES]])
    except Exception as err:
        raise _load_error("FID, pytorch-fid", "VQBENCH_PT_INCEPTION_WEIGHTS", err) from None
    model = model.to(device).eval()
    return lambda images: model((images.float() + 1) / 2)[0].flatten(1)


def frechet_distance(real: dict, fake: dict, backend: str) -> float:
    """The library's own distance between two (mu, sigma) statistics."""
    if backend == "pytorch-fid":
        from pytorch_fid.fid_score import calculate_frechet_distance

        distance = calculate_frechet_distance(real["mu"], real["sigma"], fake["mu"], fake["sigma"])
        return float(distance)
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(np.real(fid_statistics_to_metric(real, fake, False)[KEY_METRIC_FID]))


class FID(Metric):
    def __init__(
        self,
        weights: str | None = None,
        device: torch.device | str = "cpu",
        backend: str = "torch-fidelity",
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"FID backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.backend = backend
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(FEATURES, dtype=torch.float64))
            self.add_state(f"{side}_outer", torch.zeros(FEATURES, FEATURES, dtype=torch.float64))
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64))
        load = load_pytorch_fid_inception if backend == "pytorch-fid" else load_inception
        try:
            self.extractor, self.unavailable = load(weights, device), None
        except WeightsUnavailable as err:
            self.extractor, self.unavailable = None, Unavailable(describe_missing(err))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 2048)` float64 pool features of images in [-1, 1]."""
        return self.extractor(images).double().cpu()

    def _add(self, side: str, feats: torch.Tensor) -> None:
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.t() @ feats)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + feats.shape[0])

    @property
    def available(self) -> bool:
        return self.extractor is not None

    def update(
        self,
        originals: torch.Tensor,
        reconstructions: torch.Tensor,
        indices: torch.Tensor | None = None,
    ) -> None:
        if self.extractor is None:
            return
        self._add("real", self.features(originals))
        self._add("fake", self.features(reconstructions))

    @staticmethod
    def statistics(total: torch.Tensor, outer: torch.Tensor, n: torch.Tensor) -> dict:
        mu = total / n
        sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)
        return {"mu": mu.numpy(), "sigma": sigma.numpy()}

    def compute(self) -> dict[str, float | Unavailable]:
        return {"rfid": self.distance()}

    def distance(self) -> float | Unavailable:
        if self.unavailable is not None:
            return self.unavailable
        s = self.synced_states()
        if float(s["real_n"]) < 2:
            return Unavailable("FID needs at least 2 images")
        real = self.statistics(s["real_sum"], s["real_outer"], s["real_n"])
        fake = self.statistics(s["fake_sum"], s["fake_outer"], s["fake_n"])
        return frechet_distance(real, fake, self.backend)


class SampleFID(FID):
    """FID of generated images against real ones (gFID), behind the metric contract.

    Generated images have no originals: `update(originals, generated)` takes either side as
    None. The real side is the fixed reference, kept across `reset()`, which starts the
    generated side again (one reference, many seeds of a sampler). `compute()` returns
    `{"gfid": ...}`.
    """

    def update(
        self,
        originals: torch.Tensor | None,
        reconstructions: torch.Tensor | None,
        indices: torch.Tensor | None = None,
    ) -> None:
        if self.extractor is None:
            return
        for side, images in (("real", originals), ("fake", reconstructions)):
            if images is not None:
                self._add(side, self.features(images))

    def reset(self) -> None:
        """Start the generated side again; the real side's statistics are kept."""
        for name in ("fake_sum", "fake_outer", "fake_n"):
            setattr(self, name, self._defaults[name].clone().to(getattr(self, name).device))

    def compute(self) -> dict[str, float | Unavailable]:
        return {"gfid": self.distance()}
