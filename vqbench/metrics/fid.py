"""rFID: Inception-v3 pool features of originals and reconstructions, three backends.

* `torch-fidelity` (default): images go to torch-fidelity's extractor as uint8 at the training
  resolution (it resizes to 299 itself, TF1-style); the distance is torch-fidelity's
  `fid_statistics_to_metric`.
* `pytorch-fid` (what SimVQ and the Group-VQ paper used; protocol.md section 2.7): images go to
  pytorch-fid's `InceptionV3` as float in [0, 1] (not quantised), resized bilinearly to 299 by
  PyTorch (`align_corners=False`), with pytorch-fid's own weights; the distance is pytorch-fid's
  `calculate_frechet_distance` (scipy `sqrtm`).
* `clean-fid` (Parmar et al., "On Aliased Resizing and Surprising Subtleties in GAN
  Evaluation"; what VQGAN-LC used): images go to clean-fid as uint8, through its resizer and its
  TorchScript Inception (`inception-2015-12-05.pt`), in one of its modes (`eval.fid_mode`):
  `clean` resizes each channel to 299 with PIL bicubic on floats; `legacy_tensorflow` hands the
  image to the network, which resizes it as TensorFlow did. The distance is clean-fid's
  `frechet_distance` (scipy `sqrtm`).

Features are not kept: the sums of features and of their outer products (float64) are
accumulated and summed across processes, giving the same mean and (unbiased) covariance as
the libraries compute from the full feature matrix. Originals and reconstructions pass through
the same resize, so the backends differ only slightly; reports say which one a suite used.

Reference statistics (`FIDStatistics`, `vqbench fid-stats`): the real side's mean, covariance,
image count, backend (and clean-fid's mode), protocol and source, computed once and saved as
`.npz`; an evaluation given the file (`eval.fid_stats`) takes the real side from it instead of
extracting the originals again; a file of another stack or protocol is refused in one line.
The ADM evaluator's reference batches (`VIRTUAL_imagenet256_labeled.npz`: `mu`, `sigma`) load
too, as backend `adm` (TensorFlow's Inception: the same weights as the backends here, with
TensorFlow's resize), so that gFID can be set beside published numbers.
"""

from __future__ import annotations

import os
import tempfile
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
    CLEANFID_INCEPTION_FILE,
    WeightsUnavailable,
    describe_missing,
    read_state_dict,
    weights_file,
)

FEATURES = 2048
BACKENDS = ("torch-fidelity", "pytorch-fid", "clean-fid")
#: clean-fid's modes (`eval.fid_mode`); `clean` is its default.
CLEANFID_MODES = ("clean", "legacy_tensorflow")


def stack_name(backend: str, mode: str | None = None) -> str:
    """`clean-fid (legacy_tensorflow)`, or the backend alone where it has no modes."""
    return f"{backend} ({mode})" if mode else backend


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


def load_cleanfid_inception(
    weights: str | None = None, device: torch.device | str = "cpu", mode: str = "clean"
):
    """clean-fid's `InceptionV3W` on a local TorchScript file, behind its resizer for `mode`;
    features of images in [-1, 1] (quantised to uint8 first, as images saved for clean-fid are).

    `InceptionV3W` reads `inception-2015-12-05.pt` from a folder (downloading it when absent):
    it is given a temporary folder holding a link to the file `vqbench.pretrained` found, and
    `download=False`, so the library never downloads.
    """
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer

    if mode not in CLEANFID_MODES:
        raise ValueError(f"clean-fid mode {mode!r}; use one of {', '.join(CLEANFID_MODES)}")
    path = weights_file("cleanfid_inception", weights)
    with tempfile.TemporaryDirectory() as folder:
        os.symlink(path.resolve(), os.path.join(folder, CLEANFID_INCEPTION_FILE))
        try:
            model = InceptionV3W(folder, download=False, resize_inside=mode == "legacy_tensorflow")
        except Exception as err:
            raise _load_error("FID, clean-fid", "VQBENCH_CLEANFID_INCEPTION_WEIGHTS", err) from None
    model = model.to(device).eval()
    resize = build_resizer(mode)

    def prepare(image: np.ndarray) -> torch.Tensor:
        """One HWC uint8 image as clean-fid's `ResizeDataset` hands it to the network."""
        resized = resize(image)
        if resized.dtype == np.uint8:  # `ToTensor() * 255`, as clean-fid does (float32)
            return torch.from_numpy(resized).permute(2, 0, 1).float().div(255) * 255
        return torch.from_numpy(np.ascontiguousarray(resized, np.float32)).permute(2, 0, 1)

    def extract(images: torch.Tensor) -> torch.Tensor:
        pixels = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
        batch = torch.stack([prepare(image) for image in pixels]).to(device)
        return model(batch)

    return extract


