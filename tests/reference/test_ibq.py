"""IBQ against SEED-Voken's `IndexPropagationQuantize` (fixtures: tools/reference_fixtures/ibq.py).

The reference's `quant_loss` is `mean((z_q - z)^2) + mean((sg(q) - z)^2) + beta mean((q -
sg(z))^2)` with its config's beta 0.25: our `soft_weight` 1, `beta` 1.0 (commitment) and
`codebook_weight` 0.25, the defaults. Its codebook entropy takes `log(p + 1e-5)`; ours is exact
(the difference is within the tolerance here).
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer


def run(fixture, **override):
    s = fixture.settings
    q = create_quantizer(
        "ibq",
        codebook_size=s["codebook_size"],
        dim=s["dim"],
        temperature=s["entropy_temperature"],
        entropy_weight=s["entropy_loss_weight"],
        sample_entropy_weight=s["sample_minimization_weight"],
        diversity_weight=s["batch_maximization_weight"],
        **override,
    ).train()
    with torch.no_grad():
        q.embedding.copy_(fixture["codebook"])
    z = fixture["z"].clone().requires_grad_()
    out = q(z)
    torch.autograd.backward([out.z_q, out.loss], [fixture["upstream"], torch.ones(())])
    return q, z, out


def test_ibq_reproduces_seed_voken():
    fixture = load_fixture("ibq")
    assert fixture.meta["repository"] == "TencentARC/SEED-Voken"
    q, z, out = run(fixture)
    assert (q.params.beta, q.params.codebook_weight) == (1.0, fixture.settings["beta"])
    assert torch.equal(out.indices.flatten(), fixture["indices"])
    assert_close(out.z_q, fixture["z_q"], "z_q", rtol=1e-6, atol=1e-7)
    quant = out.stats["soft"] + out.stats["commitment"] + 0.25 * out.stats["codebook"]
    assert_close(quant, fixture["quant_loss"], "quant_loss", rtol=1e-5, atol=1e-8)
    for term in ("per_sample_entropy", "codebook_entropy"):
        assert_close(out.stats[term], fixture[term], term, rtol=1e-4, atol=1e-5)
    assert_close(out.loss, fixture["loss"], "loss", rtol=1e-4, atol=1e-6)
    assert_close(z.grad, fixture["grad_z"], "grad z", rtol=1e-4, atol=1e-7)
    assert_close(q.embedding.grad, fixture["grad_codebook"], "grad codebook", rtol=1e-4, atol=1e-7)


def test_the_old_swapped_weights_fail():
    fixture = load_fixture("ibq")
    q, z, out = run(fixture, recipe="shared")  # beta 0.25, codebook 1.0: the old defaults
    with pytest.raises(AssertionError):
        assert_close(
            q.embedding.grad, fixture["grad_codebook"], "grad codebook", rtol=1e-4, atol=1e-7
        )


def test_initial_codebook_has_the_references_distribution():
    reference = load_fixture("ibq")["initial_codebooks"]
    ours = []
    for seed in range(50, 54):
        torch.manual_seed(seed)
        ours.append(create_quantizer("ibq", codebook_size=64, dim=8).embedding.detach())
    ours = torch.stack(ours)
    assert_close(ours.mean(), reference.mean(), "mean", rtol=0, atol=0.1)
    assert_close(ours.std(), reference.std(), "std", rtol=0.05, atol=0)
    assert_close(ours.norm(dim=-1).mean(), reference.norm(dim=-1).mean(), "norm", rtol=0.05, atol=0)
