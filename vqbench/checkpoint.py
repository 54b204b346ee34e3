"""Checkpoints that a kill never leaves half-written.

A checkpoint is a folder `checkpoints/step-NNNNNNNN/` with the weights in safetensors
(`model`, `ema`, `discriminator`) and the rest in `state.pt` (optimisers, scaler, RNG states,
step, epoch, position in the epoch), read back with `torch.load(weights_only=True)`. It is
written under a temporary name and renamed, and `checkpoints/latest` (a one-line file, replaced
atomically) names the last complete one; older ones beyond `keep` are removed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vqbench.errors import VQBenchError

WEIGHT_FILES = ("model", "ema", "discriminator")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    folder: Path,
    step: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tmp = folder / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, tensors in weights.items():
        save_file(_contiguous(tensors), str(tmp / f"{name}.safetensors"))
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _atomic_write_text(folder / "latest", final.name + "\n")
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Weights and state of a checkpoint folder; a clear error if it is not a vqbench one."""
    if not (path / "state.pt").is_file() or not (path / "model.safetensors").is_file():
        raise VQBenchError(
            f"'{path}' is not a vqbench checkpoint (it needs model.safetensors "
            f"and state.pt); point at a run directory or a step-* folder"
        )
    try:
        weights = {
            name: load_file(str(path / f"{name}.safetensors"))
            for name in WEIGHT_FILES
            if (path / f"{name}.safetensors").is_file()
        }
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or corrupt files
        raise VQBenchError(
            f"checkpoint '{path}' cannot be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'corrupt'}); it may be "
            f"truncated: delete it to fall back to an earlier one"
        ) from None
    return weights, state
