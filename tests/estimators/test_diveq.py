"""DiVeQ against vector-quantize-pytorch's `directional_reparam` and a hand derivation."""

import pytest
import torch
import torch.nn.functional as F

from vqbench import create_estimator, create_quantizer

vqp = pytest.importorskip("vector_quantize_pytorch.vector_quantize_pytorch")


def test_value_is_the_code():
    z, q = torch.randn(64, 16), torch.randn(64, 16)
    out = create_estimator("diveq")(z.requires_grad_(), q)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variance", [5e-3, 0.5])
def test_gradient_equals_vector_quantize_pytorch_with_the_same_noise(variance):
    z = torch.randn(128, 8, dtype=torch.float64, requires_grad=True)
    q = torch.randn(128, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(128, 8, dtype=torch.float64)
    torch.manual_seed(7)
    reference = vqp.directional_reparam(z, q, noise_variance=variance)
    ref_z, ref_q = torch.autograd.grad((reference * g).sum(), (z, q))
    torch.manual_seed(7)  # the same noise draw
    ours = create_estimator("diveq", noise_variance=variance)(z, q)
    our_z, our_q = torch.autograd.grad((ours * g).sum(), (z, q))
    torch.testing.assert_close(our_z, ref_z)
    torch.testing.assert_close(our_q, ref_q)
    # The reference's value carries the noise; ours is the code.
    assert (reference - q).abs().max() > 1e-6
    torch.testing.assert_close(ours, q.detach(), rtol=0, atol=1e-12)


def test_without_noise_the_gradient_is_the_hand_derived_projection():
    """q~ = z + ||q - z|| u with u = sg((q - z)/||q - z||): dz = g - u (u.g), dq = u (u.g)."""
    z = torch.randn(32, 6, dtype=torch.float64, requires_grad=True)
    q = torch.randn(32, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(32, 6, dtype=torch.float64)
    out = create_estimator("diveq", noise_variance=0.0)(z, q)
    grad_z, grad_q = torch.autograd.grad((out * g).sum(), (z, q))
    u = F.normalize((q - z).detach(), dim=1)
    along = (u * g).sum(1, keepdim=True) * u
    torch.testing.assert_close(grad_z, g - along)
    torch.testing.assert_close(grad_q, along)


def test_the_codebook_learns_without_a_codebook_loss():
    q = create_quantizer(
        "vanilla", codebook_size=16, dim=4, estimator="diveq", codebook_weight=0.0, beta=0.0
    )
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    assert float(out.loss) == 0.0
    out.z_q.square().sum().backward()
    used = out.indices.unique()
    assert (q.embedding.grad[used].abs().sum(1) > 0).all()
    unused = torch.ones(16, dtype=torch.bool)
    unused[used] = False
    assert (q.embedding.grad[unused] == 0).all()


def test_the_official_recipe_is_the_default():
    """AaltoML DiVeQ: `normal.Normal(0, noise_var=0.001)` is a standard deviation of 1e-3;
    no auxiliary loss; codebook U(0, 1/K); replacement every 100 steps below 1% usage."""
    estimator = create_estimator("diveq")
    assert estimator.params.noise_variance == pytest.approx(1e-6)
    torch.manual_seed(0)
    z, codes = torch.randn(4096, 8), torch.randn(4096, 8)
    noise = estimator(z.requires_grad_(), codes)  # value q: the noise is in the gradient only
    torch.testing.assert_close(noise, codes, rtol=0, atol=1e-6)
    q = create_quantizer("vanilla", codebook_size=64, dim=8, estimator="diveq")
    assert (q.params.beta, q.params.codebook_weight) == (0.0, 0.0)
    assert 0 <= float(q.embedding.min()) and float(q.embedding.max()) <= 1 / 64
    torch.testing.assert_close(q.embedding.mean(), torch.tensor(0.5 / 64), rtol=0.1, atol=0)
    assert q.replacement.interval == 100 and q.replacement.threshold == 0.01
    shared = create_quantizer(
        "vanilla", codebook_size=64, dim=8, estimator="diveq", recipe="shared"
    )
    assert (shared.params.beta, shared.params.codebook_weight) == (0.25, 1.0)
    plain = create_quantizer("vanilla", codebook_size=64, dim=8)
    assert plain.replacement is None and float(plain.embedding.min()) < 0  # taming's U(-1/K, 1/K)
    kept = create_quantizer(
        "vanilla",
        codebook_size=64,
        dim=8,
        estimator="diveq",
        estimator_params={"codebook_init": "quantizer", "replacement_interval": 0},
    )
    assert kept.replacement is None and float(kept.embedding.min()) < 0


def test_code_replacement_by_hand():
    """Interval 4, threshold 0.5: a code used in fewer than 2 of 4 steps is replaced by a copy
    of a used code drawn by usage (counts: one per step, however many tokens chose it)."""
    q = create_quantizer(
        "vanilla",
        codebook_size=4,
        dim=2,
        estimator="diveq",
        estimator_params={"replacement_interval": 4, "discard_threshold": 0.5, "perturb_eps": 0},
    ).train()
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]]))
    # Steps: code 0 used 4 times (many tokens), code 1 twice, code 2 once, code 3 never.
    steps = [[0, 0, 0, 1], [0, 0, 1], [0, 2], [0]]
    for i, codes in enumerate(steps):
        z = q.embedding.detach()[torch.tensor(codes)].t().reshape(1, 2, 1, -1)
        q(z)
        before = q.embedding.detach().clone()
        q.after_optimizer_step()
        if i < 3:
            assert torch.equal(q.embedding, before)
    assert q.replacement.usage.sum() == 0  # counts reset
    assert int(q.replacement.replaced) == 2
    new = q.embedding.detach()
    assert torch.equal(new[:2], before[:2])  # used codes kept
    for row in new[2:]:  # replaced by copies of codes 0 or 1
        assert any(torch.equal(row, before[k]) for k in (0, 1))
