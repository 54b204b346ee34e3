"""`residual` with `implicit_codebook: mlp`: the blocked search equals a brute force over every
predicted code, decoding, gradients, the default left unchanged, bad input, and training."""

from __future__ import annotations

import pytest
import torch
import vqbench_quantizers.composite as composite

from tests.engine_helpers import small_config
from vqbench import VQBenchError, create_quantizer


def implicit(style: str = "library", **params):
    return create_quantizer(
        "residual",
        dim=8,
        stages=3,
        implicit_codebook="mlp",
        mlp_style=style,
        quantizer_params={"codebook_size": 32},
        **params,
    )


@pytest.mark.parametrize("style", ["library", "qinco"])
def test_blocked_search_is_the_brute_force_nearest_predicted_code(style, monkeypatch):
    torch.manual_seed(0)
    q = implicit(style).eval()
    z = torch.randn(50, 8)
    monkeypatch.setattr(composite, "IMPLICIT_BLOCK_ELEMENTS", 3 * 32 * 8)  # blocks of 3 tokens
    out = q.quantize_tokens(z)
    residual, total = z, torch.zeros_like(z)
    for i, stage in enumerate(q.quantizers):
        codes = stage.codebook().unsqueeze(0).expand(50, -1, -1)
        if i:
            codes = q.mlps[i - 1](codes, total.unsqueeze(1).expand_as(codes))
        chosen = torch.cdist(residual.double().unsqueeze(1), codes.double()).squeeze(1).argmin(1)
        assert torch.equal(out.indices[:, i], chosen), f"stage {i}"
        picked = codes[torch.arange(50), chosen]
        residual, total = residual - picked, total + picked
    torch.testing.assert_close(out.z_q, total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q.decode_tokens(out.indices), out.z_q, rtol=0, atol=0)


def test_every_parameter_learns_and_the_default_residual_has_no_network():
    q = implicit().train()
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = q(z)
    (out.z_q.square().sum() + out.loss).backward()
    assert z.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.parameters())
    plain = create_quantizer("residual", dim=8)
    assert len(plain.mlps) == 0 and not any(k.startswith("mlps") for k in plain.state_dict())
    assert q.independent_groups() == 32 + 2  # the free first stage, one network per stage


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"shared": True}, "use shared: false"),
        ({"quantizer": "fsq", "quantizer_params": {"levels": [4, 4]}}, "explicit codebook"),
        ({"quantizer": "ema"}, "no trained codebook parameter"),
        ({"mlp_style": "other"}, "mlp_style"),
    ],
)
def test_bad_parameters_are_one_line(params, message):
    kwargs = {"quantizer_params": {"codebook_size": 8}, **params}
    with pytest.raises(VQBenchError, match=message) as err:
        create_quantizer("residual", dim=8, implicit_codebook="mlp", **kwargs)
    assert "\n" not in str(err.value)


def test_trains_in_the_engine(tmp_path):
    from vqbench import distributed
    from vqbench.config import parse_run_config
    from vqbench.train import Trainer

    raw = small_config("residual")
    raw["quantizer"]["params"] = {
        "dim": 16,
        "stages": 2,
        "implicit_codebook": "mlp",
        "quantizer_params": {"codebook_size": 8},
    }
    trainer = Trainer.build(parse_run_config(raw, "test"), distributed.setup("cpu"), 2)
    x = [torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1]
    before = {k: v.clone() for k, v in trainer.state.model.quantizer.state_dict().items()}
    for _ in range(2):
        trainer.train_step(x)
    after = trainer.state.model.quantizer.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
