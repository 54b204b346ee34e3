"""The engine: train then eval for every quantizer, resume, 2 processes, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.engine_helpers import (
    SMALL_QUANTIZER_PARAMS,
    assert_same_training,
    final_weights,
    run_cli,
    small_config,
    write_config,
)
from vqbench.cli import main

QUANTIZERS = sorted(SMALL_QUANTIZER_PARAMS)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")


@pytest.mark.parametrize("name", QUANTIZERS)
def test_train_then_eval_every_quantizer(tmp_path, name, capsys):
    config = write_config(tmp_path / "run.yaml", small_config(name, steps=3, batch=4))
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run_dir), "--device", "cpu"]) == 0
    for item in (
        "config.yaml",
        "fingerprint",
        "env.json",
        "metrics.jsonl",
        "eval.json",
        "status.json",
    ):
        assert (run_dir / item).is_file(), item
    results = json.loads((run_dir / "eval.json").read_text())
    assert results["images"] == 8 and 0 < results["usage"] <= 1
    if "index_sizes" in results:  # a composite: usage per index and as the product
        assert len(results["usage_per_index"]) == len(results["index_sizes"]) > 1
        assert 0 < results["product_usage"] <= 1
    assert results["psnr"] > 0 and -1 <= results["ssim"] <= 1
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("train_usage" in r for r in records)
    assert all(torch.isfinite(torch.tensor(r["total"])) for r in records if "total" in r)
    # Evaluating again from the CLI reproduces the same numbers.
    assert main(["eval", str(run_dir), "--device", "cpu"]) == 0
    again = json.loads((run_dir / "eval.json").read_text())
    assert again["psnr"] == pytest.approx(results["psnr"]) and again["usage"] == results["usage"]


def test_eval_extend_and_resample_on_group_vq(tmp_path):
    config = write_config(tmp_path / "run.yaml", small_config("group_vq", steps=2))
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run_dir), "--device", "cpu"]) == 0
    assert main(["eval", str(run_dir), "--extend", "128"]) == 0
    extended = json.loads((run_dir / "eval-extend-128.json").read_text())
    assert extended["codebook_size"] == 128 and extended["operation"] == "extend-128"
    assert main(["eval", str(run_dir), "--resample", "32"]) == 0
    assert json.loads((run_dir / "eval-resample-32.json").read_text())["codebook_size"] == 32


def test_eval_extend_is_refused_for_other_quantizers(tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml", small_config("simvq", steps=2))
    run_dir = tmp_path / "run"
    main(["train", str(config), "--out", str(run_dir), "--device", "cpu", "--no-eval"])
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--extend", "128"]) == 2
    assert "quantizer 'simvq' cannot extend its codebook" in capsys.readouterr().err


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    # Without the GAN: the PatchGAN's BatchNorm sees micro-batches, as it sees per-GPU batches
    # under DDP (as in SimVQ's trainer), so with it the two differ by design.
    no_gan = {"perceptual_weight": 0.0, "gan_weight": 0.0}
    every = {"checkpoint_every": 1, "keep_checkpoints": 3}
    full = write_config(
        tmp_path / "full.yaml", small_config("vanilla", steps=3, batch=8, loss=no_gan, train=every)
    )
    acc = write_config(
        tmp_path / "acc.yaml",
        small_config(
            "vanilla", steps=3, batch=8, train={"micro_batch_size": 2, **every}, loss=no_gan
        ),
    )
    main(["train", str(full), "--out", str(tmp_path / "full"), "--no-eval"])
    main(["train", str(acc), "--out", str(tmp_path / "acc"), "--no-eval"])
    assert_same_training(tmp_path / "full", tmp_path / "acc", lr=1e-3, steps=3)


def test_sigkill_mid_run_then_resume_ends_with_the_same_weights(tmp_path):
    config = write_config(
        tmp_path / "run.yaml",
        small_config("group_vq", steps=24, batch=4, train={"checkpoint_every": 3, "log_every": 5}),
    )
    reference = tmp_path / "reference"
    done = run_cli("train", str(config), "--out", str(reference), "--no-eval")
    assert done.returncode == 0, done.stderr
    interrupted = tmp_path / "interrupted"
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vqbench",
            "train",
            str(config),
            "--out",
            str(interrupted),
            "--no-eval",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = interrupted / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        latest.exists() and latest.read_text().strip() >= "step-00000006"
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads((interrupted / "status.json").read_text())
    assert status["state"] == "running" and status["step"] < 24, "the run was not interrupted"
    # Without --resume the folder is refused, and nothing is touched.
    refused = run_cli("train", str(config), "--out", str(interrupted), "--no-eval")
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    resumed = run_cli("train", str(config), "--out", str(interrupted), "--resume", "--no-eval")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step-" in resumed.stdout
    for which in ("model", "ema"):
        a, b = final_weights(reference, which), final_weights(interrupted, which)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{which}.{key} differs after resume"


def test_two_processes_with_gloo_equal_one_process(tmp_path):
    config = write_config(
        tmp_path / "run.yaml",
        small_config(
            "simvq",
            steps=3,
            batch=8,
            loss={"perceptual_weight": 0.0, "gan_weight": 0.0},
            train={"checkpoint_every": 1, "keep_checkpoints": 3},
        ),
    )
    one = run_cli("train", str(config), "--out", str(tmp_path / "one"), "--no-eval")
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "vqbench",
            "train",
            str(config),
            "--out",
            str(tmp_path / "two"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    assert_same_training(tmp_path / "one", tmp_path / "two", lr=1e-3, steps=3)
    assert json.loads((tmp_path / "two" / "eval.json").read_text())["images"] == 8


NAN_PLUGIN = """
import torch
from vqbench import register_quantizer
from vqbench_quantizers.vanilla import VanillaVQ


