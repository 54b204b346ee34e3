import pytest
import torch
import torch.nn.functional as F

from vqbench import VQBenchError, create_estimator, create_quantizer


def pair(n=50, d=8):
    z = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    return z, torch.randn(n, d, dtype=torch.float64)


def test_identity_equals_ste_in_value_and_gradient_bit_for_bit():
    z, q = pair()
    z2 = z.detach().clone().requires_grad_()
    g = torch.randn_like(q)
    radius = create_estimator("radius", radius="identity")(z, q)
    ste = create_estimator("ste")(z2, q)
    assert torch.equal(radius, ste)
    (radius * g).sum().backward()
    (ste * g).sum().backward()
    assert torch.equal(z.grad, z2.grad) and torch.equal(z.grad, g)


def radius_out(z, q, **params):
    return create_estimator("radius", detach_radius=False, **params)(z, q)


def hand_gradient(z, q, g, rho_prime):
    """d out / d z = I - rho'(r) u u^T (module docstring), applied to g row by row."""
    u = F.normalize(q - z, dim=1).detach()
    return g - rho_prime.unsqueeze(1) * u * (u * g).sum(1, keepdim=True)


@pytest.mark.parametrize(
    "params, rho_prime",
    [
        ({"radius": "constant", "scale": 0.3}, lambda r: torch.zeros_like(r)),
        ({"radius": "clipped", "scale": 1.0}, lambda r: (r < 1.0).double()),
        ({"radius": "power", "scale": 2.0, "power": 0.5}, lambda r: 2.0 * 0.5 * r**-0.5),
        ({"radius": "identity"}, lambda r: torch.ones_like(r)),
    ],
)
def test_the_value_is_the_code_and_the_radius_shapes_the_gradient(params, rho_prime):
    z, q = pair()
    g = torch.randn_like(q)
    out = radius_out(z, q, **params)
    assert torch.equal(out.detach(), q)  # bit for bit: a tokenizer emits codes
    (out * g).sum().backward()
    r = (q - z).detach().norm(dim=1)
    torch.testing.assert_close(z.grad, hand_gradient(z.detach(), q, g, rho_prime(r)))


def test_a_detached_radius_other_than_identity_is_refused():
    with pytest.raises(VQBenchError, match="is the straight-through estimator exactly"):
        create_estimator("radius", radius="clipped")


def test_differentiable_identity_radius_projects_out_the_gap_direction():
    # out = z + ||q - z|| sg(u): d out / d z = I - u u^T, and the code receives u u^T g.
    z = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    q = torch.randn(20, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(20, 5, dtype=torch.float64)
    out = create_estimator("radius", radius="identity", detach_radius=False)(z, q)
    torch.testing.assert_close(out, q.detach())
    (out * g).sum().backward()
    u = F.normalize(q - z, dim=1).detach()
    dot = (u * g).sum(1, keepdim=True)
    torch.testing.assert_close(z.grad, g - u * dot)
    torch.testing.assert_close(q.grad, u * dot)


def test_bad_estimator_parameters_and_names():
    with pytest.raises(VQBenchError, match="radius.radius='cubic' is invalid"):
        create_estimator("radius", radius="cubic")
    with pytest.raises(
        VQBenchError,
        match="unknown estimator 'rotatoin'; did you mean "
        "'rotation'\\? registered: diveq, radius, rotation, ste",
    ):
        create_estimator("rotatoin")
    with pytest.raises(
        VQBenchError,
        match="vanilla.estimator: unknown estimator 'rotatoin'; did you mean 'rotation'",
    ):
        create_quantizer("vanilla", codebook_size=8, dim=4, estimator="rotatoin")
    with pytest.raises(VQBenchError, match="vanilla.estimator: rotation: unknown parameter"):
        create_quantizer(
            "vanilla", codebook_size=8, dim=4, estimator="rotation", estimator_params={"epsilon": 1}
        )
    for implicit in ("fsq", "lfq"):
        with pytest.raises(
            VQBenchError,
            match=f"{implicit}.estimator='rotation' is not "
            "supported: implicit-codebook quantizers take "
            "'ste' only",
        ):
            create_quantizer(implicit, dim=4, estimator="rotation")