def frechet_distance(real: dict, fake: dict, backend: str) -> float:
    """The library's own distance between two (mu, sigma) statistics."""
    if backend == "clean-fid":
        from cleanfid.fid import frechet_distance as cleanfid_distance

        return float(cleanfid_distance(real["mu"], real["sigma"], fake["mu"], fake["sigma"]))
    if backend == "pytorch-fid":
        from pytorch_fid.fid_score import calculate_frechet_distance

        distance = calculate_frechet_distance(real["mu"], real["sigma"], fake["mu"], fake["sigma"])
        return float(distance)
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(np.real(fid_statistics_to_metric(real, fake, False)[KEY_METRIC_FID]))


#: Statistics files whose network equals the backends' (TensorFlow's Inception).
FOREIGN_BACKENDS = ("adm",)


#: The protocol of a statistics file written before files recorded one (`vqbench fid-stats`
#: then prepared images as the default protocol's version 1 does).
LEGACY_PROTOCOL = "vqbench v1"


@dataclass
class FIDStatistics:
    """One side of an FID: the Inception pool features' mean and covariance, with what made them.

    `mode` is clean-fid's (None for the other backends); `protocol` the evaluation protocol's
    label (`imagenet256 v1`) whose images were measured, None for a foreign file (ADM)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None  # images (unknown for the ADM files)
    backend: str
    source: str
    mode: str | None = None
    protocol: str | None = None

    @property
    def stack(self) -> str:
        return stack_name(self.backend, self.mode)

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
                mode=np.str_(self.mode or ""),
                protocol=np.str_(self.protocol or ""),
            )

    @classmethod
    def load(cls, path: str | Path) -> FIDStatistics:
        """A file `save` wrote, or an ADM reference batch (`mu`, `sigma`; backend `adm`).
        A file written before statistics recorded their protocol is `LEGACY_PROTOCOL`'s."""
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
                mode = str(data["mode"]) if "mode" in keys else ""
                if "protocol" in keys:
                    protocol = str(data["protocol"]) or None
                else:
                    protocol = None if backend in FOREIGN_BACKENDS else LEGACY_PROTOCOL
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
        return cls(mu, sigma, None if count < 0 else count, backend, source, mode or None, protocol)

    def check_backend(
        self, backend: str, mode: str | None = None, protocol: str | None = None
    ) -> None:
        """Statistics from another stack (backend or clean-fid mode) or another protocol than
        the evaluation's are refused in one line; a foreign file (ADM) has neither."""
        if self.backend in FOREIGN_BACKENDS:
            return
        if (self.backend, self.mode) != (backend, mode):
            flag = f"--backend {backend}" + (f" --mode {mode}" if mode else "")
            raise VQBenchError(
                f"FID statistics from {self.source} were computed with {self.stack}, this "
                f"evaluation uses {stack_name(backend, mode)}; set eval.fid_backend: "
                f"{self.backend}{f' and eval.fid_mode: {self.mode}' if self.mode else ''} or "
                f"compute them again with `vqbench fid-stats {flag}`"
            )
        if protocol is not None and self.protocol is not None and self.protocol != protocol:
            raise VQBenchError(
                f"FID statistics from {self.source} were computed under protocol "
                f"{self.protocol}, this evaluation uses {protocol}; compute them again with "
                f"`vqbench fid-stats --protocol {protocol.split(' v')[0]}`"
            )


class FID(Metric):
    def __init__(
        self,
        weights: str | None = None,
        device: torch.device | str = "cpu",
        backend: str = "torch-fidelity",
        reference: FIDStatistics | None = None,
        mode: str | None = None,
        protocol: str | None = None,
    ) -> None:
        """`mode`: clean-fid's (default `clean`); `protocol`: the label of the evaluation's
        protocol, checked against the reference statistics' and recorded in saved ones."""
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"FID backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if backend == "clean-fid":
            mode = mode or "clean"
        elif mode is not None:
            raise ValueError(f"FID backend {backend} has no modes (fid_mode is clean-fid's)")
        if reference is not None:
            reference.check_backend(backend, mode, protocol)
        self.backend, self.mode, self.reference = backend, mode, reference
        self.protocol = protocol
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(FEATURES, dtype=torch.float64))
            self.add_state(f"{side}_outer", torch.zeros(FEATURES, FEATURES, dtype=torch.float64))
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64))
        try:
            self.extractor, self.unavailable = self._load(weights, device), None
        except WeightsUnavailable as err:
            self.extractor, self.unavailable = None, Unavailable(describe_missing(err))

    def _load(self, weights: str | None, device: torch.device | str):
        if self.backend == "clean-fid":
            return load_cleanfid_inception(weights, device, self.mode)
        if self.backend == "pytorch-fid":
            return load_pytorch_fid_inception(weights, device)
        return load_inception(weights, device)

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
        return FIDStatistics(
            real["mu"],
            real["sigma"],
            int(s["real_n"]),
            self.backend,
            source,
            self.mode,
            self.protocol,
        )


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
