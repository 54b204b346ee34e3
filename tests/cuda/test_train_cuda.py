"""The engine on CUDA: `vqbench train` with each precision, `compile`, `channels_last`; resume
after a kill; `torchrun` with NCCL; evaluation with `--extend`; no host synchronisation in a
steady-state step. Skipped without a CUDA device.

What the resume tests assert: CUDA kernels may sum in a different order from run to run
(atomic adds in `index_add_` and cuDNN's weight gradients), so by default a resumed run is
checked like two runs of the same batches on CPU (losses to 1e-4, weights within Adam's bound);
with `torch.use_deterministic_algorithms(True)` (and `CUBLAS_WORKSPACE_CONFIG`) the weights
must be bit-for-bit those of the uninterrupted run, as on CPU.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.cuda.conftest import DEVICE, needs_cuda, needs_device
from tests.engine_helpers import (
    SteadyStateWindows,
    assert_same_training,
    final_weights,
    run_cli,
    small_config,
    write_config,
)
from vqbench.cli import main
from vqbench.config import parse_run_config
from vqbench.train import TrainOptions, train

pytestmark = [pytest.mark.cuda, needs_device]

QUANTIZERS = ["vanilla", "ema", "fc", "fsq", "lfq", "vqgan_lc", "simvq", "group_vq"]
DEVICE_ARG = ["--device", str(DEVICE)]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")


def losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["total"] for r in records if "total" in r]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- every quantizer, every precision ----------------------------------------------------------
@pytest.mark.parametrize("name", QUANTIZERS)
def test_train_and_eval_every_quantizer(name, tmp_path):
    config = write_config(tmp_path / "run.yaml", small_config(name, steps=4))
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run_dir), *DEVICE_ARG]) == 0
    env = json.loads((run_dir / "env.json").read_text())
    assert env["device"].startswith(DEVICE.type)
    results = json.loads((run_dir / "eval.json").read_text())
    assert results["images"] == 8 and 0 < results["usage"] <= 1 and results["psnr"] > 0
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(run_dir))


SETTINGS = {  # precision, compile, channels_last
    "fp32": ("fp32", False, False),
    "bf16": ("bf16", False, False),
    "fp16": ("fp16", False, False),
    "fp32-compile": ("fp32", True, False),
    "fp32-channels_last": ("fp32", False, True),
    "bf16-compile-channels_last": ("bf16", True, True),
    "fp16-compile": ("fp16", True, False),
}


def _train_with(tmp_path, name, setting, quantizer="group_vq", steps=6):
    precision, compiled, channels_last = SETTINGS[setting]
    train_section = {
        "precision": precision,
        "compile": compiled,
        "channels_last": channels_last,
        "log_every": 1,
    }
    config = small_config(quantizer, steps=steps, train=train_section)
    path = write_config(tmp_path / f"{name}.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / name), "--no-eval", *DEVICE_ARG]) == 0
    return tmp_path / name


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_each_precision_compile_and_channels_last_train(setting, tmp_path):
    run_dir = _train_with(tmp_path, setting, setting)
    values = losses(run_dir)
    assert values and all(torch.isfinite(torch.tensor(v)) for v in values)
    if SETTINGS[setting][0] == "fp32" and setting != "fp32":
        # compile / channels_last change kernels, not the arithmetic: as eager, contiguous.
        # From the second step on, a rounding difference can flip a near-tied code (see
        # `assert_same_training`), so only the first step's loss is held to float rounding.
        eager = losses(_train_with(tmp_path, "eager", "fp32"))
        assert values[0] == pytest.approx(eager[0], rel=1e-3)
        assert values == pytest.approx(eager, rel=5e-2)


# ---- resume after a kill ------------------------------------------------------------------------
DETERMINISM_PLUGIN = """
import torch
torch.use_deterministic_algorithms(True)
"""


def _train_process(config, out, env, resume=False, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "vqbench", "train", str(config), "--out", str(out), "--no-eval"]
        + DEVICE_ARG
        + (["--resume"] if resume else []),
        env=env,
        **kwargs,
    )


def _kill_after_checkpoint(config, out, env, step="step-00000006"):
    proc = _train_process(config, out, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.exists() and latest.read_text().strip() >= step):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "running" and status["step"] < 24, "the run was not interrupted"


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_sigkill_then_resume_on_cuda(deterministic, tmp_path):
    config = small_config("ema", steps=24, train={"checkpoint_every": 3, "log_every": 4})
    env = {
        **os.environ,
        "VQBENCH_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(tmp_path),
    }
    if deterministic:
        (tmp_path / "cuda_determinism.py").write_text(DETERMINISM_PLUGIN)
        config["plugins"] = ["cuda_determinism"]
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    path = write_config(tmp_path / "run.yaml", config)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    assert _train_process(path, reference, env).wait() == 0
    _kill_after_checkpoint(path, interrupted, env)
    resumed = _train_process(path, interrupted, env, True, stdout=subprocess.PIPE, text=True)
    output, _ = resumed.communicate()
    assert resumed.returncode == 0 and "resumed from step-" in output
    if deterministic:
        for which in ("model", "ema"):
            a, b = final_weights(reference, which), final_weights(interrupted, which)
            for key in a:
                assert torch.equal(a[key], b[key]), f"{which}.{key} differs after resume"
    else:
        assert_same_training(reference, interrupted, lr=1e-3, steps=24)


# ---- torchrun with NCCL --------------------------------------------------------------------------
@needs_cuda
def test_torchrun_one_process_with_nccl_equals_a_plain_run(tmp_path):
    config = small_config(
        "ema",
        steps=4,
        loss={"perceptual_weight": 0.0, "gan_weight": 0.0},
        train={"checkpoint_every": 1, "keep_checkpoints": 8},
    )
    path = write_config(tmp_path / "run.yaml", config)
    plain = run_cli("train", str(path), "--out", str(tmp_path / "plain"), *DEVICE_ARG)
    assert plain.returncode == 0, plain.stderr[-2000:]
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
        + ["--master_port", str(free_port()), "-m", "vqbench", "train", str(path)]
        + ["--out", str(tmp_path / "torchrun"), *DEVICE_ARG],
        capture_output=True,
        text=True,
        env={**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    env = json.loads((tmp_path / "torchrun" / "env.json").read_text())
    assert env["backend"] == "nccl" and env["world_size"] == 1
    assert json.loads((tmp_path / "plain" / "env.json").read_text())["backend"] is None
    assert_same_training(tmp_path / "plain", tmp_path / "torchrun", lr=1e-3, steps=4)
    assert json.loads((tmp_path / "torchrun" / "eval.json").read_text())["images"] == 8


# ---- evaluation with --extend --------------------------------------------------------------------
def test_eval_extend_on_cuda_equals_cpu(tmp_path):
    config = write_config(tmp_path / "run.yaml", small_config("group_vq", steps=3))
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run_dir), "--no-eval", *DEVICE_ARG]) == 0
    extended = run_dir / "eval-extend-128.json"
    assert main(["eval", str(run_dir), "--extend", "128", "--device", "cpu"]) == 0
    on_cpu = json.loads(extended.read_text())
    assert main(["eval", str(run_dir), "--extend", "128", *DEVICE_ARG]) == 0
    on_device = json.loads(extended.read_text())
    assert on_device["codebook_size"] == on_cpu["codebook_size"] == 128
    assert on_device["operation"] == "extend-128"
    assert on_device["psnr"] == pytest.approx(on_cpu["psnr"], rel=1e-4)
    assert on_device["usage"] == pytest.approx(on_cpu["usage"], abs=2 / 128)


# ---- no host synchronisation in a steady-state step ----------------------------------------------
def _sync_free_run(tmp_path, monkeypatch, name, precision, **params):
    windows = SteadyStateWindows(
        lambda: torch.cuda.set_sync_debug_mode("error"),
        lambda: torch.cuda.set_sync_debug_mode(0),
    )
    windows.install(monkeypatch)
    config = small_config(name, steps=8, train={"precision": precision})
    config["train"].update(log_every=8, checkpoint_every=100)
    config["quantizer"]["params"].update(params)
    try:
        config = parse_run_config(config, "test")
        train(config, tmp_path / "run", TrainOptions(device="cuda", show_progress=False))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return windows.windows


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("name", QUANTIZERS)
def test_a_steady_state_step_makes_no_host_synchronisation(name, precision, tmp_path, monkeypatch):
    # The GAN term is on (small_config keeps gan_weight 0.1); fp16 adds the loss scaler.
    assert _sync_free_run(tmp_path, monkeypatch, name, precision) == 6


@needs_cuda
def test_the_sync_check_catches_a_synchronisation(tmp_path, monkeypatch):
    # The certified search reads how many tokens fall back: one synchronisation per call.
    with pytest.raises(RuntimeError, match="synchroniz"):
        _sync_free_run(tmp_path, monkeypatch, "vanilla", "bf16", search_precision="tf32")
