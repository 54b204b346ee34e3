"""`nsvq` against the official NS-VQ (CAIR-LAB-WFUSM/NS-VQ-TransVQ,
`NS_Trans_VQ_CelebA/models/vq_vae.py::VectorQuantizer` with `mem_flag=True`, `q_flag` and the
weights of its config).

Fixtures: `tools/reference_fixtures/nsvq.py`. The codebook is copied; indices, `z_q`, the loss,
its codebook (kernel) term and the gradients with respect to the input and the codebook must
match at epoch 0 (bandwidth 1), at epoch 5 with 256 codes (kernel weights clamped at 1) and in
eval (the plain VQ loss). The bandwidth schedule is the reference's `get_decay_p` as its
`forward` calls it, epoch by epoch; the initial codebook is compared by its statistics.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import vqbench_quantizers.nsvq as nsvq

from tests.reference.fixtures import assert_close, init_statistics, load_fixture, surrogate_backward
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}
CASES = ["nsvq_epoch0", "nsvq_epoch5_clamped", "nsvq_eval"]


def run(fixture, **params):
    s = fixture.settings
    quantizer = create_quantizer(
        "nsvq", codebook_size=s["codebook_size"], dim=s["dim"], decay_every=1, **params
    )
    quantizer.train(s["status"] == "Train")
    with torch.no_grad():
        quantizer.embedding.copy_(fixture["codes"])
        quantizer.steps.fill_(s["epoch"])  # one reference epoch per optimiser step here
    z = fixture["z"].clone().requires_grad_(True)
    out = quantizer(z)
    surrogate_backward(out.z_q, out.loss, fixture["upstream"])
    return quantizer, z, out


@pytest.mark.parametrize("block", [nsvq.KERNEL_BLOCK, 7 * 16 + 3])
@pytest.mark.parametrize("name", CASES)
def test_nsvq_reproduces_official_ns_vq(name, block, monkeypatch):
    """Also with kernel blocks of a few tokens (ragged last block): the same numbers."""
    monkeypatch.setattr(nsvq, "KERNEL_BLOCK", block)
    fixture = load_fixture(name)
    quantizer, z, out = run(fixture)
    assert torch.equal(out.indices.flatten(), fixture["indices"]), "indices"
    assert_close(out.z_q, fixture["z_q"], "z_q", **TOL)
    assert_close(out.loss, fixture["loss"], "loss", **TOL)
    assert_close(out.stats["codebook"], fixture["codebook_term"], "codebook (kernel) term", **TOL)
    assert_close(z.grad, fixture["grad_z"], "gradient w.r.t. the input", **TOL)
    assert_close(quantizer.embedding.grad, fixture["grad_codes"], "gradient w.r.t. codes", **TOL)


@pytest.mark.parametrize("name", CASES[:2])
def test_the_kernel_term_is_what_the_fixture_sees(name):
    """The training fixtures are not the plain VQ loss (else the comparison above could not
    tell the kernel from its absence): the unchosen codes add to the codebook term."""
    fixture = load_fixture(name)
    tokens = fixture["z"].permute(0, 2, 3, 1).reshape(-1, fixture.settings["dim"])
    plain = F.mse_loss(fixture["codes"][fixture["indices"]], tokens)
    assert fixture["codebook_term"] > plain * 1.05


def test_nsvq_bandwidth_schedule_is_the_reference_epoch_by_epoch():
    fixture = load_fixture("nsvq_schedule")
    p = create_quantizer("nsvq", codebook_size=4, dim=2).params
    every = p.decay_every
    for epoch, tau in zip(fixture.settings["epochs"], fixture["bandwidth"].tolist(), strict=True):
        for step in (epoch * every, epoch * every + every - 1):  # constant within an epoch
            assert nsvq.bandwidth_at(step, p) == pytest.approx(tau, rel=1e-12), (epoch, step)


def test_nsvq_initial_codebook_statistics():
    fixture = load_fixture("nsvq_schedule")
    s = fixture.settings
    ours = []
    for seed in s["init_seeds"]:
        torch.manual_seed(seed)
        quantizer = create_quantizer(
            "nsvq", codebook_size=s["init_codebook_size"], dim=s["init_dim"]
        )
        ours.append(init_statistics(quantizer.embedding))
    assert_close(torch.stack(ours).mean(0), fixture["init"].mean(0), "init stats", rtol=0.1, atol=0)


def test_nsvq_defaults_are_the_official_recipe():
    s = load_fixture("nsvq_epoch0").settings
    p = create_quantizer("nsvq", codebook_size=16, dim=4).params
    assert (p.beta, p.codebook_weight, p.kernel_weight) == (
        s["beta"],
        s["alpha"],
        s["embedding_loss_weight"],
    )
    assert (p.code_gradient == "scaled") is s["q_flag"] and s["mem_flag"]
