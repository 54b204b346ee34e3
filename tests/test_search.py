import pytest
import torch

from tests.helpers import assert_nearest, brute_force_nearest
from vqbench.search import CPU_BLOCK_ELEMENTS_PER_THREAD, cpu_block_elements, nearest_code


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


def test_ties_between_chunks_go_to_the_lower_index():
    # Small integers and a codebook symmetric about 0 (its mean, which the search subtracts,
    # is exactly 0): every distance is exact, so a repeated code ties exactly with its copy.
    a = torch.randint(-3, 4, (1500, 8), generator=torch.Generator().manual_seed(0)).float()
    a[1400:1500] = a[0:100]  # copies in another 1,024-code chunk
    codes = torch.cat([a, -a])
    z = codes[torch.arange(0, 3000, 7)]
    first = torch.stack([(codes == row).all(1).nonzero()[0, 0] for row in z])
    for block_elements in (2**12, 2**20, None):
        assert torch.equal(nearest_code(z, codes, block_elements=block_elements), first)


def test_the_cpu_block_grows_with_the_threads():
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            assert cpu_block_elements() == n * CPU_BLOCK_ELEMENTS_PER_THREAD
    finally:
        torch.set_num_threads(threads)
