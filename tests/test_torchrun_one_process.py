"""Under torchrun the process group starts even for one process (gloo on CPU, NCCL on CUDA),
so that every collective runs through it; the run equals a plain one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tests.engine_helpers import assert_same_training, run_cli, small_config, write_config


def test_torchrun_with_one_process_uses_a_process_group(tmp_path):
    config = small_config(
        "ema",
        steps=3,
        batch=4,
        loss={"perceptual_weight": 0.0, "gan_weight": 0.0},
        train={"checkpoint_every": 1, "keep_checkpoints": 8},
    )
    path = write_config(tmp_path / "run.yaml", config)
    plain = run_cli("train", str(path), "--out", str(tmp_path / "plain"), "--device", "cpu")
    assert plain.returncode == 0, plain.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
        + ["--master_port", str(port), "-m", "vqbench", "train", str(path)]
        + ["--out", str(tmp_path / "torchrun"), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    recorded = json.loads((tmp_path / "torchrun" / "env.json").read_text())
    assert recorded["backend"] == "gloo" and recorded["world_size"] == 1
    assert json.loads((tmp_path / "plain" / "env.json").read_text())["backend"] is None
    assert_same_training(tmp_path / "plain", tmp_path / "torchrun", lr=1e-3, steps=3)
