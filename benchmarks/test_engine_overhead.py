"""The engine's own overhead: images/s of `vqbench train` against a bare PyTorch loop of the
same model, quantizer, losses, optimisers and model EMA, measured one after the other in the
same process (target: within 10%).

The bare loop is what a user would write: a shuffled `DataLoader`, autocast, backward, Adam,
the discriminator step and the EMA, nothing else. What the engine adds: its sampler (exact
resume), loss meter, codebook-usage counts, log steps (a host synchronisation and a JSON line
each) and epoch ends. Both skip the same warm-up (the first log window). CPU: the tiny preset
as `suites/tiny.yaml` trains it; CUDA: the `vqgan` preset as `suites/gpu-smoke.yaml` does.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_quantizers import DEVICE, device_name

from vqbench import distributed
from vqbench.build import ModelEMA, build_loss, build_model, build_optimizers
from vqbench.checkpoint import seed_everything
from vqbench.config import parse_run_config
from vqbench.data import build_split
from vqbench.train import TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]
STEPS, LOG_EVERY = 60, 20  # the first window (20 steps) is warm-up; 40 steps are measured


def config_from_suite(suite: str, run: str, **train_section) -> dict:
    spec = yaml.safe_load((ROOT / "suites" / f"{suite}.yaml").read_text())
    config = copy.deepcopy(spec["shared"])
    config["quantizer"] = next(r for r in spec["runs"] if r["name"] == run)["quantizer"]
    config["train"] = {**config["train"], "steps": STEPS, "log_every": LOG_EVERY}
    config["train"].update(checkpoint_every=10**6, time_quantizer=False, **train_section)
    config["train"].pop("epochs", None)
    config["name"] = f"overhead-{run}"
    return config


CASES = {
    "cpu": [("tiny", "group_vq", {"precision": "fp32"})],
    "cuda": [("gpu-smoke", "group_vq", {}), ("gpu-smoke", "ema", {})],
}


def engine_images_per_s(config, out: Path) -> float:
    """Steady-state images/s from the run's log (windows after the first)."""
    train(config, out, TrainOptions(device=str(DEVICE), show_progress=False))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    windows = [r["images_per_s"] for r in records if "images_per_s" in r][1:]
    return len(windows) / sum(1 / w for w in windows)


def bare_loop(config):
    """The same work as `vqbench train` without the engine; returns a closure that trains
    `STEPS` steps and the images/s of those after the first `LOG_EVERY`."""
    c = config.train
    seed_everything(config.seed)
    model = build_model(config).to(DEVICE)
    if c.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(config, None, DEVICE)
    opt_g, opt_d = build_optimizers(config, model, loss_fn.discriminator)
    ema = ModelEMA(model, c.ema_decay)
    precision = distributed.pick_precision(c.precision, DEVICE)
    data = build_split(config.data, train=True, seed=config.seed)
    pinned = DEVICE.type == "cuda"
    loader = torch.utils.data.DataLoader(
        data, batch_size=c.batch_size, shuffle=True, drop_last=True, pin_memory=pinned
    )

    def run() -> float:
        step, start = 0, None
        while step < STEPS:
            for x in loader:
                if step == LOG_EVERY:
                    _wait()
                    start = time.perf_counter()
                x = x.to(DEVICE, non_blocking=True)
                with precision.autocast(DEVICE):
                    x_rec, out = model(x)
                    loss, _ = loss_fn.generator_loss(x, x_rec, out.loss, step)
                loss.backward()
                opt_g.step()
                opt_g.zero_grad(set_to_none=True)
                model.quantizer.after_optimizer_step()
                if loss_fn.gan_active(step):
                    with precision.autocast(DEVICE):
                        d_loss, _ = loss_fn.discriminator_loss(x, x_rec.detach(), step)
                    d_loss.backward()
                    opt_d.step()
                    opt_d.zero_grad(set_to_none=True)
                ema.update(model)
                step += 1
                if step == STEPS:
                    break
        _wait()
        return (STEPS - LOG_EVERY) * c.batch_size / (time.perf_counter() - start)

    return run


def _wait() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("case", CASES[DEVICE.type], ids=lambda c: f"{c[0]}-{c[1]}")
def test_engine_overhead(benchmark, case, tmp_path, monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    suite, run, train_section = case
    config = parse_run_config(config_from_suite(suite, run, **train_section), suite)
    engine = engine_images_per_s(config, tmp_path / "run")
    bare = {}
    loop = bare_loop(config)
    benchmark.pedantic(lambda: bare.setdefault("images_per_s", loop()), rounds=1, iterations=1)
    benchmark.group = "engine overhead"
    benchmark.extra_info.update(
        {
            "impl": "engine-overhead",
            "method": config.quantizer.name,
            "suite": suite,
            "preset": config.model.preset,
            "resolution": config.data.resolution,
            "batch": config.train.batch_size,
            "precision": config.train.precision,
            "steps_measured": STEPS - LOG_EVERY,
            "engine_images_per_s": engine,
            "bare_images_per_s": bare["images_per_s"],
            "ratio": engine / bare["images_per_s"],
            "device": DEVICE.type,
            "device_name": device_name(),
            "threads": torch.get_num_threads(),
        }
    )
