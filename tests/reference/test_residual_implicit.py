"""`residual` with `implicit_codebook: mlp` against vector-quantize-pytorch's
`ResidualVQ(implicit_neural_codebook=True)` (installed; called directly): indices, output,
loss and every gradient with the library's weights copied in, the initial codebooks'
distribution; and QINCo's `QINCoStep` network (`mlp_style: qinco`) against the fixtures that
tools/reference_fixtures/qinco.py wrote from facebookresearch/Qinco."""

from __future__ import annotations

import pytest
import torch

from tests.reference.fixtures import assert_close, load_fixture
from vqbench import create_quantizer

vqp = pytest.importorskip("vector_quantize_pytorch")

METHODS = ("residual",)
DIM, STAGES, K = 6, 3, 16


def library(seed: int = 0):
    torch.manual_seed(seed)
    return vqp.ResidualVQ(
        dim=DIM,
        num_quantizers=STAGES,
        codebook_size=K,
        implicit_neural_codebook=True,
        rotation_trick=False,
    ).train()


def ours(**params):
    settings = {"quantizer_params": {"codebook_size": K}, **params}
    return create_quantizer(
        "residual", dim=DIM, stages=STAGES, implicit_codebook="mlp", **settings
    ).train()


def copy_library_weights(q, reference) -> None:
    with torch.no_grad():
        for inner, layer in zip(q.quantizers, reference.layers, strict=True):
            inner.embedding.copy_(layer._codebook.embed[0])
    for mlp, ref_mlp in zip(q.mlps, reference.mlps, strict=True):
        mlp.load_state_dict(ref_mlp.state_dict())  # proj_in, layers.{l}.{0,2}


