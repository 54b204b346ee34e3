"""`transvq` against the official TransVQ (CAIR-LAB-WFUSM/NS-VQ-TransVQ,
`NS_Trans_VQ_ImageNet/ldm/modules/transVQ.py`: `SimVQ` + `CodebookTransformer`, as
`configs/vqvae/vq-f4_transvq.yaml` builds it).

Fixtures: `tools/reference_fixtures/transvq.py`. The frozen codebook and every transformer
weight are copied; indices, `z_q`, the loss and the gradients with respect to the input and
every weight must match, with 2 blocks of 2 heads and learned positions, and with sinusoidal
positions. The initial codebook of the config's transformer is compared by its statistics
over seeds (no weight copied); the defaults are the config's. `transvq_train` trains the
module alone for 12 Adam steps with the reference's optimiser (Adam over
`quantize.parameters()`, betas (0.5, 0.9)): ours, started from the same weights and trained
with the engine's optimiser (`vqbench.build.build_optimizers`), must pick the same codes at
every step, reach the same weights and leave the frozen codebook where it was.
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, init_statistics, load_fixture, surrogate_backward
from vqbench.build import build_optimizers
from vqbench.config import parse_run_config
from vqbench.quantizer import create_quantizer, get_quantizer_class

TOL = {"rtol": 1e-5, "atol": 1e-6}


def ours(transform: dict) -> dict:
    """The reference's `CodebookTransformer` arguments as `transvq` parameters."""
    return {
        "depth": transform["depth"],
        "model_dim": transform["model_dim"],
        "heads": transform["n_heads"],
        "mlp_ratio": transform["mlp_ratio"],
        "dropout": transform["dropout"],
        "positions": "learned" if transform["use_learned_pos"] else "sinusoidal",
    }


@pytest.mark.parametrize("name", ["transvq_deep", "transvq_sinusoidal"])
def test_transvq_reproduces_official_transvq(name):
    fixture = load_fixture(name)
    s = fixture.settings
    params = ours(s["case_transform"])
    quantizer = create_quantizer(
        "transvq", codebook_size=s["codebook_size"], dim=s["dim"], **params
    ).train()
    weights = {k[2:]: v for k, v in fixture.tensors.items() if k.startswith("w.")}
    quantizer.transform.load_state_dict(weights, strict=True)  # every weight, no other
    with torch.no_grad():
        quantizer.core.copy_(fixture["frozen"])
    z = fixture["z"].clone().requires_grad_(True)
    out = quantizer(z)
    surrogate_backward(out.z_q, out.loss, fixture["upstream"])
    assert torch.equal(out.indices.flatten(), fixture["indices"]), "indices"
    assert_close(out.z_q, fixture["z_q"], "z_q", **TOL)
    assert_close(out.loss, fixture["loss"], "loss", **TOL)
    assert_close(z.grad, fixture["grad_z"], "gradient w.r.t. the input", **TOL)
    for param_name, param in quantizer.transform.named_parameters():
        assert_close(param.grad, fixture[f"g.{param_name}"], f"gradient w.r.t. {param_name}", **TOL)


def engine_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """The optimiser vqbench's trainer builds for `model` (no discriminator)."""
    config = parse_run_config(
        {"name": "t", "quantizer": {"name": "transvq"}, "optim": {"lr": lr}}, "test"
    )
    return build_optimizers(config, model, None)[0]


def test_transvq_trains_as_official_transvq():
    fixture = load_fixture("transvq_train")
    s = fixture.settings
    params = ours(s["case_transform"])
    quantizer = create_quantizer(
        "transvq", codebook_size=s["codebook_size"], dim=s["dim"], **params
    ).train()
    weights = {k[2:]: v for k, v in fixture.tensors.items() if k.startswith("w.")}
    quantizer.transform.load_state_dict(weights, strict=True)
    with torch.no_grad():
        quantizer.core.copy_(fixture["frozen"])
    optimizer = engine_optimizer(quantizer, s["lr"])
    assert list(optimizer.defaults["betas"]) == s["betas"], "Adam's betas"
    for step in range(s["steps"]):
        optimizer.zero_grad()
        out = quantizer(fixture["z"][step].clone().requires_grad_(True))
        surrogate_backward(out.z_q, out.loss, fixture["upstream"][step])
        optimizer.step()
        assert torch.equal(out.indices.flatten(), fixture["indices"][step]), f"indices, {step}"
        assert_close(out.loss, fixture["loss"][step], f"loss at step {step}", **TOL)
    assert torch.equal(quantizer.core, fixture["frozen_after"]), "the frozen codebook moved"
    for name, param in quantizer.transform.named_parameters():
        assert_close(param, fixture[f"f.{name}"], f"trained {name}", rtol=1e-4, atol=1e-5)


def test_transvq_initial_codebook_statistics():
    """Offset, spread, norm and largest entry of the initial `T(C^)` with the config's
    transformer (width 256, 1 block, 1 head, learned positions), averaged over 4 seeds."""
    fixture = load_fixture("transvq_init")
    s = fixture.settings
    stats, frozen = [], []
    for seed in s["init_seeds"]:
        torch.manual_seed(seed)
        quantizer = create_quantizer(
            "transvq", codebook_size=s["init_codebook_size"], dim=s["init_dim"], core_seed=seed
        )
        with torch.no_grad():
            stats.append(init_statistics(quantizer.codebook()))
        frozen.append(init_statistics(quantizer.core))
    assert_close(torch.stack(stats).mean(0), fixture["init"].mean(0), "init", rtol=0.1, atol=0)
    # The live codes hardly see the frozen ones at init (the learned positions dominate):
    # their N(0, 1 / frozen_dim) entries are compared on their own.
    ref = fixture["frozen_init"].mean(0)
    assert_close(torch.stack(frozen).mean(0)[1:], ref[1:], "frozen init", rtol=0.1, atol=0)


def test_transvq_defaults_are_the_official_recipe():
    s = load_fixture("transvq_init").settings
    p = create_quantizer("transvq", codebook_size=16, dim=4).params
    expected = ours(s["transform"])
    assert {k: getattr(p, k) for k in expected} == expected
    assert s["rotation_trick"] is False and p.estimator == "ste"
    # SimVQ's loss: commitment_weight * (codebook term + input_to_quantize weight * commitment)
    weight = s["commitment_weight"] * s["codebook_weight"]
    beta = weight * s["input_to_quantize_commit_loss_weight"]
    assert (p.codebook_weight, p.beta) == (weight, beta)
    assert get_quantizer_class("transvq").Params().codebook_size == s["n_embed"]
