"""`transvq`: linear attention against its per-query definition, every code depending on every
frozen code, decoding equal to the forward pass, parameters and capabilities."""

from __future__ import annotations

import pytest
import torch
from vqbench_quantizers.transvq import LinearAttention, sinusoidal_positions

from vqbench import VQBenchError, create_quantizer


def test_linear_attention_equals_its_per_query_definition():
    """`out_i = sum_j phi(q_i).phi(k_j) v_j / (sum_j phi(q_i).phi(k_j) + eps)` per head, in
    float64, one query at a time."""
    torch.manual_seed(0)
    attn = LinearAttention(12, 3, 0.0).double()
    x = torch.randn(1, 7, 12, dtype=torch.float64)
    phi = lambda t: torch.nn.functional.elu(t) + 1  # noqa: E731
    q, k, v = phi(attn.to_q(x)[0]), phi(attn.to_k(x)[0]), attn.to_v(x)[0]
    rows = []
    for i in range(7):
        heads = []
        for h in range(3):
            cols = slice(4 * h, 4 * h + 4)
            scores = k[:, cols] @ q[i, cols]  # (7,)
            heads.append((scores[:, None] * v[:, cols]).sum(0) / (scores.sum() + 1e-6))
        rows.append(torch.cat(heads))
    expected = attn.to_out(torch.stack(rows))
    torch.testing.assert_close(attn(x)[0], expected)


def test_every_code_depends_on_every_frozen_code():
    q = create_quantizer("transvq", codebook_size=32, dim=8, model_dim=16, heads=2)
    before = q.codebook().detach()
    with torch.no_grad():
        q.core[5] += 1.0
    changed = (q.codebook().detach() - before).abs().amax(1) > 0
    assert changed.all()  # attention over the whole codebook (SimVQ's map is per code)


def test_decoding_equals_the_forward_pass_and_gradients_reach_the_transformer():
    q = create_quantizer("transvq", codebook_size=32, dim=8, model_dim=16, heads=2).train()
    z = torch.randn(2, 8, 3, 3)
    out = q(z)
    torch.testing.assert_close(q.decode_indices(out.indices), out.z_q)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.transform.parameters())
    assert [n for n, _ in q.named_buffers()] == ["core"]  # frozen: not a parameter


def test_sinusoidal_positions_by_hand():
    pos = sinusoidal_positions(3, 4)
    # angles i / 10000^(2 floor(j / 2) / 4): sin on even channels j, cos on odd
    angles = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.01, 0.01], [2.0, 2.0, 0.02, 0.02]])
    expected = torch.where(torch.arange(4) % 2 == 0, torch.sin(angles), torch.cos(angles))
    torch.testing.assert_close(pos, expected)


def test_parameters_and_capabilities():
    q = create_quantizer("transvq", codebook_size=16, dim=4, model_dim=8, frozen_dim=6)
    assert q.core.shape == (16, 6) and q.codebook().shape == (16, 4)
    assert q.independent_groups() == 1 and q.index_sizes() == [16] and not q.resamplable
    with pytest.raises(VQBenchError, match="model_dim=10 is not a multiple of heads=4"):
        create_quantizer("transvq", codebook_size=16, dim=4, model_dim=10, heads=4)
