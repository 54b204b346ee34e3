"""Pretrained weights the metrics and the perceptual loss need, found without guessing.

LPIPS needs torchvision's VGG16 (or AlexNet) trunk; rFID needs torch-fidelity's Inception.
Each is looked up in this order: an explicit path (config or `VQBENCH_VGG16_WEIGHTS`,
`VQBENCH_ALEXNET_WEIGHTS`, `VQBENCH_INCEPTION_WEIGHTS`); the library's own cache under
`$TORCH_HOME/hub/checkpoints/`; the library's download, unless `VQBENCH_OFFLINE=1`. When none
works, `WeightsUnavailable` says which file is missing and how to provide it, and the metric is
reported as unavailable with that reason, never guessed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# The file names the libraries download, i.e. what they look for in their cache.
VGG16_FILE = "vgg16-397923af.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
_ENV = {
    "vgg": "VQBENCH_VGG16_WEIGHTS",
    "alex": "VQBENCH_ALEXNET_WEIGHTS",
    "inception": "VQBENCH_INCEPTION_WEIGHTS",
}
_FILE = {"vgg": VGG16_FILE, "alex": ALEXNET_FILE, "inception": INCEPTION_FILE}
# lpips' trunk slices: torchvision `features` index -> lpips `net.sliceK` (protocol.md 7.4).
_LPIPS_SLICES = {
    "vgg": [range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30)],
    "alex": [range(0, 2), range(2, 5), range(5, 8), range(8, 10), range(10, 12)],
}


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be found or downloaded; the message says how to provide them."""


def hub_checkpoint(file_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def offline() -> bool:
    return os.environ.get("VQBENCH_OFFLINE", "") not in ("", "0")


def explicit_path(kind: str, path: str | None = None) -> Path | None:
    """The weights file given in config or environment, checked to exist."""
    chosen = path or os.environ.get(_ENV[kind])
    if not chosen:
        return None
    if not Path(chosen).is_file():
        raise WeightsUnavailable(f"{_ENV[kind]}/weights file '{chosen}' does not exist")
    return Path(chosen)


def _missing(kind: str, what: str, err: Exception | None = None) -> WeightsUnavailable:
    why = f": {str(err).splitlines()[0]}" if err is not None and str(err) else ""
    return WeightsUnavailable(
        f"{what} weights not found{why}; set {_ENV[kind]} to the file, or place "
        f"{_FILE[kind]} in {hub_checkpoint('').parent}/checkpoints"
    )


def load_lpips(net: str = "vgg", path: str | None = None) -> torch.nn.Module:
    """`lpips.LPIPS(net=...)` with its trunk from `path`, the env, the cache, or a download."""
    import lpips

    trunk_file = explicit_path(net, path)
    if trunk_file is not None:
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        load_lpips_trunk(model, torch.load(trunk_file, map_location="cpu", weights_only=True), net)
    elif hub_checkpoint(_FILE[net]).is_file() or not offline():
        try:
            model = lpips.LPIPS(net=net, verbose=False)
        except Exception as err:  # download refused, truncated file, no network
            raise _missing(net, f"LPIPS-{net} trunk", err) from None
    else:
        raise _missing(net, f"LPIPS-{net} trunk")
    return model.eval().requires_grad_(False)


def load_lpips_trunk(model: torch.nn.Module, state: dict, net: str) -> None:
    """Copy torchvision `features.i.*` tensors into lpips' `net.sliceK.i.*` modules."""
    mapped = {}
    for k, indices in enumerate(_LPIPS_SLICES[net], start=1):
        for i in indices:
            for name in ("weight", "bias"):
                key = f"features.{i}.{name}"
                if key in state:
                    mapped[f"slice{k}.{i}.{name}"] = state[key]
    missing = set(model.net.state_dict()) - set(mapped)
    if missing:
        raise WeightsUnavailable(
            f"LPIPS-{net} trunk file lacks {sorted(missing)[0]}; it must be "
            f"torchvision's {_FILE[net]} state dict"
        )
    model.net.load_state_dict(mapped)


def inception_weights(path: str | None = None) -> str | None:
    """Path for torch-fidelity's `feature_extractor_weights_path` (None: its cache/download)."""
    explicit = explicit_path("inception", path)
    if explicit is not None:
        return str(explicit)
    if hub_checkpoint(INCEPTION_FILE).is_file() or not offline():
        return None
    raise _missing("inception", "Inception (FID)")


def describe_missing(err: Exception) -> str:
    """The reason a metric is unavailable, as it appears in the results."""
    return str(err) if isinstance(err, WeightsUnavailable) else f"{type(err).__name__}: {err}"
