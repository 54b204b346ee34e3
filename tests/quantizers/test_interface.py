"""The interface contract, checked for every built-in quantizer."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import SMALL_CONFIGS, assert_nearest
from vqbench import create_quantizer

NAMES = sorted(SMALL_CONFIGS)
#: Explicit codebooks searched by nearest code (IBQ picks by dot product: see test_ibq.py;
#: Leech's 196,560 codes are checked against a blocked brute force in test_leech.py).
NEAREST = sorted(
    n for n in NAMES if n not in ("fsq", "fsp", "lfq", "bsq", "ibq", "leech", "residual", "product")
)
#: Codebook sizes of the small configurations that do not take `codebook_size`.
FIXED_SIZES = {"fsq": 5 * 4 * 3, "fsp": 5 * 4 * 3, "leech": 196_560}


def build(name):
    return create_quantizer(name, **SMALL_CONFIGS[name])


def lookup_space(q, z_tokens):
    """The space in which each explicit quantizer searches, for the brute-force check."""
    if q.name == "fc":
        return F.normalize(q.project_in(z_tokens), dim=1)
    if q.name == "vqgan_lc":
        return q.project_in(z_tokens)
    return z_tokens


def tokens_of(z):
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_codebook_size(name):
    q = build(name)
    expected_size = FIXED_SIZES.get(name, 64)
    assert q.codebook_size == expected_size and q.dim == 16
    sizes = q.index_sizes()
    assert math.prod(sizes) == q.codebook_size
    out = q(torch.randn(2, 16, 5, 3))
    assert out.z_q.shape == (2, 16, 5, 3)
    components = () if len(sizes) == 1 else (len(sizes),)  # composites: (B, H, W, D)
    assert out.indices.shape == (2, 5, 3, *components) and out.indices.dtype == torch.int64
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    columns = out.indices.reshape(-1, len(sizes))
    assert int(columns.min()) >= 0 and (columns.max(0).values < torch.tensor(sizes)).all()
    assert all(not v.requires_grad for v in out.stats.values())
    codes = q.codebook()
    assert (codes is None) == (not q.explicit_codebook)
    if codes is not None:
        assert codes.shape[0] == q.codebook_size


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_the_input(name):
    q = build(name)
    z = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = q(z)
    (out.z_q.square().sum() + out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # every parameter trained by gradient receives one (EMA codebooks, e.g. `ema` and the
    # residual composite's default EMA stages, are buffers and have none); after one SGD step
    # where an output layer starts at zero (`vqbridge`'s recover layer, as its reference)
    trainable = [p for p in q.parameters() if p.requires_grad]
    trained = [p for p in trainable if p.grad is not None and p.grad.abs().sum() > 0]
    if len(trained) < len(trainable):
        torch.optim.SGD(trainable, lr=0.1).step()
        q.zero_grad()
        out = q(z)
        (out.z_q.square().sum() + out.loss).backward()
        trained = [p for p in trainable if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(trained) == len(trainable)


@pytest.mark.parametrize("name", NAMES)
def test_decode_indices_round_trips(name):
    q = build(name).eval()
    out = q(torch.randn(3, 16, 4, 4))
    torch.testing.assert_close(q.decode_indices(out.indices), out.z_q, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NEAREST)
def test_indices_are_nearest_codes(name):
    q = build(name).eval()
    z = torch.randn(4, 16, 8, 8)
    out = q(z)
    with torch.no_grad():
        assert_nearest(lookup_space(q, tokens_of(z)), q.codebook(), out.indices.reshape(-1))


@pytest.mark.parametrize("name", NAMES)
def test_float32_under_bf16_autocast(name):
    # Many codes, so that a bf16 distance (8-bit mantissa) would pick other codes than float32.
    params = dict(SMALL_CONFIGS[name])
    if "quantizer_params" in params:  # a composite: 64 x 64 codes
        params["quantizer_params"] = {**params["quantizer_params"], "codebook_size": 64}
    elif name not in ("fsq", "fsp", "lfq", "bsq", "leech"):
        params["codebook_size"] = 4096
    q = create_quantizer(name, **params).eval()
    z = torch.randn(4, 16, 16, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    reference = q(z.float())  # same values, no autocast, float32 throughout
    assert out.loss.dtype == torch.float32
    assert out.z_q.dtype == torch.bfloat16
    assert torch.equal(out.indices, reference.indices)
    torch.testing.assert_close(out.loss, reference.loss)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_the_same_outputs(name):
    q1, q2 = build(name).eval(), create_quantizer(name, **SMALL_CONFIGS[name]).eval()
    with torch.no_grad():
        for p in q1.parameters():
            p.add_(torch.randn_like(p))
    q2.load_state_dict(q1.state_dict())
    z = torch.randn(2, 16, 4, 4)
    assert torch.equal(q1(z).indices, q2(z).indices)
