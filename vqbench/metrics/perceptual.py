"""LPIPS (VGG by default, AlexNet as an option), mean over images, inputs in [-1, 1]."""

from __future__ import annotations

import torch

from vqbench.metrics.base import Metric, Unavailable
from vqbench.pretrained import WeightsUnavailable, describe_missing, load_lpips


class LPIPS(Metric):
    def __init__(
        self, net: str = "vgg", weights: str | None = None, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__()
        self.net = net
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("images", torch.zeros((), dtype=torch.float64))
        try:
            self.model = load_lpips(net, weights).to(device)
            self.unavailable = None
        except WeightsUnavailable as err:
            self.model, self.unavailable = None, Unavailable(describe_missing(err))

    @torch.no_grad()
    def update(
        self,
        originals: torch.Tensor,
        reconstructions: torch.Tensor,
        indices: torch.Tensor | None = None,
    ) -> None:
        if self.model is None:
            return
        values = self.model(reconstructions.float().clamp(-1, 1), originals.float())
        self.total += values.double().sum().cpu()
        self.images += originals.shape[0]

    def compute(self) -> dict[str, float | Unavailable]:
        key = f"lpips_{self.net}"
        if self.unavailable is not None:
            return {key: self.unavailable}
        s = self.synced_states()
        return {key: float(s["total"] / s["images"])}
