"""`product` against vector-quantize-pytorch's `GroupedResidualVQ`, called directly.

What corresponds: `GroupedResidualVQ(groups=G, num_quantizers=1)` splits the channels into G
contiguous chunks and quantizes each with its own `VectorQuantize`; that is `product` with
`parts: G`. The library's codebooks train by EMA unless `learnable_codebook=True,
ema_update=False`; with a learnable codebook its per-group loss is one term
`w * ||x - q||^2` with gradients to both `x` and `q`, which `vanilla` reproduces as
`codebook_weight = beta = w` (the same gradients; its logged value counts the term twice).
The library returns one loss per group and its examples sum them; vqbench's product averages
its parts (the mean squared error over the whole vector). The test therefore compares the
indices, `z_q`, each part's loss, and the gradients w.r.t. the input and every codebook with
the library's loss taken as the mean over groups. The library's rotation trick (its default)
is turned off: `product` of `vanilla` uses the straight-through estimator by default.
"""

from __future__ import annotations

import torch
from vector_quantize_pytorch import GroupedResidualVQ

from tests.reference.fixtures import assert_close
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}


def test_product_of_vanilla_reproduces_grouped_vq() -> None:
    dim, groups, k, w = 8, 2, 16, 0.25
    torch.manual_seed(0)
    ref = GroupedResidualVQ(
        dim=dim,
        groups=groups,
        num_quantizers=1,
        codebook_size=k,
        learnable_codebook=True,
        ema_update=False,
        rotation_trick=False,
        commitment_weight=w,
        accept_image_fmap=True,
    ).train()
    inner = {"codebook_size": k, "codebook_weight": w, "beta": w}
    ours = create_quantizer(
        "product", dim=dim, parts=groups, quantizer="vanilla", quantizer_params=inner
    ).train()
    ref_codebooks = [rvq.layers[0]._codebook.embed for rvq in ref.rvqs]
    with torch.no_grad():
        for i, embed in enumerate(ref_codebooks):
            ours.component(i).embedding.copy_(embed[0])
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(2, dim, 4, 4, generator=generator) * 0.1
    upstream = torch.randn(2, dim, 4, 4, generator=generator) * 0.01
    z_ref, z_ours = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ref_z_q, ref_indices, ref_losses = ref(z_ref)
    out = ours(z_ours)
    (ref_losses.mean() + (ref_z_q * upstream).sum()).backward()
    (out.loss + (out.z_q * upstream).sum()).backward()
    # The library stacks (groups, B, H, W, 1); vqbench (B, H, W, parts).
    assert torch.equal(out.indices, ref_indices[..., 0].permute(1, 2, 3, 0)), "indices"
    assert len(out.indices.unique()) > 4
    assert_close(out.z_q, ref_z_q, "z_q", **TOL)
    assert_close(out.stats["commitment"], ref_losses.mean() / w, "commitment term", **TOL)
    assert_close(out.loss, 2 * ref_losses.mean(), "loss (both terms of w ||x - q||^2)", **TOL)
    assert_close(z_ours.grad, z_ref.grad, "gradient w.r.t. the input", **TOL)
    for i, embed in enumerate(ref_codebooks):
        grad = ours.component(i).embedding.grad
        assert_close(grad, embed.grad[0], f"gradient w.r.t. codebook {i}", **TOL)
