"""`residual` against RQ-VAE's `RQBottleneck` (fixtures: tools/reference_fixtures/residual.py).

The residual composite's defaults are RQ-VAE's: EMA codebooks, one straight-through estimator
around the stack, the per-depth commitment averaged (`||x - sg(sum_{j<=i} q_j)||^2` is stage
i's `||r_i - sg(q_i)||^2`) and weighted 0.25, one codebook shared by the depths, and the
restart of codes whose moving-average count falls below 1. vector-quantize-pytorch's `ResidualVQ` is
compared in tests/quantizers/test_composite.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer


def eval_run(fixture, **override):
    s = fixture.settings
    rq = create_quantizer(
        "residual",
        dim=s["dim"],
        stages=s["depth"],
        quantizer_params={"codebook_size": s["codebook_size"]},
        **{"shared": False, **override},  # the fixture's codebooks are one per depth
    ).eval()
    with torch.no_grad():
        for q, codes in zip(rq.quantizers, fixture["codebooks"]):
            q.embedding.copy_(codes)
    x = fixture["x"].reshape(-1, s["dim"]).clone().requires_grad_()
    out = rq.quantize_tokens(x)
    upstream = fixture["upstream"].reshape(-1, s["dim"])
    torch.autograd.backward([out.z_q, out.loss], [upstream, torch.ones(())])
    return rq, x, out


def test_residual_reproduces_rq_vae():
    fixture = load_fixture("residual_eval")
    assert fixture.meta["repository"] == "kakaobrain/rq-vae-transformer"
    rq, x, out = eval_run(fixture)
    assert all(q.name == "ema" for q in rq.quantizers)
    assert rq.quantizers[0].params.decay == fixture.settings["decay"]
    assert torch.equal(out.indices, fixture["indices"])
    assert_close(out.z_q, fixture["z_q"].reshape(-1, 4), "z_q", rtol=1e-6, atol=1e-6)
    assert_close(out.stats["commitment"], fixture["commitment"], "commitment", rtol=1e-5, atol=0)
    assert_close(out.loss, fixture["loss"], "loss", rtol=1e-5, atol=0)
    assert_close(x.grad, fixture["grad_x"].reshape(-1, 4), "grad x", rtol=1e-5, atol=1e-7)


def test_the_old_summed_losses_fail():
    fixture = load_fixture("residual_eval")
    _, x, out = eval_run(fixture, stage_loss="sum", gradient="sum")
    with pytest.raises(AssertionError):
        assert_close(out.loss, fixture["loss"], "loss", rtol=1e-5, atol=0)
    with pytest.raises(AssertionError):
        assert_close(x.grad, fixture["grad_x"].reshape(-1, 4), "grad x", rtol=1e-5, atol=1e-7)


def test_one_ema_update_matches_rq_vaes_with_counts_from_zero():
    """RQ-VAE's counts start at 0 (`initial_cluster_size: 0` here); it updates inside the
    forward, we after the optimiser step: compare after one step."""
    fixture = load_fixture("residual_ema")
    s = fixture.settings
    q = create_quantizer(
        "ema", codebook_size=s["codebook_size"], dim=s["dim"], initial_cluster_size=0.0
    ).train()
    with torch.no_grad():
        q.embedding.copy_(fixture["before"])
        q.embed_sum.copy_(fixture["before"])
    out = q.quantize_tokens(fixture["x"].reshape(-1, s["dim"]))
    assert torch.equal(out.indices, fixture["indices"])
    q.after_optimizer_step()
    assert_close(q.cluster_size, fixture["cluster_size"], "cluster size", rtol=1e-6, atol=1e-7)
    assert_close(q.embedding, fixture["after"], "codebook", rtol=1e-5, atol=1e-6)


def restart_run(**quantizer_params):
    """vqbench's default residual (one depth) from the fixture's state, one training step."""
    fixture = load_fixture("residual_restart")
    s = fixture.settings
    rq = create_quantizer(
        "residual",
        dim=s["dim"],
        stages=1,
        quantizer_params={"codebook_size": s["codebook_size"], **quantizer_params},
    ).train()
    book = rq.quantizers[0]
    with torch.no_grad():
        book.embedding.copy_(fixture["before"])
        book.cluster_size.copy_(fixture["counts_before"])
        book.embed_sum.copy_(fixture["embed_before"])
    out = rq.quantize_tokens(fixture["x"].reshape(-1, s["dim"]))
    rq.after_optimizer_step()
    return fixture, book, out


def is_a_token(rows: torch.Tensor, tokens: torch.Tensor, rtol: float) -> torch.Tensor:
    """Whether each row equals (within `rtol`) one of the tokens."""
    distance = (rows[:, None, :] - tokens[None, :, :]).norm(dim=2).min(dim=1).values
    return distance <= rtol * rows.norm(dim=1)


def test_the_default_recipe_restarts_unused_codes_as_rq_vae():
    """The same codes restart (count below 1 after the decay), their counts become 1 and their
    rows tokens of the batch (RQ-VAE draws with its own random permutation, so which token
    differs); the other codes match RQ-VAE's update (RQ-VAE smooths the counts after the
    restart, vqbench before it: a relative difference of about K eps / N, hence 1e-4)."""
    fixture, book, out = restart_run()
    assert book.params.dead_code_threshold == 1.0 and book.params.initial_cluster_size == 0.0
    assert torch.equal(out.indices.reshape(-1), fixture["indices"])
    assert_close(book.cluster_size, fixture["cluster_size"], "counts", rtol=1e-6, atol=1e-7)
    tokens = fixture["x"].reshape(-1, fixture.settings["dim"])
    restarted = is_a_token(fixture["after"], tokens, 1e-4)
    assert 0 < int(restarted.sum()) < fixture.settings["codebook_size"], "a mixed case"
    assert torch.equal(is_a_token(book.embedding, tokens, 1e-6), restarted)
    kept = ~restarted
    assert_close(book.embedding[kept], fixture["after"][kept], "kept codes", rtol=1e-4, atol=1e-6)


def test_without_the_restart_the_update_departs_from_rq_vae():
    fixture, book, _ = restart_run(dead_code_threshold=0.0)
    with pytest.raises(AssertionError):
        assert_close(book.cluster_size, fixture["cluster_size"], "counts", rtol=1e-6, atol=1e-7)
