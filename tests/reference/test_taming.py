"""`vanilla` and `ema` against taming-transformers' `VectorQuantizer2` and `EMAVectorQuantizer`.

Fixtures: `tools/reference_fixtures/taming.py`. Each test loads the reference's weights into
vqbench's quantizer, runs the same input and the same decoder gradient, and requires the same
indices, `z_q`, loss and gradients (input and codebook); the EMA test also the codebook,
counts and sums after the update. Initial codebooks are compared by their statistics.
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, init_statistics, load_fixture, surrogate_backward
from vqbench.quantizer import create_quantizer

METHODS = ("vanilla", "ema", "ste")  # ste: taming's `z + (z_q - z).detach()`
TOL = {"rtol": 1e-5, "atol": 1e-6}


def run(quantizer, fixture) -> tuple[torch.Tensor, object]:
    z = fixture["z"].clone().requires_grad_(True)
    out = quantizer.train()(z)
    surrogate_backward(out.z_q, out.loss, fixture["upstream"])
    return z, out


def check_forward(z, out, fixture) -> None:
    assert torch.equal(out.indices.flatten(), fixture["indices"]), "indices"
    assert_close(out.z_q, fixture["z_q"], "z_q", **TOL)
    assert_close(out.loss, fixture["loss"], "loss", **TOL)
    assert_close(z.grad, fixture["grad_z"], "gradient w.r.t. the input", **TOL)


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("taming_vanilla", {}),  # legacy=False: vqbench's default recipe
        ("taming_vanilla_legacy", {"codebook_weight": 0.25, "beta": 1.0}),  # VQModel's default
    ],
)
def test_vanilla_reproduces_vector_quantizer2(name: str, weights: dict) -> None:
    fixture = load_fixture(name)
    k, d = fixture["weight"].shape
    quantizer = create_quantizer("vanilla", codebook_size=k, dim=d, **weights)
    with torch.no_grad():
        quantizer.embedding.copy_(fixture["weight"])
    z, out = run(quantizer, fixture)
    check_forward(z, out, fixture)
    assert_close(quantizer.embedding.grad, fixture["grad_weight"], "codebook gradient", **TOL)


def test_ema_reproduces_ema_vector_quantizer() -> None:
    fixture = load_fixture("taming_ema")
    k, d = fixture["weight"].shape
    s = fixture.settings
    # initial_cluster_size 0 is taming's start (vqbench's default 1 is vector-quantize-pytorch's)
    quantizer = create_quantizer(
        "ema", codebook_size=k, dim=d, decay=s["decay"], eps=s["eps"], initial_cluster_size=0
    )
    with torch.no_grad():
        quantizer.embedding.copy_(fixture["weight"])
        quantizer.embed_sum.copy_(fixture["weight"])
    z, out = run(quantizer, fixture)
    check_forward(z, out, fixture)
    quantizer.after_optimizer_step()  # taming updates inside the forward, after the lookup
    assert_close(quantizer.cluster_size, fixture["cluster_size_after"], "EMA counts", **TOL)
    assert_close(quantizer.embed_sum, fixture["embed_avg_after"], "EMA sums", **TOL)
    assert_close(quantizer.embedding, fixture["weight_after"], "codebook after the update", **TOL)


@pytest.mark.parametrize(("method", "name"), [("vanilla", "taming_vanilla"), ("ema", "taming_ema")])
def test_initial_codebook_statistics(method: str, name: str) -> None:
    """Same distribution as the reference's initial codebook (U(-1/K, 1/K); N(0, 1)), seed by
    seed within sampling error: the mean offset, the spread, the mean norm, the largest
    entry."""
    fixture = load_fixture(name)
    s = fixture.settings
    ours = []
    for seed in s["init_seeds"]:
        torch.manual_seed(seed)
        quantizer = create_quantizer(
            method, codebook_size=s["init_codebook_size"], dim=s["init_dim"]
        )
        ours.append(init_statistics(quantizer.codebook()))
    ours, ref = torch.stack(ours), fixture["init"]
    # The spread and norms of 512 codes vary by about 2% between seeds; the mean offset and
    # the largest entry are compared on the scale of the spread.
    assert_close(ours[:, 1:3], ref[:, 1:3], "spread and mean norm", rtol=0.05, atol=0.0)
    scale = ref[:, 1:2]
    assert_close(ours[:, :1] / scale, ref[:, :1] / scale, "mean offset", rtol=0.0, atol=0.05)
    assert_close(ours[:, 3:] / scale, ref[:, 3:] / scale, "largest entry", rtol=0.0, atol=0.35)


def test_defaults_are_taming_recipe() -> None:
    """vanilla: `legacy=False`'s weights (codebook 1, commitment 0.25); ema: decay, eps, beta."""
    vanilla = create_quantizer("vanilla", codebook_size=16, dim=4).params
    assert (vanilla.codebook_weight, vanilla.beta) == (
        1.0,
        load_fixture("taming_vanilla").settings["beta"],
    )
    s = load_fixture("taming_ema").settings
    ema = create_quantizer("ema", codebook_size=16, dim=4).params
    assert (ema.decay, ema.eps, ema.beta) == (s["decay"], s["eps"], s["beta"])
