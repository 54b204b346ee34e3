"""`train.time_quantizer`: the quantizer's forward, backward and upkeep time per step."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tests.engine_helpers import small_config, write_config
from vqbench.cli import main
from vqbench.config import parse_run_config
from vqbench.errors import VQBenchError
from vqbench.timing import QuantizerTimer

SLOW_PLUGIN = """
import time
import torch
from vqbench import register_quantizer
from vqbench_quantizers.vanilla import VanillaVQ


class _SlowBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        time.sleep(0.03)
        return grad


@register_quantizer("slow_vq")
class SlowVQ(VanillaVQ):
    def quantize_tokens(self, z):
        time.sleep(0.02)
        out = super().quantize_tokens(_SlowBackward.apply(z))
        return out

    def after_optimizer_step(self):
        time.sleep(0.01)
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")


def test_the_timer_measures_forward_backward_and_upkeep(tmp_path, monkeypatch):
    (tmp_path / "slow_plugin.py").write_text(SLOW_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = small_config("vanilla", steps=4, batch=4, train={"time_quantizer": True})
    config.update(plugins=["slow_plugin"])
    config["quantizer"]["name"] = "slow_vq"
    config["train"]["log_every"] = 2
    path = write_config(tmp_path / "run.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-eval"]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    logged = [r for r in records if "quantizer_ms" in r]
    assert [r["step"] for r in logged] == [2, 4]
    for r in logged:  # 20 ms forward + 30 ms backward + 10 ms upkeep, and a little work
        assert 60 <= r["quantizer_ms"] < 60 + 0.5 * (r["step_ms"] - 60)
        assert r["quantizer_share"] == pytest.approx(r["quantizer_ms"] / r["step_ms"])


def test_off_by_default_and_out_of_the_fingerprint(tmp_path):
    config = small_config("simvq", steps=2, batch=4)
    path = write_config(tmp_path / "run.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-eval"]) == 0
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "quantizer_ms" not in records
    timed = small_config("simvq", steps=2, batch=4, train={"time_quantizer": True})
    assert parse_run_config(timed, "t").fingerprint() == parse_run_config(config, "t").fingerprint()


def test_timing_leaves_values_and_gradients_alone():
    from vqbench import create_quantizer

    q = create_quantizer("group_vq", codebook_size=64, dim=16, groups=4)
    z = torch.randn(2, 16, 4, 4, requires_grad=True)
    plain = q(z)
    (plain.z_q.square().sum() + plain.loss).backward()
    expected = z.grad.clone(), q.projector.weight.grad.clone()
    z.grad = None
    q.zero_grad()
    timer = QuantizerTimer(q, torch.device("cpu"))
    timed = q(z)
    (timed.z_q.square().sum() + timed.loss).backward()
    q.after_optimizer_step()
    assert torch.equal(timed.z_q, plain.z_q) and torch.equal(timed.indices, plain.indices)
    assert torch.equal(z.grad, expected[0]) and torch.equal(q.projector.weight.grad, expected[1])
    assert len(timer.intervals) == 3 and timer.take() > 0 and timer.intervals == []
    timer.remove()
    assert not q._forward_hooks and not q._forward_pre_hooks
    assert "after_optimizer_step" not in vars(q)
    with torch.no_grad():
        q(z)  # evaluation is not timed
    assert timer.intervals == []


def test_time_quantizer_with_compile_is_refused():
    config = small_config("simvq", train={"time_quantizer": True, "compile": True})
    with pytest.raises(VQBenchError, match="time_quantizer"):
        parse_run_config(config, "run.yaml")


def test_sleep_is_not_mistaken_for_the_quantizer():
    """A plain sleep outside the quantizer is not counted."""
    from vqbench import create_quantizer

    q = create_quantizer("vanilla", codebook_size=64, dim=16)
    timer = QuantizerTimer(q, torch.device("cpu"))
    z = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = q(z)
    time.sleep(0.05)
    out.z_q.sum().backward()
    assert timer.take() < 40