def run_both(q, reference):
    x = torch.randn(2, 40, DIM, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(2, 40, DIM)
    out = q.quantize_tokens(x.reshape(-1, DIM))
    ref_q, ref_indices, ref_losses = reference(x_ref)
    ((out.z_q.reshape(2, 40, DIM) * g).sum() + out.loss).backward()
    ((ref_q * g).sum() + ref_losses.sum()).backward()
    return x, x_ref, out, ref_q, ref_indices, ref_losses


def test_reference_recipe_is_the_librarys_setting():
    p = ours().params
    assert (p.quantizer, p.gradient, p.stage_loss) == ("vanilla", "sum", "sum")
    assert p.quantizer_params["codebook_weight"] == p.quantizer_params["beta"] == 1.0
    default = create_quantizer("residual", dim=DIM).params  # the plain residual is unchanged
    assert (default.quantizer, default.gradient, default.implicit_codebook) == (
        "ema",
        "straight_through",
        "none",
    )


def test_implicit_codebook_equals_the_library():
    reference, q = library(), ours()
    copy_library_weights(q, reference)
    x, x_ref, out, ref_q, ref_indices, ref_losses = run_both(q, reference)
    assert torch.equal(out.indices, ref_indices.reshape(-1, STAGES))
    assert len(out.indices[:, 1].unique()) > 3  # the implicit stages choose among many codes
    assert_close(out.z_q, ref_q.reshape(-1, DIM), "z_q", rtol=1e-5, atol=1e-6)
    # each stage's loss is the library's undetached mse counted once per side
    assert_close(out.loss, 2 * ref_losses.sum(), "loss", rtol=1e-5, atol=1e-7)
    assert_close(x.grad, x_ref.grad, "grad x", rtol=1e-4, atol=1e-6)
    for i, (inner, layer) in enumerate(zip(q.quantizers, reference.layers, strict=True)):
        assert_close(inner.embedding.grad, layer._codebook.embed.grad[0], f"grad codebook {i}")
    for i, (mlp, ref_mlp) in enumerate(zip(q.mlps, reference.mlps, strict=True)):
        ref_grads = dict(ref_mlp.named_parameters())
        for name, param in mlp.named_parameters():
            assert_close(param.grad, ref_grads[name].grad, f"mlp {i} {name}", rtol=1e-4, atol=1e-6)
    decoded = q.decode_tokens(out.indices)
    assert_close(decoded, out.z_q, "decode", rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("departure", ["commitment", "rq_vae_gradient", "no_condition"])
def test_a_departure_from_the_library_fails(departure):
    params = {
        "commitment": {"quantizer_params": {"codebook_size": K, "beta": 0.25}},
        "rq_vae_gradient": {"gradient": "straight_through"},
        "no_condition": {},
    }[departure]
    reference, q = library(), ours(**params)
    copy_library_weights(q, reference)
    if departure == "no_condition":  # the network ignores the partial reconstruction
        for mlp in q.mlps:
            forward = mlp.forward
            mlp.forward = lambda codes, condition, f=forward: f(codes, torch.zeros_like(condition))
    x, x_ref, out, ref_q, ref_indices, _ = run_both(q, reference)
    with pytest.raises(AssertionError):
        assert torch.equal(out.indices, ref_indices.reshape(-1, STAGES))
        assert_close(x.grad, x_ref.grad, "grad x", rtol=1e-4, atol=1e-6)
        grads = [inner.embedding.grad for inner in q.quantizers]
        for grad, layer in zip(grads, reference.layers, strict=True):
            assert_close(grad, layer._codebook.embed.grad[0], "grad codebook")


def test_initial_codebooks_have_the_librarys_distribution():
    """kaiming_uniform_ of (1, K, d): U(-b, b), b = sqrt(6 / (K d)); the MLPs are torch's
    `nn.Linear` defaults in both (same shapes); nothing copied, 6 seeds each."""
    theirs = torch.stack(
        [layer._codebook.embed[0] for s in range(6) for layer in library(s).layers]
    )
    mine = []
    for seed in range(100, 106):
        torch.manual_seed(seed)
        mine.extend(inner.embedding.detach() for inner in ours().quantizers)
    mine = torch.stack(mine)
    for stat in (torch.mean, torch.std, torch.amin, torch.amax):
        assert_close(stat(mine), stat(theirs), stat.__name__, rtol=0.06, atol=6e-3)
    shapes = [tuple(p.shape) for p in ours().mlps.parameters()]
    assert shapes == [tuple(p.shape) for p in library().mlps.parameters()]
    vanilla = torch.stack([q.embedding.detach() for q in ours(implicit_init="stage").quantizers])
    with pytest.raises(AssertionError):  # vanilla's own U(-1/K, 1/K) is another distribution
        assert_close(vanilla.std(), theirs.std(), "std", rtol=0.06, atol=6e-3)


def qinco_quantizer(fixture):
    s = fixture.settings
    q = create_quantizer(
        "residual",
        dim=s["d"],
        stages=s["M"],
        implicit_codebook="mlp",
        mlp_style="qinco",
        mlp_depth=s["L"],
        mlp_hidden=s["h"],
        quantizer_params={"codebook_size": s["K"]},
    ).eval()
    w = {
        k.removeprefix("weight."): v for k, v in fixture.tensors.items() if k.startswith("weight.")
    }
    with torch.no_grad():
        q.quantizers[0].embedding.copy_(w["codebook0.weight"])
        for m, mlp in enumerate(q.mlps, start=1):
            q.quantizers[m].embedding.copy_(w[f"step{m}.codebook.weight"])
            mlp.concat.weight.copy_(w[f"step{m}.MLPconcat.weight"])
            mlp.concat.bias.copy_(w[f"step{m}.MLPconcat.bias"])
            for block, layer in enumerate(mlp.layers):
                layer[0].weight.copy_(w[f"step{m}.residual_block{block}.0.weight"])
                layer[2].weight.copy_(w[f"step{m}.residual_block{block}.2.weight"])
    return q


def test_qinco_network_encodes_and_decodes_as_qinco():
    fixture = load_fixture("qinco_forward")
    assert fixture.meta["repository"] == "facebookresearch/Qinco"
    q = qinco_quantizer(fixture)
    out = q.quantize_tokens(fixture["x"])
    assert torch.equal(out.indices, fixture["codes"])  # QINCo's greedy encode
    assert len(out.indices[:, 2].unique()) > 3
    assert_close(out.z_q, fixture["xhat"], "x_hat", rtol=1e-5, atol=1e-6)
    assert_close(
        q.decode_tokens(fixture["codes"]), fixture["decoded"], "decode", rtol=1e-5, atol=1e-6
    )


def test_qinco_with_the_concatenation_swapped_departs():
    fixture = load_fixture("qinco_forward")
    q = qinco_quantizer(fixture)
    d = fixture.settings["d"]
    with torch.no_grad():  # [c, x_hat] read as [x_hat, c]
        for mlp in q.mlps:
            mlp.concat.weight.copy_(mlp.concat.weight.roll(d, dims=1))
    with pytest.raises(AssertionError):
        assert_close(
            q.decode_tokens(fixture["codes"]), fixture["decoded"], "decode", rtol=1e-5, atol=1e-6
        )
