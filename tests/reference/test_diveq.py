"""The `diveq` estimator with `vanilla` against the DiVeQ authors' `DIVEQ` module (fixtures:
tools/reference_fixtures/diveq.py): the gradient with the same noise draw, the initial
codebook's distribution, and the code replacement."""

from __future__ import annotations

import math

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer


def replay(monkeypatch, noise: torch.Tensor, std: float) -> None:
    """Make `torch.randn_like` (the estimator's only draw) return the reference's draw / std."""
    monkeypatch.setattr(torch, "randn_like", lambda x: noise / std)


def diveq_vanilla(fixture, **params):
    s = fixture.settings
    return create_quantizer(
        "vanilla", codebook_size=s["codebook_size"], dim=s["dim"], estimator="diveq", **params
    ).train()


def run_forward(q, fixture):
    with torch.no_grad():
        q.embedding.copy_(fixture["codebook"])
    z = fixture["z"].clone().requires_grad_()
    out = q.quantize_tokens(z)
    ((out.z_q * fixture["upstream"]).sum() + out.loss).backward()
    return z, out


def test_gradient_equals_the_official_code_with_its_noise(monkeypatch):
    fixture = load_fixture("diveq_forward")
    assert fixture.meta["repository"] == "AaltoML/DiVeQ"
    q = diveq_vanilla(fixture)
    std = math.sqrt(q.estimator.params.noise_variance)
    assert std == pytest.approx(fixture.settings["noise_var"])  # Normal's scale: a std
    replay(monkeypatch, fixture["noise"], std)
    z, out = run_forward(q, fixture)
    assert torch.equal(out.indices, fixture["indices"])
    assert float(out.loss.detach()) == 0.0  # no auxiliary loss
    codes = fixture["codebook"][fixture["indices"]]
    assert torch.equal(out.z_q.detach(), codes)  # our value is the code ...
    # ... theirs is off the code by the noise (std 1e-3 per channel, projected)
    assert_close(out.z_q, fixture["z_q"], "z_q", rtol=0, atol=1e-2)
    assert (out.z_q.detach() - fixture["z_q"]).abs().max() > 1e-5
    assert_close(z.grad, fixture["grad_z"], "grad z", rtol=1e-5, atol=1e-6)
    assert_close(q.embedding.grad, fixture["grad_codebook"], "grad codebook", rtol=1e-5, atol=1e-6)


def test_a_departure_from_the_official_noise_fails(monkeypatch):
    """The old noise (variance 5e-3, std 0.071) gives another gradient."""
    fixture = load_fixture("diveq_forward")
    q = diveq_vanilla(fixture, estimator_params={"noise_variance": 5e-3})
    replay(monkeypatch, fixture["noise"], 1e-3)  # same unit draw, scaled by the old std
    z, _ = run_forward(q, fixture)
    with pytest.raises(AssertionError):
        assert_close(z.grad, fixture["grad_z"], "grad z", rtol=1e-5, atol=1e-6)


def test_initial_codebook_has_the_official_distribution():
    """U(0, 1/K): same support and moments over 6 seeds (different draws, nothing copied)."""
    reference = load_fixture("diveq_init")["codebooks"]
    ours = []
    for seed in range(100, 106):
        torch.manual_seed(seed)
        ours.append(create_quantizer("vanilla", codebook_size=32, dim=4, estimator="diveq"))
    ours = torch.stack([q.embedding.detach() for q in ours])
    for stat in (torch.mean, torch.std, torch.amin, torch.amax):
        assert_close(stat(ours), stat(reference), stat.__name__, rtol=0.05, atol=2e-4)
    taming = create_quantizer("vanilla", codebook_size=32, dim=4).embedding.detach()
    with pytest.raises(AssertionError):  # the quantizer's own init is another distribution
        assert_close(taming.mean(), reference.mean(), "mean", rtol=0.05, atol=2e-4)


def test_code_replacement_replaces_the_official_codes():
    fixture = load_fixture("diveq_replacement")
    s = fixture.settings
    q = create_quantizer(
        "vanilla",
        codebook_size=6,
        dim=2,
        estimator="diveq",
        estimator_params={
            "replacement_interval": s["replacement_iters"],
            "discard_threshold": s["threshold"],
            "perturb_eps": 0.0,
        },
    ).train()
    with torch.no_grad():
        q.embedding.copy_(fixture["before"])
    for chosen in fixture["chosen"].split(fixture["steps"].tolist()):
        q(fixture["before"][chosen].t().reshape(1, 2, 1, -1))
        q.after_optimizer_step()
    after, expected = q.embedding.detach(), fixture["after"]
    replaced = (expected != fixture["before"]).any(1) | (after != fixture["before"]).any(1)
    assert torch.equal((after != fixture["before"]).any(1), (expected != fixture["before"]).any(1))
    assert torch.equal(after[~replaced], expected[~replaced])
    used = fixture["before"][:2]  # the codes that survive; copies are drawn among them
    for row in after[replaced]:
        assert (row == used).all(1).any()
    assert int(q.replacement.usage.sum()) == 0
