"""BSQ against BSQ-ViT's own quantizer (fixtures: tools/reference_fixtures/bsq.py).

Its configs' `persample_entropy_compute: analytical` also makes the codebook entropy the sum
of the bits' entropies (the reference replaces `prob` by the per-bit one before averaging):
`entropy_group_size: 1` here; our default is the exact entropy (its `group` mode with one
group of all bits).

The reference's quantizer loss is weighted by the trainer's `codebook_weight` 0.1, which is our
`entropy_weight` 0.1; its commitment `beta` is weighted by it too, so the reference's beta b
is our `commitment_weight` 0.1 b (0 in every config: our default).
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer

CASES = ["bsq_config", "bsq_exact", "bsq_group4", "bsq_exact_beta025"]


def build(fixture, **override):
    s = fixture.settings
    group = None if s["group_size"] == s["bits"] else s["group_size"]
    if s["persample_entropy_compute"] == "analytical":
        group = 1  # the reference's analytical mode: per-bit codebook entropy
    params = dict(codebook_size=2 ** s["bits"], dim=s["dim"], entropy_group_size=group)
    if s["beta"]:
        params["commitment_weight"] = s["codebook_weight"] * s["beta"]
    q = create_quantizer("bsq", **{**params, **override}).train()
    with torch.no_grad():
        q.project_in.weight.copy_(fixture["in_weight"])
        q.project_in.bias.copy_(fixture["in_bias"])
        q.project_out.weight.copy_(fixture["out_weight"])
        q.project_out.bias.copy_(fixture["out_bias"])
    return q


def run(q, fixture):
    z = fixture["z"].clone().requires_grad_()
    out = q.quantize_tokens(z)
    torch.autograd.backward([out.z_q, out.loss], [fixture["upstream"], torch.ones(())])
    return z, out


@pytest.mark.parametrize("name", CASES)
def test_bsq_reproduces_bsq_vit(name):
    fixture = load_fixture(name)
    assert fixture.meta["repository"] == "zhaoyue-zephyrus/bsq-vit"
    q = build(fixture)
    if fixture.settings["beta"] == 0:
        assert q.params.commitment_weight == 0.0  # the default is the configs' beta 0
    z, out = run(q, fixture)
    assert torch.equal(out.indices, fixture["indices"])
    assert_close(out.z_q, fixture["z_q"], "z_q")
    for term in ("per_sample_entropy", "codebook_entropy", "commitment"):
        assert_close(out.stats[term], fixture[term], term, rtol=1e-5, atol=1e-6)
    assert_close(out.loss, fixture["loss"], "loss", rtol=1e-5, atol=1e-6)
    assert_close(z.grad, fixture["grad_z"], "grad z", rtol=1e-4, atol=1e-6)
    for side, layer in (("in", q.project_in), ("out", q.project_out)):
        for p in ("weight", "bias"):
            got = getattr(layer, p).grad
            assert_close(got, fixture[f"grad_{side}_{p}"], f"grad {side} {p}", rtol=1e-4, atol=1e-6)


def test_a_departure_from_the_reference_fails():
    """The old harmonised commitment (0.25) changes the loss and the input's gradient."""
    fixture = load_fixture("bsq_config")
    z, out = run(build(fixture, commitment_weight=0.25), fixture)
    with pytest.raises(AssertionError):
        assert_close(out.loss, fixture["loss"], "loss", rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError):
        assert_close(z.grad, fixture["grad_z"], "grad z", rtol=1e-4, atol=1e-6)
