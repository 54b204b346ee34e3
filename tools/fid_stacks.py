"""How much the FID stacks disagree on the same images, with the same (test-made) Inception.

    OMP_NUM_THREADS=1 python tools/fid_stacks.py [--images 32] [--resolution 64] [--seed 0]

One randomly initialised Inception-v3 (`tests/metrics/inception_files.py`), its BatchNorm
statistics taken from 16 embedded training crops, is written as each stack's weights file, so
the stacks differ only in what they do to an image before the network (uint8 or float input,
the resize to 299 and its filter, the scaling) and in their distance code.
The images: the embedded validation photos (`EmbeddedPhotos`, crops at `--resolution`), against
"reconstructions" that are the same crops halved and doubled again with bilinear resizes (the
blur of a lossy tokenizer). Prints one markdown row per stack: FID, and its difference from
torch-fidelity's in percent. The README's "FID stacks and protocols" quotes its output.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.metrics.inception_files import write_inception_files  # noqa: E402
from vqbench.data import EmbeddedPhotos  # noqa: E402
from vqbench.metrics import FID  # noqa: E402

STACKS = [
    ("torch-fidelity", None),
    ("pytorch-fid", None),
    ("clean-fid", "clean"),
    ("clean-fid", "legacy_tensorflow"),
]


def blurred(images: torch.Tensor) -> torch.Tensor:
    """Each image halved and doubled again (bilinear, antialiased down)."""
    size = images.shape[-1]
    small = F.interpolate(images, size=size // 2, mode="bilinear", antialias=True)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False).clamp(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    photos = EmbeddedPhotos(args.resolution, train=False, size=args.images, seed=args.seed)
    originals = torch.stack([photos[i] for i in range(len(photos))])
    reconstructions = blurred(originals)
    train = EmbeddedPhotos(args.resolution, train=True, size=16, seed=args.seed)
    calibration = F.interpolate(
        torch.stack([train[i] for i in range(len(train))]), size=299, mode="bilinear"
    )
    with tempfile.TemporaryDirectory() as folder:
        files = write_inception_files(Path(folder), seed=args.seed, calibration=calibration)
        values = {}
        for backend, mode in STACKS:
            metric = FID(str(files[backend]), backend=backend, mode=mode)
            for start in range(0, len(originals), 8):
                metric.update(originals[start : start + 8], reconstructions[start : start + 8])
            values[(backend, mode)] = float(metric.compute()["rfid"])
    base = values[STACKS[0]]
    print(f"{args.images} images at {args.resolution}px vs the same halved and doubled; seed "
          f"{args.seed}\n")  # fmt: skip
    print("| stack | FID | vs torch-fidelity |\n|---|---:|---:|")
    for (backend, mode), value in values.items():
        name = f"{backend} ({mode})" if mode else backend
        print(f"| {name} | {value:.5g} | {100 * (value - base) / base:+.3f}% |")


if __name__ == "__main__":
    main()
