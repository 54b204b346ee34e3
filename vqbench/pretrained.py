"""Pretrained weights the metrics and the perceptual loss need, found without guessing.

LPIPS needs torchvision's VGG16 (or AlexNet) trunk; rFID needs an Inception network
(torch-fidelity's, pytorch-fid's, or clean-fid's TorchScript file). Each file is looked up in
this order: an explicit path (config or `VQBENCH_VGG16_WEIGHTS`, `VQBENCH_ALEXNET_WEIGHTS`,
`VQBENCH_INCEPTION_WEIGHTS`, `VQBENCH_PT_INCEPTION_WEIGHTS`,
`VQBENCH_CLEANFID_INCEPTION_WEIGHTS`); the libraries' cache `$TORCH_HOME/hub/checkpoints/`;
one quiet download into that cache, unless `VQBENCH_OFFLINE=1` (or `HF_HUB_OFFLINE=1`). Before a
download the server is tried once, for `CONNECT_TIMEOUT` seconds (`unreachable`), so that a machine
without network learns it at once instead of from a library's retries. The libraries are
always handed the file (never asked to download themselves), so an offline run prints no
download attempts or deprecation warnings, and a failed download is tried once per process.
When no file can be had, `WeightsUnavailable` says which is missing and how to provide it, and
the metric is reported as unavailable with that reason, never guessed.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import torch

# The files the libraries download, i.e. what they look for in their cache, and where from.
VGG16_FILE = "vgg16-397923af.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
PT_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
CLEANFID_INCEPTION_FILE = "inception-2015-12-05.pt"  # clean-fid's TorchScript network
_FILE = {
    "vgg": VGG16_FILE,
    "alex": ALEXNET_FILE,
    "inception": INCEPTION_FILE,
    "pt_inception": PT_INCEPTION_FILE,
    "cleanfid_inception": CLEANFID_INCEPTION_FILE,
}
_ENV = {
    "vgg": "VQBENCH_VGG16_WEIGHTS",
    "alex": "VQBENCH_ALEXNET_WEIGHTS",
    "inception": "VQBENCH_INCEPTION_WEIGHTS",
    "pt_inception": "VQBENCH_PT_INCEPTION_WEIGHTS",
    "cleanfid_inception": "VQBENCH_CLEANFID_INCEPTION_WEIGHTS",
}
_URL = {
    "vgg": f"https://download.pytorch.org/models/{VGG16_FILE}",
    "alex": f"https://download.pytorch.org/models/{ALEXNET_FILE}",
    "inception": f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}",
    "pt_inception": (
        f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PT_INCEPTION_FILE}"
    ),
    "cleanfid_inception": (
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
        f"{CLEANFID_INCEPTION_FILE}"
    ),
}
_WHAT = {
    "vgg": "LPIPS-vgg trunk",
    "alex": "LPIPS-alex trunk",
    "inception": "Inception (FID, torch-fidelity)",
    "pt_inception": "Inception (FID, pytorch-fid)",
    "cleanfid_inception": "Inception (FID, clean-fid)",
}
# lpips' trunk slices: torchvision `features` index -> lpips `net.sliceK` (protocol.md 7.4).
_LPIPS_SLICES = {
    "vgg": [range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30)],
    "alex": [range(0, 2), range(2, 5), range(5, 8), range(8, 10), range(10, 12)],
}
#: Downloads that failed in this process (kind -> reason), so that each is tried once.
_FAILED_DOWNLOADS: dict[str, str] = {}
#: Seconds one connection to a download server may take before it counts as unreachable.
CONNECT_TIMEOUT = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be found or downloaded; the message says how to provide them."""


def hub_checkpoint(file_name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def offline() -> bool:
    """`VQBENCH_OFFLINE=1` or Hugging Face's `HF_HUB_OFFLINE=1`: nothing is downloaded."""
    return any(
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
        for name in ("VQBENCH_OFFLINE", "HF_HUB_OFFLINE")
    )


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why the server of `url` cannot be reached (one connection attempt of at most `timeout`
    seconds), or None when it can, or when a proxy is set (the download then goes through it
    and says itself what fails)."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                outcome.append(None)
        except OSError as err:  # no route, no name resolution, refused, timed out
            outcome.append(err.strerror or str(err) or type(err).__name__)

    # In a thread: the name lookup before the connection takes no timeout of its own.
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"{parts.hostname} cannot be reached: no answer within {timeout:g} s"
    return None if outcome[0] is None else f"{parts.hostname} cannot be reached: {outcome[0]}"


def _missing(kind: str, why: str = "") -> WeightsUnavailable:
    return WeightsUnavailable(
        f"{_WHAT[kind]} weights not found{f': {why}' if why else ''}; set {_ENV[kind]} to the "
        f"file, or place {_FILE[kind]} in {hub_checkpoint('').parent}/checkpoints"
    )


def _download(kind: str, target: Path) -> None:
    """One quiet download into the cache (no progress bar, no library messages)."""
    if kind in _FAILED_DOWNLOADS:
        raise _missing(kind, _FAILED_DOWNLOADS[kind])
    why = unreachable(_URL[kind])
    if why is not None:
        _FAILED_DOWNLOADS[kind] = f"no download ({why})"
        raise _missing(kind, _FAILED_DOWNLOADS[kind])
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            torch.hub.download_url_to_file(_URL[kind], str(target), progress=False)
    except Exception as err:  # no network, refused, truncated
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        _FAILED_DOWNLOADS[kind] = f"download failed ({reason})"
        raise _missing(kind, _FAILED_DOWNLOADS[kind]) from None


def weights_file(kind: str, path: str | None = None) -> Path:
    """The weights file of `kind` (`vgg`, `alex`, `inception`, `pt_inception`,
    `cleanfid_inception`), found or fetched."""
    chosen = path or os.environ.get(_ENV[kind])
    if chosen:
        if not Path(chosen).is_file():
            raise WeightsUnavailable(f"{_ENV[kind]}/weights file '{chosen}' does not exist")
        return Path(chosen)
    cached = hub_checkpoint(_FILE[kind])
    if cached.is_file():
        return cached
    if offline():
        raise _missing(kind)
    _download(kind, cached)
    return cached


def read_state_dict(kind: str, file: Path) -> dict:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or not a state dict
        raise _missing(kind, f"'{file}' cannot be read ({type(err).__name__})") from None


def load_lpips(net: str = "vgg", path: str | None = None) -> torch.nn.Module:
    """`lpips.LPIPS(net=...)` (its linear layers ship with the package) on a trunk file."""
    import lpips

    file = weights_file(net, path)
    with contextlib.redirect_stdout(io.StringIO()):
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    load_lpips_trunk(model, read_state_dict(net, file), net)
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


def describe_missing(err: Exception) -> str:
    """The reason a metric is unavailable, as it appears in the results."""
    return str(err) if isinstance(err, WeightsUnavailable) else f"{type(err).__name__}: {err}"
