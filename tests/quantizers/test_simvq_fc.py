import torch
import torch.nn.functional as F

from vqbench import create_quantizer


def test_simvq_codebook_is_the_linear_map_of_a_frozen_core():
    q = create_quantizer("simvq", codebook_size=512, dim=32)
    torch.testing.assert_close(q.codebook(), q.core @ q.projection.weight.t() + q.projection.bias)
    assert abs(q.core.std().item() - 32**-0.5) < 0.01  # N(0, 1/dim), as the official code
    assert [n for n, p in q.named_parameters()] == ["projection.weight", "projection.bias"]
    out = q(torch.randn(2, 32, 4, 4))
    out.loss.backward()
    assert q.projection.weight.grad.abs().sum() > 0
    assert create_quantizer("simvq", bias=False, codebook_size=8, dim=4).projection.bias is None


def test_fc_looks_up_unit_vectors_in_the_low_dimensional_space():
    q = create_quantizer("fc", codebook_size=128, dim=16, lookup_dim=4)
    codes = q.codebook()
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(128))
    z = torch.randn(2, 16, 3, 3)
    out = q(z)
    u = F.normalize(q.project_in(z.permute(0, 2, 3, 1).reshape(-1, 16)), dim=1)
    # Nearest in the normalised space is the largest cosine similarity.
    assert torch.equal(out.indices.reshape(-1), (u @ codes.t()).argmax(1))
    picked = codes[out.indices.reshape(-1)]
    expected = q.project_out(picked).reshape(2, 3, 3, 16).permute(0, 3, 1, 2)
    torch.testing.assert_close(out.z_q, expected)
    torch.testing.assert_close(out.loss, 1.25 * (picked - u).square().mean())
