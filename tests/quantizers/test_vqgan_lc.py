import pytest
import timm
import torch
from safetensors.torch import save_file
from sklearn.cluster import MiniBatchKMeans

from vqbench import VQBenchError, create_quantizer


def image_batches(n_batches=4, size=32):
    generator = torch.Generator().manual_seed(0)
    for _ in range(n_batches):
        yield torch.rand(8, 3, size, size, generator=generator) * 2 - 1, None


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
    assert "full-batch Lloyd" in info["kmeans"]
    features = torch.cat([q.extract_features(b) for b, _ in image_batches()])
    # Full-batch Lloyd to the reference's tolerance: every centre is the mean of the features
    # nearest to it (a k-means fixed point) within the last step's shift (< 0.01 in all).
    assign = torch.cdist(features, q.features).argmin(1)
    assert assign.unique().numel() == 32
    for k in range(32):
        torch.testing.assert_close(q.features[k], features[assign == k].mean(0), rtol=0, atol=1e-2)
    assert not q.features.requires_grad
    assert "features" in q.state_dict()
    out = q(torch.randn(2, 8, 4, 4))
    out.loss.backward()
    assert q.projector.weight.grad.abs().sum() > 0


def test_the_minibatch_option_is_scikit_learns_minibatch_kmeans():
    q = create_quantizer(
        "vqgan_lc", codebook_size=32, dim=8, lookup_dim=4, patch_size=4, kmeans_method="minibatch"
    )
    info = q.init_from_data(image_batches())
    assert "mini-batch k-means++" in info["kmeans"]
    features = torch.cat([q.extract_features(b) for b, _ in image_batches()])
    reference = (
        MiniBatchKMeans(n_clusters=32, random_state=0, n_init=1, max_iter=20, batch_size=4096)
        .fit(features.numpy())
        .cluster_centers_
    )
    torch.testing.assert_close(q.features, torch.from_numpy(reference).float())


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
        projection="none",
        pool_to=2,
    )
    extractor = q.extractor()
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


def test_clip_style_patch_features_go_through_the_final_norm_and_the_projection(tmp_path):
    """The reference: `ln_post(tokens) @ proj` on every patch token, then 4x4 average pooling."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()  # its head: 64 -> 1000
    weights = tmp_path / "test_vit.safetensors"
    save_file(model.state_dict(), str(weights))
    q = create_quantizer(
        "vqgan_lc", codebook_size=16, dim=8, extractor="test_vit", extractor_weights=str(weights)
    )
    assert q.features.shape[1] == 1000  # the projection's width, not the trunk's (64)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = q.extract_features(images)
    cfg = model.pretrained_cfg
    x = torch.nn.functional.interpolate(
        (images + 1) / 2, size=cfg["input_size"][1:], mode=cfg["interpolation"], antialias=True
    )
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
        projected = tokens @ model.head.weight.t() + model.head.bias
    side = int(projected.shape[1] ** 0.5)
    grid = projected.transpose(1, 2).reshape(2, 1000, side, side)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grid, 4).flatten(2).transpose(1, 2)
    torch.testing.assert_close(feats, pooled.reshape(-1, 1000))


def class_folder(root, colours, counts, size=32):
    """An image folder made by the test: class c holds counts[c] images of colour c (+ noise)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for c, (colour, n) in enumerate(zip(colours, counts)):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            pixels = torch.tensor(colour).view(1, 1, 3) + 8 * torch.randn(
                size, size, 3, generator=generator
            )
            Image.fromarray(pixels.clamp(0, 255).byte().numpy()).save(
                root / f"class{c}" / f"{i}.png"
            )
    return root


COLOURS = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20)]


def test_kmeans_sees_a_seeded_class_balanced_sample_of_the_training_set(tmp_path):
    """Folder order would give the first classes only; the sample takes every class alike."""
    from vqbench.data import ImageFolder, balanced_order, class_labels, labelled_batches

    data = ImageFolder(class_folder(tmp_path / "train", COLOURS, [40, 10, 10, 40]), 16, True)
    labels = class_labels(data)
    order = balanced_order(labels, len(data), seed=3)
    assert sorted(order) == list(range(len(data))) and order == balanced_order(labels, 100, 3)
    first = [labels[i] for i in order[:20]]
    assert [first.count(c) for c in range(4)] == [5, 5, 5, 5]
    q = create_quantizer(
        "vqgan_lc", codebook_size=8, dim=8, patch_size=16, pool_to=1, max_features=24
    )
    info = q.init_from_data(labelled_batches(data, order, batch_size=8))
    assert info["features_clustered"] == 24 and info["classes"] == 4


def test_per_class_kmeans_gives_every_class_its_share_of_the_centres(tmp_path):
    from vqbench.data import ImageFolder, balanced_order, class_labels, labelled_batches

    data = ImageFolder(class_folder(tmp_path / "train", COLOURS, [12, 12, 12, 12]), 16, True)
    order = balanced_order(class_labels(data), len(data), seed=0)
    q = create_quantizer(
        "vqgan_lc", codebook_size=10, dim=8, patch_size=4, kmeans="per_class", lookup_dim=4
    )
    q.init_from_data(labelled_batches(data, order, batch_size=16))
    centres = (q.features.view(10, 3, 4, 4).mean((2, 3)) + 1) * 127.5  # mean colour of a centre
    nearest = torch.cdist(centres, torch.tensor(COLOURS, dtype=torch.float32)).argmin(1)
    assert torch.bincount(nearest, minlength=4).tolist() == [3, 3, 2, 2]  # 10 = 3 + 3 + 2 + 2
    with pytest.raises(VQBenchError, match="needs labelled images"):
        q.init_from_data(image_batches())


def test_the_reference_recipe_uses_vqgan_lcs_loss_weights():
    q = create_quantizer("vqgan_lc", codebook_size=16, dim=8)  # the reference is the default
    assert q.params.recipe == "reference"
    assert (q.params.beta, q.params.codebook_weight) == (0.1, 0.033)
    for shared in ("shared", "harmonised"):  # harmonised: the old name
        q = create_quantizer("vqgan_lc", codebook_size=16, dim=8, recipe=shared)
        assert (q.params.beta, q.params.codebook_weight) == (0.25, 1.0)
    q = create_quantizer("vqgan_lc", codebook_size=16, dim=8, recipe="reference", beta=0.25)
    assert (q.params.beta, q.params.codebook_weight) == (0.25, 0.033)  # explicit values win
