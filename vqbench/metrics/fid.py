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

Reference statistics (`FIDStatistics`, `vqbench fid-stats`): the real side's mean, covariance,
image count, backend and source, computed once and saved as `.npz`; an evaluation given the
file (`eval.fid_stats`) takes the real side from it instead of extracting the originals again.
The ADM evaluator's reference batches (`VIRTUAL_imagenet256_labeled.npz`: `mu`, `sigma`) load
too, as backend `adm` (TensorFlow's Inception: the same weights as both backends here, with
TensorFlow's resize), so that gFID can be set beside published numbers.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from vqbench.data import to_uint8
from vqbench.errors import VQBenchError
from vqbench.files import atomic_write
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


#: Statistics files whose network equals the backends' (TensorFlow's Inception).
FOREIGN_BACKENDS = ("adm",)


@dataclass
class FIDStatistics:
    """One side of an FID: the Inception pool features' mean and covariance, with what made them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None  # images (unknown for the ADM files)
    backend: str
    source: str

    def save(self, path: str | Path) -> None:
        """An `.npz` (no pickles), written atomically."""
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                mu=self.mu,
                sigma=self.sigma,
                count=np.int64(-1 if self.count is None else self.count),
                backend=np.str_(self.backend),
                source=np.str_(self.source),
            )

    @classmethod
    def load(cls, path: str | Path) -> FIDStatistics:
        """A file `save` wrote, or an ADM reference batch (`mu`, `sigma`; backend `adm`)."""
        path = Path(path)
        if not path.is_file():
            raise VQBenchError(
                f"FID statistics '{path}' do not exist; write them with `vqbench fid-stats`"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = set(data.files)
                if not {"mu", "sigma"} <= keys:
                    raise ValueError(f"it has no 'mu' and 'sigma' (keys: {sorted(keys)[:6]})")
                mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
                count = int(data["count"]) if "count" in keys else -1
                backend = str(data["backend"]) if "backend" in keys else "adm"
                source = str(data["source"]) if "source" in keys else path.name
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise VQBenchError(
                f"FID statistics '{path}' cannot be read ({err}); write them again with "
                f"`vqbench fid-stats`"
            ) from None
        if mu.shape != (FEATURES,) or sigma.shape != (FEATURES, FEATURES):
            raise VQBenchError(
                f"FID statistics '{path}' hold mu {mu.shape} and sigma {sigma.shape}, not "
                f"({FEATURES},) and ({FEATURES}, {FEATURES}) pool features; write them again "
                f"with `vqbench fid-stats`"
            )
        return cls(mu, sigma, None if count < 0 else count, backend, source)

    def check_backend(self, backend: str) -> None:
        """Statistics from another stack than the evaluation's are refused in one line."""
        if self.backend != backend and self.backend not in FOREIGN_BACKENDS:
            raise VQBenchError(
                f"FID statistics from {self.source} were computed with {self.backend}, this "
                f"evaluation uses {backend}; set eval.fid_backend: {self.backend} or compute "
                f"them again with `vqbench fid-stats --backend {backend}`"
            )


class FID(Metric):
    def __init__(
        self,
        weights: str | None = None,
        device: torch.device | str = "cpu",
        backend: str = "torch-fidelity",
        reference: FIDStatistics | None = None,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"FID backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if reference is not None:
            reference.check_backend(backend)
        self.backend, self.reference = backend, reference
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
        if self.reference is None:  # with reference statistics, the originals are not needed
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
        if float(s["fake_n"]) < 2 or (self.reference is None and float(s["real_n"]) < 2):
            return Unavailable("FID needs at least 2 images")
        real = self.real_statistics(s)
        fake = self.statistics(s["fake_sum"], s["fake_outer"], s["fake_n"])
        return frechet_distance(real, fake, self.backend)

    def real_statistics(self, states: dict | None = None) -> dict:
        """`{"mu", "sigma"}` of the real side: the reference file's, or the images seen."""
        if self.reference is not None:
            return {"mu": self.reference.mu, "sigma": self.reference.sigma}
        s = self.synced_states() if states is None else states
        return self.statistics(s["real_sum"], s["real_outer"], s["real_n"])

    def saved_statistics(self, source: str) -> FIDStatistics:
        """The real side's statistics over every process, to save (`vqbench fid-stats`)."""
        s = self.synced_states()
        real = self.statistics(s["real_sum"], s["real_outer"], s["real_n"])
        return FIDStatistics(real["mu"], real["sigma"], int(s["real_n"]), self.backend, source)


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
            if images is not None and not (side == "real" and self.reference is not None):
                self._add(side, self.features(images))

    def reset(self) -> None:
        """Start the generated side again; the real side's statistics are kept."""
        for name in ("fake_sum", "fake_outer", "fake_n"):
            setattr(self, name, self._defaults[name].clone().to(getattr(self, name).device))

    def compute(self) -> dict[str, float | Unavailable]:
        return {"gfid": self.distance()}
