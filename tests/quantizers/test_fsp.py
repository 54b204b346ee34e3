"""FSP: bins by hand, the training perturbation's size and gradient, indices, bad input."""

import json
import math

import pytest
import torch
from vqbench_quantizers.fsp import ACTIVATIONS, UNIFORM_STD, moment_penalty

from tests.engine_helpers import small_config, write_config
from vqbench import VQBenchError, create_quantizer
from vqbench.cli import main


def test_inference_bins_by_hand():
    q = create_quantizer("fsp", levels=[4, 3], dim=2).eval()
    # tanh activation (tanh(z) + 1) / 2: z = 0 -> 0.5, bin floor(0.5 * 4) = 2 of 4 and
    # floor(0.5 * 3) = 1 of 3; centres 2.5 / 4 and 1.5 / 3; z = -3 -> bin 0 of both.
    z = torch.tensor([[0.0, 0.0], [-3.0, -3.0]])
    out = q.quantize_tokens(z)
    centres = torch.tensor([[2.5 / 4, 1.5 / 3], [0.5 / 4, 0.5 / 3]])
    torch.testing.assert_close(out.z_q, (centres - 0.5) / UNIFORM_STD)
    assert out.indices.tolist() == [2 + 4 * 1, 0]  # first channel least significant
    assert out.loss.item() == 0.0 and math.isclose(UNIFORM_STD, math.sqrt(1 / 12))


def test_training_perturbs_by_at_most_half_a_bin_with_identity_gradient():
    levels = [8, 5]
    q = create_quantizer("fsp", levels=levels, dim=2).train()
    z = (torch.randn(4096, 2) * 0.5).requires_grad_(True)
    out = q.quantize_tokens(z)
    a = ACTIVATIONS["tanh"][0](z)
    position = out.z_q * UNIFORM_STD + 0.5
    step = (position - a).abs()
    assert torch.all(step <= 1 / (2 * torch.tensor(levels)) + 1e-6)
    assert torch.all((position > 0) & (position < 1))
    assert (step > 1e-4).float().mean() > 0.9  # perturbed, not snapped to centres
    (grad,) = torch.autograd.grad(out.z_q.sum(), z)
    (expected,) = torch.autograd.grad(a.sum() / UNIFORM_STD, z)
    torch.testing.assert_close(grad, expected)
    eval_out = q.eval().quantize_tokens(z)
    assert torch.equal(out.indices, eval_out.indices)  # indices of the bins in training too


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_quantize_rate_is_the_share_of_binned_elements(rate):
    q = create_quantizer("fsp", levels=[8], dim=1, quantize_rate=rate).train()
    z = torch.randn(20000, 1)
    binned = torch.isclose(q.quantize_tokens(z).z_q, q.eval().quantize_tokens(z).z_q)
    assert abs(binned.float().mean().item() - rate) < 0.02


def test_inverse_activation_and_vector_norm_penalty():
    q = create_quantizer("fsp", levels=[5], dim=1, inverse_activation=True).eval()
    out = q.quantize_tokens(torch.zeros(1, 1))  # bin 2 of 5, centre 0.5 -> arctanh(0) = 0
    assert out.z_q.abs().item() < 1e-6
    z = torch.randn(500, 3) * 2 + 1
    var, mean = torch.var_mean(z, dim=0)
    expected = (mean**2).mean() * 0.1 + ((var - 1) ** 2).mean() * 0.07
    torch.testing.assert_close(moment_penalty(z, "none-var"), expected)


def test_bad_input_fails_with_one_line():
    for params in ({"levels": [1, 4]}, {"quantize_rate": 1.5}, {"activation": "relu"}):
        with pytest.raises(VQBenchError) as err:
            create_quantizer("fsp", **params)
        assert "\n" not in str(err.value)


def test_four_training_steps_through_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    config = small_config("fsp", steps=4, batch=2)
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "run.yaml", config)), "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("p_accept_prob" in json.dumps(r) for r in records)  # the training perturbation
    results = json.loads((run / "eval.json").read_text())
    assert 0 < results["usage"] <= 1 and results["psnr"] > 0
