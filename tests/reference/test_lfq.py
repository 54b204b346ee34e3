"""`lfq` against Open-MAGVIT2's `LFQ` (TencentARC/SEED-Voken) with its ImageNet loss weights.

Fixture: `tools/reference_fixtures/lfq.py`. Two known differences, both measured here:

* Index bits: Open-MAGVIT2 numbers codes least-significant bit first (channel i is worth
  `2^i`), vqbench most-significant first (vector-quantize-pytorch's order). The same code gets
  the bit-reversed label; training is unaffected, so the test compares after reversing bits.
* The codebook entropy: Open-MAGVIT2 takes `-sum p log(p + 1e-5)`, as vqbench's default
  (`entropy_eps: 1e-5`); `entropy_eps: 0` is the exact `-sum p log p`, which differs by up to
  `K eps` nats (less than 2e-4 at 16 codes) and is seen to depart here.
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture, surrogate_backward
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}
#: `-sum p log p` exceeds `-sum p log(p + eps)` by `sum p log(1 + eps / p)`, between 0 and
#: `K eps` (K = 16 codes, eps = 1e-5), plus float32 rounding.
ENTROPY_GAP = 16 * 1e-5


def reverse_bits(indices: torch.Tensor, bits: int) -> torch.Tensor:
    digits = (indices.unsqueeze(-1) >> torch.arange(bits)) & 1  # LSB first
    return (digits * 2 ** torch.arange(bits - 1, -1, -1)).sum(-1)


def run_lfq(fixture, **override):
    s = fixture.settings
    assert s["codebook_enlarge_ratio"] == 0
    quantizer = create_quantizer(
        "lfq",
        codebook_size=s["codebook_size"],
        dim=s["dim"],
        temperature=s["temperature"],
        entropy_weight=s["codebook_weight"],
        diversity_weight=s["batch_maximization_weight"] / s["sample_minimization_weight"],
        commitment_weight=s["commit_weight"],
        **override,
    ).train()
    assert s["sample_minimization_weight"] == 1.0
    z = fixture["z"].clone().requires_grad_(True)
    out = quantizer(z)
    surrogate_backward(out.z_q, out.loss, fixture["upstream"])
    return z, out


def test_lfq_reproduces_open_magvit2() -> None:
    fixture = load_fixture("open_magvit2_lfq")
    s = fixture.settings
    z, out = run_lfq(fixture)
    bits = s["codebook_size"].bit_length() - 1
    expected = reverse_bits(fixture["indices"], bits)
    assert torch.equal(out.indices.flatten(), expected), "indices (bit-reversed labels)"
    assert_close(out.z_q, fixture["z_q"], "z_q", **TOL)
    for term in ("per_sample_entropy", "commitment", "codebook_entropy"):
        assert_close(out.stats[term], fixture[term], term, **TOL)
    assert_close(out.loss, fixture["loss"], "loss", **TOL)
    assert_close(z.grad, fixture["grad_z"], "gradient w.r.t. the input", **TOL)


def test_the_exact_codebook_entropy_departs_by_at_most_k_eps() -> None:
    """`entropy_eps: 0`: `-sum p log p` exceeds `-sum p log(p + eps)` by `sum p log(1 + eps /
    p)`, between 0 and `K eps`, and the loss departs by `entropy_weight` times that (the
    gradient's change at 16 codes is below float32 resolution)."""
    fixture = load_fixture("open_magvit2_lfq")
    _, out = run_lfq(fixture, entropy_eps=0.0)
    gap = (out.stats["codebook_entropy"] - fixture["codebook_entropy"]).item()
    assert 1e-5 < gap <= ENTROPY_GAP + 1e-6, f"codebook entropy: {gap:.3g} nats apart"
    with pytest.raises(AssertionError):
        assert_close(out.loss, fixture["loss"], "loss", rtol=0.0, atol=2e-6)
    _, default = run_lfq(fixture)
    assert_close(default.loss, fixture["loss"], "loss", rtol=0.0, atol=2e-6)


def test_lfq_defaults_are_open_magvit2_recipe() -> None:
    s = load_fixture("open_magvit2_lfq").settings
    p = create_quantizer("lfq", codebook_size=16, dim=4).params
    assert (p.temperature, p.entropy_weight, p.commitment_weight) == (
        s["temperature"],
        s["codebook_weight"],
        s["commit_weight"],
    )
    assert p.diversity_weight == s["batch_maximization_weight"] / s["sample_minimization_weight"]
