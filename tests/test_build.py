"""vqbench.build: schedules, the model EMA, optimisers, and finding a trained run."""

from __future__ import annotations

import math

import pytest
import torch

from tests.engine_helpers import small_config
from vqbench import VQBenchError
from vqbench.build import (
    ModelEMA,
    build_optimizers,
    build_schedules,
    find_run,
    schedule_factor,
)
from vqbench.checkpoint import save_checkpoint
from vqbench.config import ScheduleConfig, parse_run_config
from vqbench.rundir import RunDir


def test_schedule_factors_by_hand():
    constant = schedule_factor(ScheduleConfig(), 10)
    assert [constant(s) for s in (0, 5, 99)] == [1.0, 1.0, 1.0]
    warm = schedule_factor(ScheduleConfig(kind="linear_warmup", warmup_steps=4), 10)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = schedule_factor(ScheduleConfig(kind="cosine", warmup_steps=2, min_lr_ratio=0.2), 6)
    # t = (step - 2) / 4: 0, 1/4, 1/2, 3/4, 1, then held at the floor.
    expected = [0.5, 1.0, 1.0, 0.2 + 0.4 * (1 + math.cos(math.pi / 4)), 0.6]
    assert [cosine(s) for s in range(5)] == pytest.approx(expected)
    assert cosine(6) == pytest.approx(0.2) and cosine(50) == pytest.approx(0.2)


def test_one_scheduler_per_optimiser_on_its_own_rate():
    config = parse_run_config(
        small_config(
            "vanilla",
            loss={"gan_weight": 0.1},
            optim={"lr": 1e-3, "disc_lr": 4e-3, "schedule": {"kind": "cosine"}},
        ),
        "test",
    )
    g, d = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt_g, opt_d = build_optimizers(config, g, d)
    schedules = build_schedules(config.optim.schedule, (opt_g, opt_d), total_steps=2)
    assert len(schedules) == 2
    assert len(build_schedules(config.optim.schedule, (opt_g, None), total_steps=2)) == 1
    for opt in (opt_g, opt_d):
        opt.step()
    for s in schedules:
        s.step()  # t = 1/2: half the rate
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2e-3)


def test_model_ema_by_hand_and_reset():
    live = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        live.weight.fill_(1.0)
    ema = ModelEMA(live, decay=0.75)
    with torch.no_grad():
        live.weight.fill_(5.0)
    ema.update(live)  # 0.75 * 1 + 0.25 * 5
    assert ema.model.weight.item() == pytest.approx(2.0)
    assert not ema.model.weight.requires_grad and not ema.model.training
    ema.reset(live)
    assert ema.model.weight.item() == 5.0 and ema.model is not live


def test_find_run_from_a_run_folder_or_a_checkpoint_and_one_line_otherwise(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(VQBenchError, match="does not exist"):
        find_run(run.path)
    run.path.mkdir()
    with pytest.raises(VQBenchError, match="not a vqbench run directory"):
        find_run(run.path)
    run.config_file.write_text("name: x\n")
    step = save_checkpoint(run.checkpoints, 3, {"model": {"w": torch.ones(1)}}, {"step": 3})
    found, checkpoint = find_run(run.path)
    assert found.path == run.path and checkpoint == step
    found, checkpoint = find_run(step)
    assert found.path == run.path and checkpoint == step
