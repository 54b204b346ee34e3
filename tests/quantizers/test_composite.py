"""Residual and product composites against vector-quantize-pytorch's ResidualVQ and
GroupedResidualVQ, hand-worked cases, delegation of the upkeep hook, and validation."""

import pytest
import torch

from vqbench import VQBenchError, create_quantizer

vqp = pytest.importorskip("vector_quantize_pytorch")


def library_kwargs():
    """Plain learnable VQ with the straight-through estimator in the library: its loss is one
    undetached mse(q, x), i.e. our codebook and commitment terms with weights 1 and 1."""
    return dict(ema_update=False, learnable_codebook=True, rotation_trick=False)


def copy_codebooks(ours, layers):
    with torch.no_grad():
        for inner, layer in zip(ours.quantizers, layers):
            inner.embedding.copy_(layer._codebook.embed[0])


@pytest.mark.parametrize("shared", [False, True])
def test_residual_equals_residual_vq(shared):
    torch.manual_seed(0)
    reference = vqp.ResidualVQ(
        dim=6, num_quantizers=3, codebook_size=16, shared_codebook=shared, **library_kwargs()
    ).train()
    ours = create_quantizer(
        "residual",
        dim=6,
        stages=3,
        shared=shared,
        quantizer="vanilla",  # the library's configuration, not RQ-VAE's (EMA, averaged)
        gradient="sum",
        stage_loss="sum",
        quantizer_params={"codebook_size": 16, "codebook_weight": 1.0, "beta": 1.0},
    ).train()
    copy_codebooks(ours, reference.layers[:1] if shared else reference.layers)
    x = torch.randn(2, 40, 6, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(2, 40, 6)
    out = ours.quantize_tokens(x.reshape(-1, 6))
    ref_q, ref_indices, ref_losses = reference(x_ref)
    assert torch.equal(out.indices, ref_indices.reshape(-1, 3))
    torch.testing.assert_close(out.z_q, ref_q.reshape(-1, 6))
    # Each stage's loss is the library's mse counted once per side (codebook + commitment).
    torch.testing.assert_close(out.loss, 2 * ref_losses.sum())
    # Gradients: our two terms each carry one side of the library's undetached mse.
    ((out.z_q.reshape(2, 40, 6) * g).sum() + out.loss).backward()
    ((ref_q * g).sum() + ref_losses.sum()).backward()
    torch.testing.assert_close(x.grad, x_ref.grad)  # the sum of the stages' gradients
    codes = torch.stack([q.embedding.grad for q in ours.quantizers])
    ref_codes = torch.stack([layer._codebook.embed.grad[0] for layer in reference.layers])
    torch.testing.assert_close(
        codes.sum(0) if shared else codes, ref_codes[0] if shared else ref_codes
    )


def test_product_equals_grouped_residual_vq_with_one_quantizer_per_group():
    torch.manual_seed(1)
    reference = vqp.GroupedResidualVQ(
        dim=8, groups=2, num_quantizers=1, codebook_size=16, **library_kwargs()
    ).train()
    ours = create_quantizer(
        "product",
        dim=8,
        parts=2,
        quantizer_params={"codebook_size": 16, "codebook_weight": 1.0, "beta": 1.0},
    ).train()
    copy_codebooks(ours, [rvq.layers[0] for rvq in reference.rvqs])
    x = torch.randn(3, 20, 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(3, 20, 8)
    out = ours.quantize_tokens(x.reshape(-1, 8))
    ref_q, ref_indices, ref_losses = reference(x_ref)  # indices (groups, B, N, 1)
    torch.testing.assert_close(out.z_q, ref_q.reshape(-1, 8))
    assert torch.equal(out.indices, ref_indices.squeeze(-1).permute(1, 2, 0).reshape(-1, 2))
    torch.testing.assert_close(out.loss, 2 * ref_losses.mean())  # the mean over parts
    ((out.z_q.reshape(3, 20, 8) * g).sum() + out.loss).backward()
    ((ref_q * g).sum() + ref_losses.mean()).backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    for inner, rvq in zip(ours.quantizers, reference.rvqs):
        torch.testing.assert_close(inner.embedding.grad, rvq.layers[0]._codebook.embed.grad[0])


def test_residual_hand_worked_and_straight_through_gradient():
    q = create_quantizer(
        "residual",
        dim=1,
        stages=2,
        shared=False,
        gradient="straight_through",
        quantizer_params={"codebook_size": 3},
    )
    with torch.no_grad():
        q.quantizers[0].embedding.copy_(torch.tensor([[0.0], [4.0], [8.0]]))
        q.quantizers[1].embedding.copy_(torch.tensor([[-1.0], [0.0], [1.0]]))
    z = torch.tensor([[4.9], [7.2], [-0.4]], requires_grad=True)
    out = q.quantize_tokens(z)
    # 4.9 -> 4 + 1 (residual 0.9); 7.2 -> 8 - 1 (residual -0.8); -0.4 -> 0 + 0 (residual -0.4)
    assert out.indices.tolist() == [[1, 2], [2, 0], [0, 1]]
    torch.testing.assert_close(out.z_q, torch.tensor([[5.0], [7.0], [0.0]]))
    torch.testing.assert_close(q.decode_tokens(out.indices), out.z_q)
    g = torch.tensor([[1.0], [2.0], [3.0]])
    (out.z_q * g).sum().backward()
    torch.testing.assert_close(z.grad, g)  # one straight-through around the stack


def test_product_of_residuals_nests_index_columns():
    q = create_quantizer(
        "product",
        dim=8,
        parts=2,
        quantizer="residual",
        quantizer_params={"stages": 3, "quantizer_params": {"codebook_size": 4}},
    ).eval()
    assert q.index_sizes() == [4] * 6 and q.codebook_size == 4**6
    out = q(torch.randn(2, 8, 3, 3))
    assert out.indices.shape == (2, 3, 3, 6)
    torch.testing.assert_close(q.decode_indices(out.indices), out.z_q)


@pytest.mark.parametrize("name, size", [("residual", "stages"), ("product", "parts")])
def test_upkeep_reaches_every_inner_quantizer(name, size):
    q = create_quantizer(
        name, dim=4, **{size: 2}, quantizer="ema", quantizer_params={"codebook_size": 8}
    ).train()
    before = [inner.embedding.clone() for inner in q.quantizers]
    q(torch.randn(2, 4, 4, 4))
    for inner, old in zip(q.quantizers, before):
        assert torch.equal(inner.embedding, old)  # EMA updates wait for the optimiser step
    q.after_optimizer_step()
    for inner, old in zip(q.quantizers, before):
        assert not torch.equal(inner.embedding, old)


def test_shared_uses_one_codebook_and_groups_count_each_codebook():
    shared = create_quantizer("residual", dim=4, stages=3, quantizer_params={"codebook_size": 8})
    separate = create_quantizer(
        "residual", dim=4, stages=3, shared=False, quantizer_params={"codebook_size": 8}
    )
    assert len(shared.quantizers) == 1 and len(separate.quantizers) == 3
    assert shared.independent_groups() == 8 and separate.independent_groups() == 24
    assert shared.codebook_size == separate.codebook_size == 8**3


@pytest.mark.parametrize(
    "params, message",
    [
        ({"quantizer": "vanila"}, "residual.quantizer='vanila' is invalid: unknown quantizer"),
        ({"quantizer_params": {"dim": 4}}, "residual: quantizer_params: 'dim' is set by"),
        (
            {"quantizer_params": {"codebook_size": 0}},
            "residual: quantizer_params: ema.codebook_size=0 is invalid",
        ),
        ({"estimator": "rotation"}, "residual.estimator: a composite has no estimator"),
        ({"stages": 0}, "residual.stages=0 is invalid"),
    ],
)
def test_bad_parameters_fail_with_one_line(params, message):
    with pytest.raises(VQBenchError, match=message):
        create_quantizer("residual", **params)


def test_product_parts_must_divide_dim():
    with pytest.raises(VQBenchError, match="product: parts=3 does not divide dim=16"):
        create_quantizer("product", dim=16, parts=3)


def test_residual_defaults_are_rq_vaes_recipe():
    """RQ-VAE: one EMA codebook shared by the depths (counts from 0, codes below a count of 1
    restart), one straight-through estimator around the stack, and the mean over depth of
    `||x - sg(sum_{j<=i} q_j)||^2`, weighted 0.25 (`latent_loss_weight`)."""
    torch.manual_seed(0)
    rq = create_quantizer("residual", dim=6, stages=3, quantizer_params={"codebook_size": 8})
    assert len(rq.quantizers) == 1 and rq.quantizers[0].name == "ema"
    inner = rq.quantizers[0].params
    assert (inner.dead_code_threshold, inner.initial_cluster_size) == (1.0, 0.0)
    shared_recipe = create_quantizer(
        "residual", dim=6, recipe="shared", quantizer_params={"codebook_size": 8}
    )
    assert shared_recipe.quantizers[0].params.dead_code_threshold == 0.0
    x = torch.randn(50, 6, requires_grad=True)
    out = rq.train().quantize_tokens(x)
    partial, codes = [], torch.zeros_like(x)
    for i in range(3):
        codes = codes + rq.component(i).decode_tokens(out.indices[:, i])
        partial.append((x - codes.detach()).pow(2).mean())
    expected = 0.25 * torch.stack(partial).mean()
    torch.testing.assert_close(out.loss, expected)
    (g_ours,) = torch.autograd.grad(out.loss + out.z_q.sum(), x)
    (g_ref,) = torch.autograd.grad(expected + (x + (codes - x).detach()).sum(), x)
    torch.testing.assert_close(g_ours, g_ref)
    summed = create_quantizer(
        "residual", dim=6, stages=3, stage_loss="sum", quantizer_params={"codebook_size": 8}
    )
    summed.load_state_dict(rq.state_dict())
    torch.testing.assert_close(summed.quantize_tokens(x).loss, 3 * out.loss)
