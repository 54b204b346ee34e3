"""Small configurations for the engine tests: the tiny preset on embedded photos, no LPIPS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.helpers import SMALL_CONFIGS

#: Every registered quantizer's small configuration (`Quantizer.small_config`).
SMALL_QUANTIZER_PARAMS = SMALL_CONFIGS


def small_config(name: str = "simvq", *, steps: int = 4, batch: int = 4, **sections) -> dict:
    config = {
        "name": f"test-{name}",
        "seed": 0,
        "data": {"kind": "embedded", "resolution": 32, "train_size": 32, "val_size": 8},
        "model": {"preset": "tiny", "overrides": {"ch": 16, "ch_mult": [1, 2]}},
        "quantizer": {"name": name, "params": dict(SMALL_QUANTIZER_PARAMS[name])},
        "loss": {"perceptual_weight": 0.0},
        "optim": {"lr": 1e-3},
        "train": {"steps": steps, "batch_size": batch, "log_every": 2, "checkpoint_every": 2},
        "eval": {"batch_size": 8, "metrics": ["usage", "psnr", "ssim"]},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vqbench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        **kwargs,
    )


def final_weights(run_dir: Path, which: str = "model") -> dict:
    step = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run_dir / "checkpoints" / step / f"{which}.safetensors"))


def weights_at(run_dir: Path, step: int, which: str = "model") -> dict:
    return load_file(str(run_dir / "checkpoints" / f"step-{step:08d}" / f"{which}.safetensors"))


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*"))


def assert_same_training(run_a: Path, run_b: Path, *, lr: float, steps: int) -> None:
    """Two runs that saw the same global batches agree up to the order of float sums.

    Adam divides each gradient by its own magnitude, so a gradient that is zero in exact
    arithmetic (a bias in front of a GroupNorm, say) becomes a +-lr step of float noise whose
    sign depends on summation order; from the second step on, these differences can flip the
    nearest code of a near-tied token, after which the runs follow (slightly) different paths.
    So: after the first step (checkpointed by the caller with `checkpoint_every: 1`; else the
    earliest checkpoint both runs keep) at least 99% of the weights agree
    to 1e-5; at the end, the logged losses agree to 1e-3 and no weight differs by more than
    Adam's bound of 2 lr per step.
    """

    def losses(run):
        records = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(r)["total"] for r in records if "total" in json.loads(r)]

    assert losses(run_a) == pytest.approx(losses(run_b), rel=1e-3)
    first = min(set(checkpoint_steps(run_a)) & set(checkpoint_steps(run_b)))
    a, b = weights_at(run_a, first), weights_at(run_b, first)
    close = total = 0
    for key in a:
        diff = (a[key].double() - b[key].double()).abs()
        close += int((diff <= 1e-5).sum())
        total += diff.numel()
    assert close / total >= 0.99, (
        f"only {close / total:.4f} of the weights agree after step {first}"
    )
    a, b = final_weights(run_a), final_weights(run_b)
    for key in a:
        diff = (a[key].double() - b[key].double()).abs()
        assert diff.max() <= 2 * lr * steps + 1e-6, key


class SteadyStateWindows:
    """Calls `open_window()` / `close_window()` around the steady-state part of each training
    step of `vqbench train` run in this process: a window opens once a step's micro-batches
    are on the device (from step `warmup` on) and closes when the next step's are (so it
    holds the generator and discriminator steps, the model EMA, the loss meter and the next
    step's data loading), or when the loop reaches a log, checkpoint or epoch-end host
    synchronisation (`StepMeter.check_finite`). Install with `install(monkeypatch)`."""

    def __init__(self, open_window, close_window, warmup: int = 2) -> None:
        self.open_window, self.close_window, self.warmup = open_window, close_window, warmup
        self.calls = self.windows = 0
        self.active = False

    def _close(self) -> None:
        if self.active:
            self.close_window()
            self.active = False
            self.windows += 1

    def install(self, monkeypatch) -> None:
        import vqbench.train as train_module

        original_batches = train_module.micro_batches
        original_check = train_module.StepMeter.check_finite

        def micro_batches(*args, **kwargs):
            batches = original_batches(*args, **kwargs)
            self._close()
            self.calls += 1
            if self.calls > self.warmup:
                self.open_window()
                self.active = True
            return batches

        def check_finite(meter):
            self._close()
            return original_check(meter)

        monkeypatch.setattr(train_module, "micro_batches", micro_batches)
        monkeypatch.setattr(train_module.StepMeter, "check_finite", check_finite)
