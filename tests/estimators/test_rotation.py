import math

import torch
import torch.nn.functional as F

from vqbench import create_estimator


def rotation_matrix(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The d x d rotation R = I - 2 w w^T + 2 q^ e^T (Sec. 4.2), built explicitly (float64)."""
    e_hat, q_hat = F.normalize(e, dim=0), F.normalize(q, dim=0)
    w = F.normalize(e_hat + q_hat, dim=0)
    eye = torch.eye(e.numel(), dtype=e.dtype)
    return eye - 2 * torch.outer(w, w) + 2 * torch.outer(q_hat, e_hat)


def test_value_is_the_code():
    z, q = torch.randn(64, 16), torch.randn(64, 16)
    out = create_estimator("rotation")(z.requires_grad_(), q)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-5)


def test_gradient_is_lambda_r_transpose_g():
    z = torch.randn(32, 8, dtype=torch.float64, requires_grad=True)
    q = torch.randn(32, 8, dtype=torch.float64)
    g = torch.randn(32, 8, dtype=torch.float64)
    (create_estimator("rotation")(z, q) * g).sum().backward()
    for i in range(32):
        rot = rotation_matrix(z[i].detach(), q[i])
        # R e^ = q^ and R is orthogonal: the matrix really is the rotation.
        torch.testing.assert_close(
            rot @ F.normalize(z[i].detach(), dim=0), F.normalize(q[i], dim=0)
        )
        torch.testing.assert_close(rot.t() @ rot, torch.eye(8, dtype=torch.float64))
        lam = q[i].norm() / z[i].detach().norm()
        torch.testing.assert_close(z.grad[i], lam * rot.t() @ g[i])


def test_angle_between_gradient_and_code_is_kept():
    z = torch.randn(100, 12, dtype=torch.float64, requires_grad=True)
    q = torch.randn(100, 12, dtype=torch.float64)
    g = torch.randn(100, 12, dtype=torch.float64)
    (create_estimator("rotation")(z, q) * g).sum().backward()
    at_code = F.cosine_similarity(g, q, dim=1)
    at_input = F.cosine_similarity(z.grad, z.detach(), dim=1)
    torch.testing.assert_close(at_input, at_code)
    # The straight-through estimator keeps the direction instead: those angles differ.
    assert (F.cosine_similarity(g, z.detach(), dim=1) - at_code).abs().max() > 0.1


def test_in_graph_normalisation_removes_the_radial_part():
    z = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    q = torch.randn(16, 6, dtype=torch.float64)
    g = torch.randn(16, 6, dtype=torch.float64)
    out = create_estimator("rotation", normalize_in_graph=True)(z, q)
    torch.testing.assert_close(out, q)
    (out * g).sum().backward()
    for i in range(16):
        e = z[i].detach()
        e_hat = F.normalize(e, dim=0)
        radial = torch.eye(6, dtype=torch.float64) - torch.outer(e_hat, e_hat)
        expected = q[i].norm() / e.norm() * radial @ rotation_matrix(e, q[i]).t() @ g[i]
        torch.testing.assert_close(z.grad[i], expected)


def test_antipodal_and_near_zero_inputs_stay_finite():
    q = torch.randn(4, 8, dtype=torch.float64)
    z = torch.cat(
        [
            -q[:2] * 3,
            torch.zeros(1, 8, dtype=torch.float64),
            1e-12 * torch.randn(1, 8, dtype=torch.float64),
        ]
    ).requires_grad_()
    g = torch.randn(4, 8, dtype=torch.float64)
    out = create_estimator("rotation")(z, q)
    torch.testing.assert_close(out, q)
    (out * g).sum().backward()
    assert torch.isfinite(z.grad).all()
    # Antipodal: w = 0 and R = I + 2 q^ e^T, which still maps e^ to q^; gradient lambda R^T g.
    e_hat, q_hat = F.normalize(z[0].detach(), dim=0), F.normalize(q[0], dim=0)
    rot = torch.eye(8, dtype=torch.float64) + 2 * torch.outer(q_hat, e_hat)
    torch.testing.assert_close(rot @ e_hat, q_hat)
    torch.testing.assert_close(z.grad[0], (1 / 3) * rot.t() @ g[0])
    assert math.isfinite(z.grad[2].norm().item())


def test_codebook_gets_no_gradient_through_the_estimator():
    codes = torch.randn(10, 4, requires_grad=True)
    q = codes[torch.tensor([1, 2, 3])]
    out = create_estimator("rotation")(torch.randn(3, 4, requires_grad=True), q)
    out.sum().backward()
    assert codes.grad is None or torch.equal(codes.grad, torch.zeros_like(codes))
