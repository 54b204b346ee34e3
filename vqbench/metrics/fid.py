"""rFID with torch-fidelity: Inception-v3 pool features of originals and reconstructions.

Images go to the extractor as uint8 at the training resolution (torch-fidelity resizes to
299 itself). Features are not kept: the sums of features and of their outer products (float64)
are accumulated and summed across processes, giving the same mean and (unbiased) covariance
as `torch_fidelity.metric_fid.fid_features_to_statistics`; the distance is torch-fidelity's
`fid_statistics_to_metric`. SimVQ used pytorch-fid on float images instead; numbers differ
slightly (reports say so).
"""

from __future__ import annotations

import numpy as np
import torch

from vqbench.data import to_uint8
from vqbench.metrics.base import Metric, Unavailable
from vqbench.pretrained import WeightsUnavailable, describe_missing, weights_file

FEATURES = 2048


def load_inception(weights: str | None = None, device: torch.device | str = "cpu"):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = weights_file("inception", weights)
    try:
        extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", [str(FEATURES)], feature_extractor_weights_path=str(path)
        )
    except Exception as err:  # download refused, truncated file
        raise WeightsUnavailable(
            f"Inception (FID) weights could not be loaded ({str(err).splitlines()[0]}); set "
            f"VQBENCH_INCEPTION_WEIGHTS to weights-inception-2015-12-05-6726825d.pth"
        ) from None
    # torch-fidelity 0.3 leaves the extractor in training mode (BatchNorm on batch statistics).
    return extractor.eval().to(device)


class FID(Metric):
    def __init__(self, weights: str | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__()
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(FEATURES, dtype=torch.float64))
            self.add_state(f"{side}_outer", torch.zeros(FEATURES, FEATURES, dtype=torch.float64))
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64))
        try:
            self.extractor, self.unavailable = load_inception(weights, device), None
        except WeightsUnavailable as err:
            self.extractor, self.unavailable = None, Unavailable(describe_missing(err))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(to_uint8(images))[0].double().cpu()

    def _add(self, side: str, feats: torch.Tensor) -> None:
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.t() @ feats)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + feats.shape[0])

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
        from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

        s = self.synced_states()
        if float(s["real_n"]) < 2:
            return Unavailable("FID needs at least 2 images")
        real = self.statistics(s["real_sum"], s["real_outer"], s["real_n"])
        fake = self.statistics(s["fake_sum"], s["fake_outer"], s["fake_n"])
        return float(np.real(fid_statistics_to_metric(real, fake, False)[KEY_METRIC_FID]))