@register_quantizer("nan_after_three")
class NanAfterThree(VanillaVQ):
    calls = 0

    def quantize_tokens(self, z):
        out = super().quantize_tokens(z)
        NanAfterThree.calls += 1
        if NanAfterThree.calls > 3:
            out.loss = out.loss * float("nan")
        return out
"""


def test_non_finite_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path):
    (tmp_path / "nan_plugin.py").write_text(NAN_PLUGIN)
    config = small_config("vanilla", steps=8, batch=4)
    config["plugins"] = ["nan_plugin"]
    config["quantizer"]["name"] = "nan_after_three"
    path = write_config(tmp_path / "run.yaml", config)
    result = run_cli("train", str(path), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("vqbench: training stopped: non-finite loss at step 3 (")
    assert "last good checkpoint: step-00000002" in lines[-1] and "Traceback" not in result.stderr
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "diverged"
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every line complete


def test_tensorboard_sink_writes_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config("simvq", steps=4, batch=4, train={"tensorboard": True})
    path = write_config(tmp_path / "run.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-eval"]) == 0
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    logged = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    totals = [r["total"] for r in logged if "total" in r]
    scalars = events.Scalars("train/total")
    assert [s.step for s in scalars] == [2, 4]
    assert [s.value for s in scalars] == pytest.approx(totals, rel=1e-6)
    assert "epoch/train_usage" in events.Tags()["scalars"]


@pytest.mark.parametrize("leak", [False, True])
def test_the_discriminator_step_receives_the_generator_gradient_only_when_asked(leak):
    """SimVQ's trainer: D's step uses grad(d_loss) + grad(gan_weight * g_loss) (no zeroing)."""
    import copy

    from vqbench import distributed
    from vqbench.config import parse_run_config
    from vqbench.losses import hinge_discriminator_loss, non_saturating_generator_loss
    from vqbench.train import Trainer

    config = parse_run_config(
        small_config("simvq", loss={"gan_weight": 0.1, "disc_receives_generator_grad": leak}),
        "test",
    )
    trainer = Trainer.build(config, distributed.setup("cpu"), total_steps=1)
    state = trainer.state
    disc = state.discriminator
    state.opt_d = torch.optim.SGD(disc.parameters(), lr=1.0)  # the step is minus the gradient
    state.opt_g = torch.optim.SGD(state.model.parameters(), lr=0.0)  # freeze the autoencoder
    state.schedules = []  # they drive the optimisers just replaced
    before = copy.deepcopy(disc)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    pairs = trainer.train_step([x]).pairs
    assert "disc" in trainer.meter.sums and state.step == 1
    # The expected gradient, from a copy of D that sees the same forwards.
    x_rec = pairs[0][1]
    expected = hinge_discriminator_loss(before(x), before(x_rec))
    if leak:
        g_copy = copy.deepcopy(before)
        g_loss = 0.1 * non_saturating_generator_loss(g_copy(x_rec))
        leak_grads = torch.autograd.grad(g_loss, list(g_copy.parameters()))
    grads = torch.autograd.grad(expected, list(before.parameters()))
    for i, (p0, p1, g) in enumerate(zip(before.parameters(), disc.parameters(), grads)):
        total = g + leak_grads[i] if leak else g
        torch.testing.assert_close(p0 - p1, total, rtol=1e-4, atol=1e-6)


def test_a_learning_rate_schedule_is_stepped_by_the_trainer_and_restored_on_resume(tmp_path):
    """Cosine after 2 warmup steps over 8 steps, floor 0.1; a state saved after 5 steps and
    loaded into a fresh trainer continues with the same rates and the same weights."""
    import io

    from vqbench import distributed
    from vqbench.config import parse_run_config
    from vqbench.train import Trainer

    schedule = {"kind": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1}
    raw = small_config("vanilla", optim={"lr": 1e-3, "schedule": schedule})
    config = parse_run_config(raw, "test")
    world = distributed.setup("cpu")
    x = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1]
    a = Trainer.build(config, world, total_steps=8)
    assert a.state.opt_g.param_groups[0]["lr"] == pytest.approx(0.5e-3)  # warmup: (0 + 1) / 2
    rates = []
    for _ in range(5):
        a.train_step(x)
        rates.append(a.state.opt_g.param_groups[0]["lr"])
    # By hand: 1, then 0.1 + 0.9 * (1 + cos(pi * t)) / 2 at t = 0, 1/6, 2/6, 3/6.
    assert rates == pytest.approx([1e-3, 1e-3, 0.9397114e-3, 0.775e-3, 0.55e-3], rel=1e-6)
    buffer = io.BytesIO()
    torch.save(a.state.state_dict(), buffer)  # as a checkpoint's state.pt is written and read
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    b = Trainer.build(config, world, total_steps=8)
    b.state.load_state_dict(a.state.weights(), saved)
    for _ in range(3):
        a.train_step(x)
        b.train_step(x)
        assert b.state.opt_g.param_groups[0]["lr"] == a.state.opt_g.param_groups[0]["lr"]
    assert a.state.opt_g.param_groups[0]["lr"] == pytest.approx(0.1e-3)  # the floor at t = 1
    for key, value in a.state.model.state_dict().items():
        assert torch.equal(value, b.state.model.state_dict()[key]), key


def test_the_default_constant_schedule_keeps_the_fingerprint_of_earlier_runs():
    """Runs recorded before schedules existed keep their fingerprint (a suite does not retrain
    them); any other schedule is a different run."""
    from vqbench.config import parse_run_config

    plain = parse_run_config(small_config("vanilla"), "test")
    assert plain.legacy_fingerprint() == "de248b91d66f978a"  # recorded before schedules
    warm = {"schedule": {"kind": "linear_warmup", "warmup_steps": 2}}
    warmed = parse_run_config(small_config("vanilla", optim=warm), "test")
    assert warmed.fingerprint() != plain.fingerprint()
    assert warmed.legacy_fingerprint() != plain.legacy_fingerprint()
