"""Spherical Leech quantization: the lattice's first shell, the exact search, the groups."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from vqbench_quantizers.leech import (
    LEECH_DIM,
    LEECH_MIN_NORM,
    LEECH_SHELL,
    LeechDecoder,
    golay_codewords,
    leech_codebook,
    leech_minimal_vectors,
)

from tests.engine_helpers import small_config, write_config
from vqbench import VQBenchError, create_quantizer
from vqbench.cli import main


@pytest.fixture(scope="module")
def vectors():
    return leech_minimal_vectors().long()


def test_golay_code_is_the_extended_golay_code():
    words = golay_codewords().astype(np.int64)
    as_ints = set((words << np.arange(24)).sum(1).tolist())
    assert len(as_ints) == 4096  # 12 independent generators
    weights = np.bincount(words.sum(1), minlength=25)
    expected = np.zeros(25, dtype=np.int64)
    expected[[0, 8, 12, 16, 24]] = [1, 759, 2576, 759, 1]
    assert np.array_equal(weights, expected)  # minimum distance 8
    rng = np.random.default_rng(0)
    a, b = words[rng.integers(0, 4096, 500)], words[rng.integers(0, 4096, 500)]
    assert set(((a ^ b) << np.arange(24)).sum(1).tolist()) <= as_ints  # linear


def test_count_shapes_and_norms(vectors):
    assert vectors.shape == (LEECH_SHELL, LEECH_DIM) == (196_560, 24)
    assert torch.unique(vectors, dim=0).shape[0] == LEECH_SHELL
    assert torch.all(vectors.square().sum(1) == LEECH_MIN_NORM)
    shapes = torch.stack([(vectors.abs() == v).sum(1) for v in (4, 2, 3)], 1)
    assert (shapes[:, 0] == 2).sum() == 1_104  # (±4, ±4, 0^22)
    assert (shapes[:, 1] == 8).sum() == 97_152  # (±2^8, 0^16)
    assert (shapes[:, 2] == 1).sum() == 98_304  # (∓3, ±1^23)


def test_vectors_lie_in_the_leech_lattice(vectors):
    """SPLAG Ch. 4 §11: x is in Λ24 (scaled by sqrt 8) iff all x_i have the parity m of x_0,
    sum x_i = 4m (mod 8), and the positions of each residue mod 4 form a Golay codeword."""
    codewords = set((golay_codewords().astype(np.int64) << np.arange(24)).sum(1).tolist())
    x = vectors
    m = x[:, :1] % 2
    assert torch.all(x % 2 == m)
    assert torch.all((x.sum(1, keepdim=True) - 4 * m) % 8 == 0)
    marked = torch.where(m == 0, (x % 4) == 2, (x % 4) == 3).long()
    words = (marked << torch.arange(24)).sum(1).tolist()
    assert set(words) <= codewords


def test_kissing_configuration_and_minimal_distance(vectors):
    """Inner products of the normalised vectors are in {±1, ±1/2, ±1/4, 0}, with the kissing
    configuration's counts (1, 4600, 47104, 93150 around every vector); so distinct codes are
    at least 1 apart (sqrt 32 before scaling), and exactly 1 from 4,600 neighbours."""
    rng = np.random.default_rng(1)
    rows = [0, 1_104, 1_104 + 97_152] + rng.integers(0, LEECH_SHELL, 61).tolist()
    codes = leech_codebook().double()
    products = codes[rows] @ codes.T
    assert torch.allclose(products * 4, (products * 4).round(), atol=1e-5)  # float32 codes
    values, counts = torch.unique((products * 4).round().long(), return_counts=True)
    assert values.tolist() == [-4, -2, -1, 0, 1, 2, 4]
    per_row = torch.tensor([1, 4600, 47104, 93150, 47104, 4600, 1]) * len(rows)
    assert counts.tolist() == per_row.tolist()
    distances = torch.cdist(codes[rows], codes)
    distances[torch.arange(len(rows)), rows] = math.inf
    assert torch.allclose(distances.min(1).values, torch.ones_like(distances[:, 0]), atol=1e-6)
    assert torch.allclose(codes.norm(dim=1), torch.ones_like(codes[:, 0]), atol=1e-6)


def brute_force(u: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """float64 argmax of u.c over every code, a few tokens at a time."""
    codes = codes.double()
    return torch.cat([(part.double() @ codes.T).argmax(1) for part in u.split(64)])


def test_lattice_decoder_equals_brute_force():
    """Random unit vectors, and codes of every shape with a little noise (their own index)."""
    codes = leech_codebook()
    decoder = LeechDecoder()
    generator = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(384, 24, generator=generator), dim=1)
    assert torch.equal(decoder(x, rows=100), brute_force(x, codes))
    rows = torch.cat([torch.arange(0, LEECH_SHELL, 97), torch.tensor([LEECH_SHELL - 1])])
    noisy = codes[rows] + 0.02 * torch.randn(len(rows), 24, generator=generator)
    assert torch.equal(decoder(noisy), rows)


@pytest.mark.parametrize("search", ["lattice", "scan"])
def test_search_is_exact_against_brute_force(search):
    q = create_quantizer("leech", dim=96, groups=4, search=search).eval()
    z = torch.randn(128, 96)
    out = q.quantize_tokens(z)
    u = F.normalize(z.reshape(-1, 24), dim=1)
    expected = brute_force(u, q.codebook()).view(128, 4)
    assert torch.equal(out.indices, expected)
    torch.testing.assert_close(out.z_q, q.codebook()[expected].reshape(128, 96))


def test_groups_are_independent_and_declared():
    q = create_quantizer("leech", dim=96, groups=4)
    assert q.index_sizes() == [LEECH_SHELL] * 4 and q.codebook_size == LEECH_SHELL**4
    assert q.independent_groups() == 0 and not q.resamplable and not q.initialises_from_data
    assert not list(q.parameters())  # dim = 24 * groups: no projection, nothing to train
    z = torch.randn(2, 96, 3, 3)
    out = q(z)
    assert out.indices.shape == (2, 3, 3, 4)
    torch.testing.assert_close(q.decode_indices(out.indices), out.z_q)
    swapped = z.clone()
    swapped[:, 24:48] = torch.randn(2, 24, 3, 3)  # change group 1 only
    other = q(swapped).indices
    assert torch.equal(other[..., [0, 2, 3]], out.indices[..., [0, 2, 3]])


def test_loss_weight_and_straight_through_gradient():
    z = torch.randn(32, 24, requires_grad=True)
    q = create_quantizer("leech", loss_weight=2.0, beta=0.5)
    out = q.quantize_tokens(z)
    u = F.normalize(z, dim=1)
    distance = (q.codebook()[out.indices] - u).square().sum(1).mean()
    torch.testing.assert_close(out.loss, 2.0 * (0.5 + 1.0) * distance)
    (grad,) = torch.autograd.grad(out.z_q.sum(), z)
    (expected,) = torch.autograd.grad(u.sum(), z)  # identity through the code onto u
    torch.testing.assert_close(grad, expected)


def test_codebook_is_built_not_stored():
    q = create_quantizer("leech", dim=16)
    assert "codes" not in q.state_dict()
    assert q.codebook().shape == (LEECH_SHELL, LEECH_DIM)


def test_bad_groups_fail_with_one_line():
    with pytest.raises(VQBenchError, match="groups"):
        create_quantizer("leech", groups=0)


def test_four_training_steps_and_the_probe_through_the_engine(tmp_path, monkeypatch):
    """Two groups: usage per group and as the product, and a probe over both indices."""
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    config = small_config("leech", steps=4, batch=2)
    config["quantizer"]["params"] = {"dim": 48, "groups": 2}
    config["model"] = {"preset": "tiny", "overrides": {"ch": 16}}  # 8 x 8 tokens at 32 x 32
    run = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path / "run.yaml", config)), "--out", str(run)]) == 0
    results = json.loads((run / "eval.json").read_text())
    assert results["index_sizes"] == [LEECH_SHELL, LEECH_SHELL]
    assert len(results["usage_per_index"]) == 2 and 0 < results["product_usage"] <= 1
    assert 0 < results["usage"] <= 1 and results["independent_groups"] == 0
    probe = {"layers": 1, "width": 16, "heads": 2, "steps": 2, "batch_size": 2}
    probe.update(warmup_steps=1, samples=2, eval_batch_size=2, figure_samples=2, seeds=[0])
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump(probe))
    assert main(["probe", str(run), "--config", str(tmp_path / "probe.yaml")]) == 0
    result = json.loads((run / "probe.json").read_text())
    assert result["index_sizes"] == [LEECH_SHELL] * 2
    assert result["uniform_bits_per_token"] == pytest.approx(2 * math.log2(LEECH_SHELL))
