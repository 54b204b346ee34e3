"""One randomly initialised Inception-v3, written as each FID stack's weights file (no download).

pytorch-fid and torch-fidelity port the same TensorFlow Inception and name its tensors alike, so
one state dict is both stacks' file. clean-fid loads NVIDIA's TorchScript file
(`inception-2015-12-05.pt`), whose `forward(img, return_features)` resizes to 299 with an
affine grid that reproduces TensorFlow 1's bilinear resize, scales by `(x - 128) / 128` and runs
`layers`; its `layers` take 299x299 images in [-1, 1]. The file made here has that interface,
with pytorch-fid's network (the same weights) as `layers`. So the three stacks differ only in
what each does to an image before the network: what `tools/fid_stacks.py` measures.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F


def random_inception_state(
    seed: int = 0, calibration: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception, randomly initialised: also torch-fidelity's state dict.

    With `calibration` (images in [-1, 1] at 299x299), each BatchNorm's running statistics are
    those of these images (one pass in training mode, a cumulative average), so that the
    features vary with the image; fresh statistics (mean 0, variance 1) leave random features
    all but constant, and FIDs near zero."""
    from pytorch_fid import inception as pf

    no_load = mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None)
    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: {}), no_load:
        torch.manual_seed(seed)
        net = pf.fid_inception_v3()
    if calibration is not None:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        with torch.no_grad():
            net.train()(calibration)
        net.eval()
    return net.state_dict()


class _Layers(torch.nn.Module):
    """pytorch-fid's network on 299x299 images in [-1, 1]: `(B, 2048, 1, 1)` pool features."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        from pytorch_fid import inception as pf

        with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: state):
            self.net = pf.InceptionV3([3], resize_input=False, normalize_input=False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


class _TorchScriptInception(torch.nn.Module):
    """The interface of NVIDIA's `inception-2015-12-05.pt` that clean-fid calls."""

    def __init__(self, layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        batch, channels, height, width = img.shape
        x = img.to(torch.float32)
        theta = torch.eye(2, 3, device=x.device)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / 299
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / 299
        theta = theta.unsqueeze(0).repeat(batch, 1, 1)
        grid = F.affine_grid(theta, [batch, channels, 299, 299], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = (x - 128) / 128
        return self.layers.forward(x).reshape(-1, 2048)


class SmallLayers(torch.nn.Module):
    """A small random stand-in for the Inception layers (2048 features of a 299x299 image):
    fast on a CPU, for tests of what surrounds the network."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.fc = torch.nn.Linear(16 * 4 * 4, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        return torch.relu(self.fc(pooled)).reshape(-1, 2048, 1, 1)


def write_torchscript_inception(folder: Path, layers: torch.nn.Module) -> Path:
    """clean-fid's TorchScript file (`inception-2015-12-05.pt` in `folder`) around `layers`."""
    folder.mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(layers.eval(), torch.zeros(1, 3, 299, 299))
    path = folder / "inception-2015-12-05.pt"
    torch.jit.script(_TorchScriptInception(traced)).save(str(path))
    return path


def write_inception_files(
    folder: Path, seed: int = 0, calibration: torch.Tensor | None = None
) -> dict[str, Path]:
    """The same random Inception as each stack's file: `{"torch-fidelity", "pytorch-fid",
    "clean-fid"}` -> path (`calibration`: see `random_inception_state`)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = random_inception_state(seed, calibration)
    state_file = folder / "random-inception.pth"
    torch.save(state, state_file)
    script_file = write_torchscript_inception(folder, _Layers(state))
    return {"torch-fidelity": state_file, "pytorch-fid": state_file, "clean-fid": script_file}
