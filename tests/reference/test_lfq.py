"""`lfq` against Open-MAGVIT2's `LFQ` (TencentARC/SEED-Voken) with its ImageNet loss weights.

Fixture: `tools/reference_fixtures/lfq.py`. Two known differences, both measured here:

* Index bits: Open-MAGVIT2 numbers codes least-significant bit first (channel i is worth
  `2^i`), vqbench most-significant first (vector-quantize-pytorch's order). The same code gets
  the bit-reversed label; training is unaffected, so the test compares after reversing bits.
* The codebook entropy: Open-MAGVIT2 takes `-sum p log(p + 1e-5)`, vqbench the exact
  `-sum p log p` (`vqbench.lfq_entropy`); at 16 codes the two differ by less than 2e-4 nats.
"""

from __future__ import annotations

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


def test_lfq_reproduces_open_magvit2() -> None:
    fixture = load_fixture("open_magvit2_lfq")
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
    ).train()
    assert s["sample_minimization_weight"] == 1.0
    z = fixture["z"].clone().requires_grad_(True)
    out = quantizer(z)
    surrogate_backward(out.z_q, out.loss, fixture["upstream"])
    bits = s["codebook_size"].bit_length() - 1
    expected = reverse_bits(fixture["indices"], bits)
    assert torch.equal(out.indices.flatten(), expected), "indices (bit-reversed labels)"
    assert_close(out.z_q, fixture["z_q"], "z_q", **TOL)
    for term in ("per_sample_entropy", "commitment"):
        assert_close(out.stats[term], fixture[term], term, **TOL)
    h = out.stats["codebook_entropy"]
    gap = h - fixture["codebook_entropy"]
    assert -1e-6 <= gap.item() <= ENTROPY_GAP + 1e-6, (
        f"codebook entropy: {gap.item():.3g} nats apart"
    )
    # The loss and the input gradient carry the eps difference times entropy_weight (0.1).
    assert_close(out.loss, fixture["loss"], "loss", rtol=0.0, atol=2e-5)
    assert_close(z.grad, fixture["grad_z"], "gradient w.r.t. the input", rtol=1e-3, atol=1e-6)


def test_lfq_defaults_are_open_magvit2_recipe() -> None:
    s = load_fixture("open_magvit2_lfq").settings
    p = create_quantizer("lfq", codebook_size=16, dim=4).params
    assert (p.temperature, p.entropy_weight, p.commitment_weight) == (
        s["temperature"],
        s["codebook_weight"],
        s["commit_weight"],
    )
    assert p.diversity_weight == s["batch_maximization_weight"] / s["sample_minimization_weight"]
