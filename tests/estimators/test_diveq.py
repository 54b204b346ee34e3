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
