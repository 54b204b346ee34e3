"""`vqbridge`: the lookup is over the bridge's output, the inference cache follows the weights,
bad sizes fail in one line, and FVQ's annealing (`hold_linear`) survives a resume."""

from __future__ import annotations

import io

import pytest
import torch

from tests.engine_helpers import small_config
from tests.helpers import assert_nearest
from vqbench import distributed
from vqbench.build import schedule_factor
from vqbench.config import ScheduleConfig, parse_run_config
from vqbench.errors import VQBenchError
from vqbench.quantizer import create_quantizer
from vqbench.train import Trainer

SMALL = {"codebook_size": 64, "dim": 8, "patch_size": 2, "head_dim": 8}


def redrawn(**params) -> torch.nn.Module:
    """A bridge quantizer whose every weight is redrawn (its init projects to zero)."""
    quantizer = create_quantizer("vqbridge", **{**SMALL, **params})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in quantizer.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return quantizer


def test_codes_are_the_bridge_of_the_base_codebook_laid_out_as_an_image() -> None:
    """Code k is pixel (k // side, k % side) of the bridge's output image; tokens go to the
    nearest projected code (float64 brute force), and their z_q is that code."""
    quantizer = redrawn()
    side = 8
    with torch.no_grad():
        image = quantizer.embedding.weight.t().reshape(1, 8, side, side)
        out_image = quantizer.qbridge(image)[0]  # (8, side, side)
        codes = quantizer.codebook()
    for k in (0, 5, 8, 63):
        torch.testing.assert_close(codes[k], out_image[:, k // side, k % side])
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    out = quantizer.quantize_tokens(z)
    assert_nearest(z, codes, out.indices)
    torch.testing.assert_close(out.z_q, codes[out.indices])


def test_the_patch_grid_reaches_across_codes() -> None:
    """Changing one base code moves codes outside its patch (attention mixes patches)."""
    quantizer = redrawn()
    with torch.no_grad():
        before = quantizer.codebook().clone()
        quantizer.embedding.weight[0] += 1.0
        after = quantizer.codebook()
    moved = (after - before).abs().amax(1) > 1e-6
    assert moved[0] and moved[63], "code 63 is in the last patch, code 0 in the first"


def test_every_parameter_gets_a_gradient_and_a_frozen_base_codebook_none() -> None:
    for train_base in (True, False):
        quantizer = redrawn(train_base_codebook=train_base).train()
        out = quantizer(torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(2)))
        (out.loss + out.z_q.sum()).backward()
        for name, param in quantizer.named_parameters():
            if name == "embedding.weight" and not train_base:
                assert not param.requires_grad and param.grad is None
            else:
                assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_inference_caches_the_codebook_until_the_weights_change() -> None:
    quantizer = redrawn().eval()
    with torch.no_grad():
        first = quantizer.codebook()
        assert quantizer.codebook() is first, "the cached projection"
        torch.testing.assert_close(first, quantizer.project())
        quantizer.qbridge.final_layer.linear.bias.add_(0.5)  # as an optimiser step does
        second = quantizer.codebook()
        torch.testing.assert_close(second, first + 0.5)
        state = {k: v.clone() for k, v in redrawn().state_dict().items()}
        state["embedding.weight"] += 1.0
        quantizer.load_state_dict(state)
        torch.testing.assert_close(quantizer.codebook(), quantizer.project())
        assert not torch.allclose(quantizer.codebook(), second)
    assert quantizer.codebook().requires_grad, "with gradients on: computed, not cached"
    assert "_cached" not in "".join(quantizer.state_dict()), "the cache is not saved"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"codebook_size": 60}, "codebook_size=60 is not a square"),
        ({"codebook_size": 64, "patch_size": 3}, "side 8 is not a multiple of patch_size=3"),
        ({"codebook_size": 36}, "side 6 is not a multiple of patch_size=4"),
    ],
)
def test_sizes_the_bridge_cannot_take_fail_in_one_line(params: dict, message: str) -> None:
    with pytest.raises(VQBenchError) as err:
        create_quantizer("vqbridge", dim=8, **params)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_release_scripts_patch_size_by_codebook_size() -> None:
    """FVQ-16384.sh uses QBridge-L/4, FVQ-65536.sh and FVQ-262144.sh QBridge-L/8."""
    sizes = {16_384: 4, 65_536: 8, 262_144: 8, 64: 4}
    for size, patch in sizes.items():
        assert create_quantizer("vqbridge", codebook_size=size, dim=8).params.patch == patch


def test_hold_linear_by_hand() -> None:
    """Warmup 2 of 12 steps from 0.005, hold while t = (step - 2) / 9 < 0.3, then linear to
    0.01 at the last step (step 11)."""
    factor = schedule_factor(
        ScheduleConfig(kind="hold_linear", warmup_steps=2, min_lr_ratio=0.01), 12
    )
    expected = [0.005, 0.5025, 1.0, 1.0, 1.0]  # t = 0, 1/9, 2/9
    expected += [0.01 + 0.99 * (1 - t / 9) / 0.7 for t in range(3, 10)]
    assert [factor(s) for s in range(12)] == pytest.approx(expected, rel=1e-12)
    assert factor(11) == pytest.approx(0.01)


def test_annealed_vqbridge_resumed_mid_schedule_continues_identically() -> None:
    """A trainer saved after 4 of 10 `hold_linear` steps, loaded into a fresh one, gives the same
    learning rates and the same weights (the base codebook and the bridge included)."""
    schedule = {"kind": "hold_linear", "warmup_steps": 2, "min_lr_ratio": 0.01}
    config = parse_run_config(small_config("vqbridge", optim={"schedule": schedule}), "test")
    world = distributed.setup("cpu")
    x = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1]
    a = Trainer.build(config, world, total_steps=10)
    factor = schedule_factor(ScheduleConfig(**schedule), 10)
    for step in range(4):
        assert a.state.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * factor(step))
        a.train_step(x)
    buffer = io.BytesIO()
    torch.save(a.state.state_dict(), buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    b = Trainer.build(config, world, total_steps=10)
    b.state.load_state_dict(a.state.weights(), saved)
    for step in range(4, 10):
        assert b.state.opt_g.param_groups[0]["lr"] == a.state.opt_g.param_groups[0]["lr"]
        assert a.state.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * factor(step))
        a.train_step(x)
        b.train_step(x)
    assert a.state.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.01)
    for key, value in a.state.model.state_dict().items():
        assert torch.equal(value, b.state.model.state_dict()[key]), key
