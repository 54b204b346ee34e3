"""`sf_diveq` against the DiVeQ authors' `SFDIVEQ` (fixtures: tools/reference_fixtures/
sf_diveq.py, with the commit): the gradient with the same dither and noise draws, the initial
codebook's distribution, the skip-and-average initialisation, and the curve inference."""

from __future__ import annotations

import math

import pytest
import torch
from vqbench_quantizers.sf_diveq import SFDiVeQParams, project_on_segment

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer


def replay(q, fixture, noise_std: float | None = None) -> None:
    """Make the quantizer draw the reference's dither and noises (rescaled to `noise_std`)."""
    std = math.sqrt(q.params.noise_variance)
    scale = 1.0 if noise_std is None else noise_std / std
    noises = iter([fixture["noise1"] * scale, fixture["noise2"] * scale])
    q.draw_dither = lambda segments, like: fixture["dither"]
    q.draw_noise = lambda like: next(noises)


def run_forward(q, fixture):
    with torch.no_grad():
        q.embedding.copy_(fixture["codebook"])
    z = fixture["z"].clone().requires_grad_()
    out = q.quantize_tokens(z)
    ((out.z_q * fixture["upstream"]).sum() + out.loss).backward()
    return z, out


def forward_quantizer(fixture, **params):
    s = fixture.settings
    return create_quantizer(
        "sf_diveq",
        codebook_size=s["codebook_size"],
        dim=s["dim"],
        skip_steps=0,
        average_steps=0,
        **params,
    ).train()


def test_defaults_are_the_reference_defaults():
    s = load_fixture("sf_diveq_forward").settings
    ours = SFDiVeQParams()
    assert math.sqrt(ours.noise_variance) == pytest.approx(s["noise_var"])  # Normal's scale
    assert (ours.skip_steps, ours.average_steps) == (s["skip_iters"], s["avg_iters"])
    assert (ours.codebook_init == "uniform") == s["uniform_init"]


def test_gradient_equals_the_official_code_with_its_draws():
    fixture = load_fixture("sf_diveq_forward")
    assert fixture.meta["repository"] == "AaltoML/DiVeQ"
    q = forward_quantizer(fixture)
    replay(q, fixture)
    z, out = run_forward(q, fixture)
    assert torch.equal(out.indices, fixture["indices"])
    assert len(out.indices.unique()) > 3  # several segments are chosen
    assert float(out.loss.detach()) == 0.0  # no auxiliary loss
    c, lam, i = fixture["codebook"], fixture["dither"], fixture["indices"]
    point = (1 - lam[i]) * c[i] + lam[i] * c[i + 1]
    assert torch.equal(out.z_q.detach(), point)  # our value is the segment's dithered point
    # ... theirs is off it by the noise (std 1e-3 per channel, projected)
    assert_close(out.z_q, fixture["z_q"], "z_q", rtol=0, atol=1e-2)
    assert_close(z.grad, fixture["grad_z"], "grad z", rtol=1e-5, atol=1e-6)
    assert_close(q.embedding.grad, fixture["grad_codebook"], "grad codebook", rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("departure", ["noise", "one_end"])
def test_a_departure_from_the_official_gradient_fails(departure, monkeypatch):
    """A larger noise (std 0.07), or DiVeQ on the first codeword only, gives another gradient."""
    fixture = load_fixture("sf_diveq_forward")
    q = forward_quantizer(fixture)
    replay(q, fixture, noise_std=0.07 if departure == "noise" else None)
    if departure == "one_end":
        import vqbench_quantizers.sf_diveq as module

        real = module.directional_error
        calls = iter([real, lambda code, z, noise, eps: (code - z).detach()])
        monkeypatch.setattr(module, "directional_error", lambda *a: next(calls)(*a))
    z, _ = run_forward(q, fixture)
    with pytest.raises(AssertionError):
        assert_close(z.grad, fixture["grad_z"], "grad z", rtol=1e-5, atol=1e-6)
        assert_close(q.embedding.grad, fixture["grad_codebook"], "grad codebook")


def test_initial_codebook_has_the_official_distribution():
    """U(0, 1/K): same support and moments over 6 seeds (different draws, nothing copied)."""
    reference = load_fixture("sf_diveq_init")["codebooks"]
    ours = []
    for seed in range(100, 106):
        torch.manual_seed(seed)
        ours.append(create_quantizer("sf_diveq", codebook_size=32, dim=4).embedding.detach())
    ours = torch.stack(ours)
    for stat in (torch.mean, torch.std, torch.amin, torch.amax):
        assert_close(stat(ours), stat(reference), stat.__name__, rtol=0.05, atol=2e-4)
    normal = create_quantizer("sf_diveq", codebook_size=32, dim=4, codebook_init="normal")
    with pytest.raises(AssertionError):  # the other init is another distribution
        assert_close(normal.embedding.mean(), reference.mean(), "mean", rtol=0.05, atol=2e-4)


def test_skip_and_average_initialisation_follows_the_official_schedule():
    """Identity for the first skip - 1 steps, the codebook set from the last pooled latents."""
    fixture = load_fixture("sf_diveq_skip")
    s = fixture.settings
    q = create_quantizer(
        "sf_diveq",
        codebook_size=s["codebook_size"],
        dim=s["dim"],
        skip_steps=s["case_skip_iters"],
        average_steps=s["case_avg_iters"],
    ).train()
    for t, batch in enumerate(fixture["batches"], start=1):
        out = q.quantize_tokens(batch)
        q.after_optimizer_step()
        assert_close(q.embedding, fixture["codebooks"][t - 1], f"codebook after step {t}")
        if t < s["case_skip_iters"]:
            assert torch.equal(out.z_q, batch) and torch.equal(
                out.indices, fixture["indices"][t - 1]
            )
        else:  # quantized: a point of the chosen segment, as the reference's (up to its noise)
            c, i = q.embedding, out.indices
            on_segment = project_on_segment(out.z_q, c[i], c[i + 1])
            assert_close(out.z_q, on_segment, "on the segment", rtol=0, atol=1e-5)
            assert not torch.allclose(fixture["outputs"][t - 1], batch)
    initialised = fixture["codebooks"][s["case_skip_iters"] - 2]
    assert not torch.equal(initialised, fixture["codebooks"][0])  # the init did happen


def test_curve_inference_equals_the_official_inference():
    fixture = load_fixture("sf_diveq_inference")
    q = create_quantizer("sf_diveq", codebook_size=8, dim=3, inference="curve").eval()
    with torch.no_grad():
        q.embedding.copy_(fixture["codebook"])
    out = q.quantize_tokens(fixture["z"])
    assert_close(out.z_q, fixture["z_q"], "z_q", rtol=1e-5, atol=1e-6)
    nearest = fixture["indices"].clamp(1, 6)  # the reference's index: the nearest codeword
    assert ((out.indices == nearest) | (out.indices == nearest - 1)).all()
    midpoint = create_quantizer("sf_diveq", codebook_size=8, dim=3).eval()
    midpoint.load_state_dict(q.state_dict())
    with pytest.raises(AssertionError):  # the tokenizer's default decodes midpoints instead
        assert_close(midpoint.quantize_tokens(fixture["z"]).z_q, fixture["z_q"], "z_q")
