import pytest
import torch

from vqbench import VQBenchError, create_quantizer
from vqbench.losses import PatchDiscriminator
from vqbench.models import build_autoencoder


def test_vqgan_preset_shapes_and_parameter_counts_match_the_protocol():
    model = build_autoencoder("vqgan", create_quantizer("simvq", codebook_size=1024, dim=128), 128)
    counts = model.parameter_counts()
    # protocol.md section 0: encoder about 24.3M, decoder about 39.9M, discriminator 2.8M.
    assert abs(counts["encoder"] / 24.3e6 - 1) < 0.02
    assert abs(counts["decoder"] / 39.9e6 - 1) < 0.02
    disc = sum(p.numel() for p in PatchDiscriminator().parameters())
    assert abs(disc / 2.8e6 - 1) < 0.02
    with torch.no_grad():
        z = model.encoder(torch.randn(1, 3, 128, 128))
        assert z.shape == (1, 128, 16, 16)
        assert model.decoder(z).shape == (1, 3, 128, 128)
    assert model.downsampling == 8


@pytest.mark.parametrize(
    "preset, overrides, resolution, grid",
    [
        ("tiny", {}, 32, 8),
        ("taming", {"ch": 32, "ch_mult": [1, 2]}, 32, 16),
        ("vit_vqgan", {"width": 64, "depth": 1, "heads": 2, "mlp": 128}, 32, 4),
    ],
)
def test_presets_round_trip_shapes_and_gradients(preset, overrides, resolution, grid):
    quantizer = create_quantizer("vanilla", codebook_size=64, dim=32)
    model = build_autoencoder(preset, quantizer, resolution, **overrides)
    x = torch.randn(2, 3, resolution, resolution)
    x_rec, out = model(x)
    assert x_rec.shape == x.shape and out.indices.shape == (2, grid, grid)
    (x_rec.square().mean() + out.loss).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    torch.testing.assert_close(model.decode_indices(out.indices), x_rec)


def test_bad_model_input():
    q = create_quantizer("vanilla", codebook_size=8, dim=32)
    with pytest.raises(VQBenchError, match="unknown model preset 'vqgann'; did you mean 'vqgan'"):
        build_autoencoder("vqgann", q, 128)
    with pytest.raises(VQBenchError, match="data.resolution=100 is not a positive multiple"):
        build_autoencoder("vqgan", q, 100)
