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


def test_constant_moves_the_latent_by_exactly_the_constant_towards_its_code():
    z, q = pair()
    out = create_estimator("radius", radius="constant", scale=0.3)(z, q)
    step = out - z
    torch.testing.assert_close(step.norm(dim=1), torch.full((50,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(F.normalize(step, dim=1), F.normalize(q - z, dim=1))
    g = torch.randn_like(q)
    (out * g).sum().backward()
    torch.testing.assert_close(z.grad, g)  # detached direction and constant step


def test_clipped_reaches_near_codes_and_stops_short_of_far_ones():
    z, q = pair()
    gap = (q - z).detach().norm(dim=1)
    limit = gap.median().item()
    out = create_estimator("radius", radius="clipped", scale=limit)(z, q).detach()
    near = gap <= limit
    torch.testing.assert_close(out[near], q[near])
    far_steps = (out - z.detach())[~near].norm(dim=1)
    torch.testing.assert_close(far_steps, torch.full_like(far_steps, limit))


def test_power_step_length():
    z, q = pair()
    out = create_estimator("radius", radius="power", scale=2.0, power=0.5)(z, q)
    gap = (q - z).detach().norm(dim=1)
    torch.testing.assert_close((out - z).detach().norm(dim=1), 2.0 * gap.sqrt())


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
