"""`fc` (ViT-VQGAN's factorised, l2-normalised codes) against LlamaGen and vector-quantize-pytorch.

ViT-VQGAN's code is not public. LlamaGen (`tools/reference_fixtures/fc.py`) is the public
implementation with a trained codebook: its weights are copied and indices, `z_q`, both loss
terms and the gradients with respect to the input, both projections and the codebook must
match. vector-quantize-pytorch's `VectorQuantize(codebook_dim=8, use_cosine_sim=True)` is
called directly for the lookup (indices and `z_q`); its codebook is EMA-only with cosine
similarity (`learnable_codebook` is refused), so its losses and codebook updates do not
correspond to fc's and are not compared.
"""

from __future__ import annotations

import pytest
import torch
from vector_quantize_pytorch import VectorQuantize

from tests.reference.fixtures import assert_close, init_statistics, load_fixture, surrogate_backward
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}


def fc_from_llamagen(fixture):
    s = fixture.settings
    quantizer = create_quantizer(
        "fc",
        codebook_size=s["n_e"],
        dim=s["dim"],
        lookup_dim=s["codebook_embed_dim"],
        beta=s["commit_loss_beta"],
    )
    with torch.no_grad():
        quantizer.project_in.weight.copy_(fixture["quant_conv.weight"].flatten(1))
        quantizer.project_in.bias.copy_(fixture["quant_conv.bias"])
        quantizer.embedding.copy_(fixture["embedding.weight"])
        quantizer.project_out.weight.copy_(fixture["post.weight"].flatten(1))
        quantizer.project_out.bias.copy_(fixture["post.bias"])
    return quantizer.train()


def test_fc_reproduces_llamagen() -> None:
    fixture = load_fixture("llamagen_fc")
    assert fixture.settings["entropy_loss_ratio"] == 0.0 and fixture.settings["codebook_l2_norm"]
    quantizer = fc_from_llamagen(fixture)
    z = fixture["z"].clone().requires_grad_(True)
    out = quantizer(z)
    surrogate_backward(out.z_q, out.loss, fixture["upstream"])
    assert torch.equal(out.indices.flatten(), fixture["indices"]), "indices"
    assert_close(out.z_q, fixture["z_q"], "z_q", **TOL)
    for term in ("codebook", "commitment"):
        assert_close(out.stats[term], fixture[term], f"{term} term", **TOL)
    assert_close(out.loss, fixture["loss"], "loss", **TOL)
    assert_close(z.grad, fixture["grad_z"], "gradient w.r.t. the input", **TOL)
    grads = {
        "quant_conv.weight": quantizer.project_in.weight.grad,
        "quant_conv.bias": quantizer.project_in.bias.grad,
        "embedding.weight": quantizer.embedding.grad,
        "post.weight": quantizer.project_out.weight.grad,
        "post.bias": quantizer.project_out.bias.grad,
    }
    for name, grad in grads.items():
        expected = fixture[f"grad_{name}"]
        assert_close(grad, expected.reshape(grad.shape), f"gradient w.r.t. {name}", **TOL)


def test_fc_defaults_are_llamagen_recipe() -> None:
    s = load_fixture("llamagen_fc").settings
    p = create_quantizer("fc", codebook_size=16, dim=6).params
    assert (p.lookup_dim, p.beta, p.codebook_weight) == (
        s["codebook_embed_dim"],
        s["commit_loss_beta"],
        1.0,  # vq_loss + commit_loss: the codebook term unweighted
    )


def test_fc_initial_code_directions() -> None:
    """The normalised initial codes: near-zero mean offset, spread about 1 (both references
    and vqbench draw directions spread over the whole sphere)."""
    fixture = load_fixture("llamagen_fc")
    s = fixture.settings
    ours = []
    for seed in s["init_seeds"]:
        torch.manual_seed(seed)
        q = create_quantizer("fc", codebook_size=s["init_codebook_size"], dim=s["dim"])
        ours.append(init_statistics(q.codebook()))
    ours, ref = torch.stack(ours), fixture["init"]
    assert_close(ours[:, :3], ref[:, :3], "mean offset, spread, norm", rtol=0.0, atol=0.05)


def test_fc_raw_initial_codebook_norm_is_llamagen() -> None:
    fixture = load_fixture("llamagen_fc")
    s = fixture.settings
    torch.manual_seed(0)
    q = create_quantizer("fc", codebook_size=s["init_codebook_size"], dim=s["dim"])
    ours = init_statistics(q.embedding)
    assert_close(ours[2], fixture["init"][0, 2], "raw code norm", rtol=0.05, atol=0.0)


def test_fc_earlier_normal_init_departs_from_llamagen() -> None:
    """`codebook_init: normal` (vqbench before the fix) starts with raw norms of about 2.8."""
    fixture = load_fixture("llamagen_fc")
    s = fixture.settings
    torch.manual_seed(0)
    q = create_quantizer(
        "fc", codebook_size=s["init_codebook_size"], dim=s["dim"], codebook_init="normal"
    )
    with pytest.raises(AssertionError):
        assert_close(
            init_statistics(q.embedding)[2], fixture["init"][0, 2], "norm", rtol=0.05, atol=0.0
        )


def test_fc_lookup_equals_vector_quantize_pytorch_cosine() -> None:
    """Same projection and codes: vector-quantize-pytorch's cosine-similarity lookup picks the
    same codes and returns the same `z_q` (eval mode: no EMA update)."""
    dim, lookup, k = 6, 8, 32
    torch.manual_seed(0)
    ref = VectorQuantize(
        dim=dim,
        codebook_size=k,
        codebook_dim=lookup,
        use_cosine_sim=True,
        rotation_trick=False,
        accept_image_fmap=True,
    ).eval()
    ours = create_quantizer("fc", codebook_size=k, dim=dim, lookup_dim=lookup).eval()
    with torch.no_grad():
        ours.project_in.load_state_dict(ref.project_in.state_dict())
        ours.project_out.load_state_dict(ref.project_out.state_dict())
        ours.embedding.copy_(ref._codebook.embed[0])
    z = torch.randn(2, dim, 4, 4, generator=torch.Generator().manual_seed(1))
    ref_z_q, ref_indices, _ = ref(z)
    out = ours(z)
    assert torch.equal(out.indices, ref_indices), "indices"
    assert len(out.indices.unique()) > 5
    assert_close(out.z_q, ref_z_q, "z_q", **TOL)
