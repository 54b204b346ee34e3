"""Checkpoints: the whole training state, written so that a kill never leaves half a file.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` with the weights in safetensors
(`model`, `ema`, `discriminator`), the rest in `state.pt` (optimisers, learning-rate
schedules, loss scalers, every process's RNG state, the step, the config fingerprint) read back with
`torch.load(weights_only=True)`, and `checksums.json` (SHA-256 of each file). It is written
under a temporary name and renamed; `checkpoints/latest` (replaced atomically) names the last
complete one; older ones beyond `keep` are removed. Loading verifies the checksums, so damaged
bytes are detected, and `newest_good_checkpoint` falls back to an older checkpoint (and says
so) when the newest cannot be used.

`TrainState` is the one definition of what a checkpoint holds: `state_dict` (for saving) and
`load_state_dict` (for resuming) are written once, side by side.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vqbench import distributed
from vqbench.errors import VQBenchError
from vqbench.files import atomic_write_json, atomic_write_text, load_json

WEIGHT_FILES = ("model", "ema", "discriminator")


# ---- RNG ---------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


# ---- the training state ---------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything a resumed run needs to continue bit for bit."""

    model: nn.Module
    ema: Any  # has `.model`, the EMA copy of `model`
    discriminator: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler_g: torch.amp.GradScaler
    scaler_d: torch.amp.GradScaler
    #: Learning-rate schedulers, one per optimiser (`vqbench.build.build_schedules`).
    schedules: list[torch.optim.lr_scheduler.LRScheduler] = field(default_factory=list)
    step: int = 0
    #: This process's part of what the log accumulates between records (the epoch's code
    #: counts, the loss window), so that the log of a resumed run equals an uninterrupted one.
    progress: dict[str, Any] = field(default_factory=dict)

    def weights(self) -> dict[str, dict[str, torch.Tensor]]:
        weights = {"model": self.model.state_dict(), "ema": self.ema.model.state_dict()}
        if self.discriminator is not None:
            weights["discriminator"] = self.discriminator.state_dict()
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else {},
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "schedules": [schedule.state_dict() for schedule in self.schedules],
        }

    def load_state_dict(
        self, weights: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]
    ) -> None:
        self.model.load_state_dict(weights["model"])
        self.ema.model.load_state_dict(weights["ema"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(weights["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        # Checkpoints from before schedules existed were trained at a constant rate, which a
        # fresh constant schedule continues.
        for schedule, saved in zip(self.schedules, state.get("schedules", [])):
            schedule.load_state_dict(saved)
        self.step = int(state["step"])

    def save(self, folder: Path, world: distributed.World, fingerprint: str, keep: int) -> None:
        """Every process's RNG state is gathered; rank 0 writes the checkpoint."""
        rngs = distributed.gather_objects(capture_rng())
        progress = distributed.gather_objects(self.progress)
        if world.is_main:
            state = {
                **self.state_dict(),
                "rng": rngs,
                "progress": progress,
                "fingerprint": fingerprint,
            }
            save_checkpoint(folder, self.step, self.weights(), state, keep=keep)
        distributed.barrier()

    def resume(self, weights, state, world: distributed.World) -> None:
        self.load_state_dict(weights, state)
        rngs = state["rng"]
        restore_rng(rngs[world.rank] if world.rank < len(rngs) else rngs[0])
        progress = state.get("progress", [])  # per process; none if the world size changed
        self.progress = progress[world.rank] if len(progress) == world.size else {}


# ---- files ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    folder: Path,
    step: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write `step-NNNNNNNN/` under a temporary name, checksum it, rename it, point `latest` at
    it and drop the oldest beyond `keep`. A failed write (disk full) leaves the earlier
    checkpoints as they were and is one line."""
    final = folder / f"step-{step:08d}"
    tmp = folder / f".tmp-step-{step:08d}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, tensors in weights.items():
            save_file(_contiguous(tensors), str(tmp / f"{name}.safetensors"))
        torch.save(state, tmp / "state.pt")
        checksums = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        atomic_write_json(tmp / "checksums.json", checksums)
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except Exception as err:  # OSError, or torch's / safetensors' own error on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VQBenchError(
            f"cannot write checkpoint '{final}' ({reason}); make room on its disk, then "
            f"continue with --resume"
        ) from None
    atomic_write_text(folder / "latest", final.name + "\n")
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def is_checkpoint(path: Path) -> bool:
    """True for a checkpoint folder (`step-*`, or any folder holding a `state.pt`)."""
    return (path / "state.pt").exists() or path.name.startswith("step-")


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint `latest` names; if that pointer is missing or damaged, the newest
    checkpoint folder (each appears complete, by one rename), or None."""
    pointer = folder / "latest"
    name = pointer.read_bytes().decode(errors="replace").strip() if pointer.is_file() else ""
    if re.fullmatch(r"step-\d{8}", name) and (folder / name).is_dir():
        return folder / name
    found = checkpoint_folders(folder)
    return found[0] if found else None


def checkpoint_folders(folder: Path) -> list[Path]:
    """Every complete checkpoint folder, newest first."""
    return sorted((p for p in folder.glob("step-*") if p.is_dir()), reverse=True)


def verify_checksums(path: Path) -> None:
    """Compare every file of a checkpoint with its recorded SHA-256."""
    listing = path / "checksums.json"
    if not listing.is_file():
        return  # written before checksums were kept
    try:
        recorded = load_json(listing)
    except VQBenchError as err:
        raise VQBenchError(f"checkpoint '{path}' has a damaged checksums.json: {err}") from None
    if not isinstance(recorded, dict):
        raise VQBenchError(f"checkpoint '{path}' has a damaged checksums.json (not an object)")
    for name, digest in recorded.items():
        file = path / name
        if not file.is_file():
            raise VQBenchError(f"checkpoint '{path}' lacks {name}")
        if _sha256(file) != digest:
            raise VQBenchError(
                f"checkpoint '{path}' is damaged: {name} does not match its checksum"
            )


def load_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Weights and state of a checkpoint folder, verified; a clear error if it is unusable."""
    if not (path / "state.pt").is_file() or not (path / "model.safetensors").is_file():
        raise VQBenchError(
            f"'{path}' is not a vqbench checkpoint (it needs model.safetensors "
            f"and state.pt); point at a run directory or a step-* folder"
        )
    try:
        verify_checksums(path)
        weights = {
            name: load_file(str(path / f"{name}.safetensors"))
            for name in WEIGHT_FILES
            if (path / f"{name}.safetensors").is_file()
        }
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except VQBenchError as err:
        raise VQBenchError(f"{err}; delete it to fall back to an earlier one") from None
    except Exception as err:  # truncated or corrupt files
        raise VQBenchError(
            f"checkpoint '{path}' cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'corrupt'}); it may be "
            f"truncated: delete it to fall back to an earlier one"
        ) from None
    return weights, state


def load_error_detail(err: BaseException) -> str:
    """The telling line of a failed `load_state_dict` (the first 'size mismatch for ...')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[1] if len(lines) > 1 else lines[0]


def newest_good_checkpoint(
    folder: Path, fingerprint: str | None = None, warn: Callable[[str], None] = print
) -> tuple[Path, dict, dict] | None:
    """The newest checkpoint that loads, verifies and (if given) matches `fingerprint`.

    A newer checkpoint that cannot be used is skipped with a message saying why; a
    checkpoint of a different config (same shapes, other settings) is an error.
    """
    for path in checkpoint_folders(folder):
        try:
            weights, state = load_checkpoint(path)
        except VQBenchError as err:
            warn(f"skipping checkpoint {path.name}: {str(err).split('; delete it')[0]}")
            continue
        recorded = state.get("fingerprint")
        if fingerprint is not None and recorded is not None and recorded != fingerprint:
            raise VQBenchError(
                f"checkpoint '{path}' was written by another config (fingerprint {recorded}, "
                f"this run {fingerprint}); use another --out or --force to start over"
            )
        return path, weights, state
    return None
