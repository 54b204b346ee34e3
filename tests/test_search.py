import pytest
import torch

from tests.helpers import assert_nearest, brute_force_nearest
from vqbench.search import nearest_code


@pytest.mark.parametrize("codebook_size", [1, 7, 1000, 5000])
def test_nearest_code_equals_brute_force(codebook_size):
    z = torch.randn(3000, 32)
    codes = torch.randn(codebook_size, 32)
    # A small block forces several row and code chunks; 5000 is not a multiple of the chunk.
    indices = nearest_code(z, codes, block_elements=2**20)
    assert indices.dtype == torch.int64 and indices.shape == (3000,)
    assert_nearest(z, codes, indices)


def test_nearest_code_is_exact_on_separated_data():
    codes = torch.randn(500, 8) * 10
    pick = torch.randint(0, 500, (2000,))
    z = codes[pick] + 0.01 * torch.randn(2000, 8)
    assert torch.equal(nearest_code(z, codes, block_elements=2**12), pick)
    assert torch.equal(brute_force_nearest(z, codes), pick)


def test_nearest_code_keeps_no_graph_and_computes_in_float32():
    # Codes 0.01 apart around 100: bf16 (spacing 0.5 there) would merge most of them.
    codes = (100 + 0.01 * torch.randn(300, 16)).requires_grad_()
    z = (100 + 0.01 * torch.randn(200, 16)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices = nearest_code(z, codes)
        as_bf16 = torch.cdist(z.bfloat16().float(), codes.bfloat16().float()).argmin(1)
    assert not indices.requires_grad
    assert torch.equal(indices, brute_force_nearest(z.detach(), codes.detach()))
    assert not torch.equal(as_bf16, indices)  # the check above can tell the difference


def test_nearest_code_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="nearest_code needs"):
        nearest_code(torch.randn(4, 3), torch.randn(5, 4))
