"""`ema` with its default start against vector-quantize-pytorch's EMA codebook, called directly.

taming's `EMAVectorQuantizer` (counts starting at 0) is compared in `test_taming.py`;
vqbench's default `initial_cluster_size: 1` with sums equal to the codes is the library's
start (`cluster_size = ones`, `embed_avg = embed`). One training step of
`VectorQuantize(decay=0.99, commitment_weight=0.25, rotation_trick=False)` and of `ema` with
the same codes: indices, `z_q`, loss, input gradient, and the codebook, counts and sums after
the update. (The library draws its initial codes kaiming-uniform, taming and vqbench N(0, 1).)
"""

from __future__ import annotations

import torch
from vector_quantize_pytorch import VectorQuantize

from tests.reference.fixtures import assert_close
from vqbench.quantizer import create_quantizer

TOL = {"rtol": 1e-5, "atol": 1e-6}


def test_ema_default_start_reproduces_vector_quantize_ema() -> None:
    dim, k = 4, 16
    torch.manual_seed(0)
    ref = VectorQuantize(
        dim=dim,
        codebook_size=k,
        decay=0.99,
        commitment_weight=0.25,
        rotation_trick=False,
        accept_image_fmap=True,
    ).train()
    codebook = ref._codebook
    ours = create_quantizer("ema", codebook_size=k, dim=dim).train()
    with torch.no_grad():
        ours.embedding.copy_(codebook.embed[0])
        ours.embed_sum.copy_(codebook.embed_avg[0])
        assert torch.equal(ours.cluster_size, codebook.cluster_size[0]), "counts start at 1"
    generator = torch.Generator().manual_seed(1)
    z = torch.rand(2, dim, 3, 3, generator=generator) - 0.5
    upstream = torch.randn(2, dim, 3, 3, generator=generator) * 0.01
    z_ref, z_ours = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ref_z_q, ref_indices, ref_loss = ref(z_ref)
    out = ours(z_ours)
    (ref_loss.sum() + (ref_z_q * upstream).sum()).backward()
    (out.loss + (out.z_q * upstream).sum()).backward()
    ours.after_optimizer_step()
    assert torch.equal(out.indices, ref_indices), "indices"
    assert len(out.indices.unique()) > 3
    assert_close(out.z_q, ref_z_q, "z_q", **TOL)
    assert_close(out.loss, ref_loss.sum(), "loss", **TOL)
    assert_close(z_ours.grad, z_ref.grad, "gradient w.r.t. the input", **TOL)
    assert_close(ours.cluster_size, codebook.cluster_size[0], "EMA counts", **TOL)
    assert_close(ours.embed_sum, codebook.embed_avg[0], "EMA sums", **TOL)
    assert_close(ours.embedding, codebook.embed[0], "codebook after the update", **TOL)
