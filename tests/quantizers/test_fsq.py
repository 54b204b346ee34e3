import pytest
import torch
from vector_quantize_pytorch import FSQ as ReferenceFSQ

from vqbench import VQBenchError, create_quantizer


@pytest.mark.parametrize("levels", [[8, 8, 8, 5, 5, 5], [8, 5, 5, 5], [7, 5, 5, 5, 5], [3, 4, 6]])
def test_values_and_indices_equal_vector_quantize_pytorch(levels):
    ours = create_quantizer("fsq", levels=levels, dim=len(levels))
    reference = ReferenceFSQ(levels=levels)
    z = torch.randn(4, len(levels), 6, 6) * 2
    out = ours(z)
    ref_codes, ref_indices = reference(z)  # 4-D inputs are channel-first there too
    torch.testing.assert_close(out.z_q, ref_codes)
    assert torch.equal(out.indices, ref_indices.long())
    assert ours.codebook_size == reference.codebook_size


def test_default_levels_give_64000_codes_and_no_loss():
    q = create_quantizer("fsq", dim=128)
    assert q.codebook_size == 64000
    assert q(torch.randn(1, 128, 2, 2)).loss.item() == 0.0


def test_every_index_decodes_to_a_distinct_grid_point():
    q = create_quantizer("fsq", levels=[5, 4, 3], dim=3)
    codes = q.indices_to_codes(torch.arange(60))
    assert torch.equal(q.codes_to_indices(codes), torch.arange(60))
    assert codes.unique(dim=0).shape[0] == 60


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(codebook_size=65536), "codebook_size=65536 disagrees with levels"),
        (dict(levels=[8, 1]), "every level must be an integer >= 2"),
    ],
)
def test_bad_levels(params, message):
    with pytest.raises(VQBenchError, match=message):
        create_quantizer("fsq", **params)
