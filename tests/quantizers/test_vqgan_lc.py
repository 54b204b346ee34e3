import pytest
import timm
import torch
from safetensors.torch import save_file
from sklearn.cluster import MiniBatchKMeans

from vqbench import VQBenchError, create_quantizer


def image_batches(n_batches=4, size=32):
    generator = torch.Generator().manual_seed(0)
    for _ in range(n_batches):
        yield torch.rand(8, 3, size, size, generator=generator) * 2 - 1


def test_patch_features_are_non_overlapping_rgb_patches():
    q = create_quantizer("vqgan_lc", codebook_size=16, dim=8, patch_size=4)
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    features = q.extract_features(images)
    assert features.shape == (2 * 4, 48)
    # The first feature is image 0's top-left 4x4 patch, channel by channel.
    torch.testing.assert_close(features[0], images[0, :, :4, :4].reshape(-1))


def test_init_from_data_clusters_features_into_the_frozen_codebook():
    q = create_quantizer("vqgan_lc", codebook_size=32, dim=8, lookup_dim=4, patch_size=4)
    info = q.init_from_data(image_batches())
    assert info["extractor"] == "patches"
    assert info["features_clustered"] == 4 * 8 * 64
    features = torch.cat([q.extract_features(b) for b in image_batches()])
    # Every centre is the mean of the features nearest to it (a k-means fixed point), up to
    # MiniBatchKMeans' last partial update; compare with scikit-learn run the same way.
    reference = (
        MiniBatchKMeans(n_clusters=32, random_state=0, n_init=1, max_iter=20, batch_size=4096)
        .fit(features.numpy())
        .cluster_centers_
    )
    torch.testing.assert_close(q.features, torch.from_numpy(reference).float())
    assert not q.features.requires_grad
    assert "features" in q.state_dict()
    out = q(torch.randn(2, 8, 4, 4))
    out.loss.backward()
    assert q.projector.weight.grad.abs().sum() > 0


def test_too_few_features_for_the_codebook():
    q = create_quantizer("vqgan_lc", codebook_size=4096, dim=8)
    with pytest.raises(
        VQBenchError,
        match="k-means needs at least as many features as codes: 512 features for 4096 codes",
    ):
        q.init_from_data(image_batches(n_batches=1))


def test_timm_extractor_loads_weights_from_a_local_file(tmp_path):
    model = timm.create_model("test_vit", pretrained=False, num_classes=0)
    weights = tmp_path / "test_vit.safetensors"
    save_file(model.state_dict(), str(weights))
    q = create_quantizer(
        "vqgan_lc",
        codebook_size=16,
        dim=8,
        extractor="test_vit",
        extractor_weights=str(weights),
        pool_to=2,
    )
    extractor = q._extractor[0]
    assert torch.equal(extractor.state_dict()["cls_token"], model.state_dict()["cls_token"])
    assert q.features.shape[1] == model.num_features
    feats = q.extract_features(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert feats.shape == (3 * 4, model.num_features)
    assert "features" in q.state_dict() and not any("_extractor" in k for k in q.state_dict())


def test_timm_extractor_without_weights_says_how_to_provide_them(tmp_path):
    with pytest.raises(VQBenchError) as err:
        create_quantizer(
            "vqgan_lc",
            codebook_size=16,
            dim=8,
            extractor="test_vit",
            extractor_weights=str(tmp_path / "missing.safetensors"),
        )
    message = str(err.value)
    assert (
        "vqgan_lc.extractor='test_vit' needs pretrained weights that could not be loaded" in message
    )
    assert "set extractor_weights" in message and "\n" not in message


def test_unknown_extractor():
    with pytest.raises(VQBenchError, match="neither 'patches' nor a timm model name"):
        create_quantizer("vqgan_lc", codebook_size=16, dim=8, extractor="clip_vit_huge_typo")
