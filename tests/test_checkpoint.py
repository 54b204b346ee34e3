"""vqbench.checkpoint: complete-or-absent checkpoint folders, checksums, `latest`, fallback."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vqbench import VQBenchError
from vqbench.checkpoint import (
    capture_rng,
    checkpoint_folders,
    is_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    newest_good_checkpoint,
    restore_rng,
    save_checkpoint,
)


def weights(value: float) -> dict:
    return {"model": {"w": torch.full((2, 3), value)}, "ema": {"w": torch.zeros(2, 3)}}


def test_save_then_load_round_trips_and_keeps_the_newest(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, weights(step), {"step": step, "fingerprint": "f"}, keep=2)
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000006", "step-00000004"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000006"
    loaded, state = load_checkpoint(tmp_path / "step-00000004")
    assert torch.equal(loaded["model"]["w"], torch.full((2, 3), 4.0)) and state["step"] == 4
    assert is_checkpoint(tmp_path / "step-00000004") and not is_checkpoint(tmp_path)


def test_damaged_bytes_are_detected_and_the_newest_good_checkpoint_is_used(tmp_path):
    for step in (2, 4):
        save_checkpoint(tmp_path, step, weights(step), {"step": step, "fingerprint": "f"})
    damaged = tmp_path / "step-00000004" / "model.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(VQBenchError, match="does not match its checksum"):
        load_checkpoint(tmp_path / "step-00000004")
    said = []
    path, loaded, state = newest_good_checkpoint(tmp_path, "f", warn=said.append)
    assert path.name == "step-00000002" and state["step"] == 2
    assert said and "skipping checkpoint step-00000004" in said[0]
    with pytest.raises(VQBenchError, match="written by another config"):
        newest_good_checkpoint(tmp_path, "other", warn=said.append)


def test_a_damaged_latest_pointer_falls_back_to_the_newest_folder(tmp_path):
    for step in (2, 4):
        save_checkpoint(tmp_path, step, weights(step), {"step": step})
    (tmp_path / "latest").write_bytes(b"\xff\x00garbage")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000004"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_rng_state_round_trips():
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    saved = capture_rng()
    first = (torch.rand(3), random.random(), np.random.rand())
    restore_rng(saved)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
