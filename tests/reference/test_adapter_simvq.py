"""`simvq` against SimVQ's image tokenizer (youngsheen/SimVQ, `taming/models/vq.py` `VQModel`).

Fixture: `tools/reference_fixtures/adapter_simvq.py` (the official model with random weights
and small hyperparameters, its Lightning checkpoint and its outputs). The adapter loads the
checkpoint as it is and must give the official indices exactly and its reconstructions within
float32 summation error, with the EMA weights (the official evaluation's) and with the training
weights.
"""

from __future__ import annotations

import pytest
import torch
from vqbench_adapters.simvq import PRESETS, SimVQ

from tests.reference.fixtures import load_fixture
from tests.reference.published_checks import (
    check_bad_checkpoints,
    check_official_model,
    check_one_line_errors,
    check_preset_architectures,
    check_training_weights,
    checkpoint,
    lightning_config,
)
from vqbench.published import load_published

ADAPTERS = ("simvq",)


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("adapter_simvq")


def config(fixture, folder, **more):
    return lightning_config(fixture, folder, ("quantconfig", "use_ema"), **more)


def load(fixture, folder, **options):
    return load_published("simvq", checkpoint(fixture), config=config(fixture, folder), **options)


def test_the_official_indices_and_reconstructions(fixture, tmp_path) -> None:
    tokenizer = load(fixture, tmp_path)
    index_sizes = [fixture.settings["quantconfig"]["params"]["n_e"]]
    check_official_model(tokenizer, fixture, tokenizer.encoder(fixture["images"]), index_sizes)


def test_the_training_weights_without_ema(fixture, tmp_path) -> None:
    check_training_weights(load(fixture, tmp_path, use_ema=False), fixture)


def test_a_checkpoint_that_does_not_fit_is_one_line(fixture, tmp_path) -> None:
    options = {"config": config(fixture, tmp_path)}
    key = "quantize.embedding_proj.weight"
    check_bad_checkpoints("simvq", fixture, tmp_path, key, **options)


def test_bad_options_are_one_line(fixture, tmp_path) -> None:
    quant = {"params": {"n_e": 32, "e_dim": 4}}
    cases = [
        ({"preset": "imagenet128_4k"}, "unknown preset 'imagenet128_4k'; pick one of"),
        ({"config": tmp_path / "absent.yaml"}, "does not exist"),
        ({"legacy": True}, "unknown option 'legacy' for simvq"),
        ({"config": config(fixture, tmp_path, quantconfig=quant)}, "e_dim = ddconfig.z_channels"),
    ]
    check_one_line_errors("simvq", checkpoint(fixture), cases)


def test_presets_are_the_repository_config_with_the_released_codebook_sizes(fixture) -> None:
    """The released configs are not in the repository: each preset is its ImageNet config
    with the codebook size of a release in the README's table."""
    official = fixture.settings["released"]
    sizes = fixture.settings["released_codebook_sizes"]
    assert {f"imagenet128_{name.removeprefix('simvq_')}" for name in sizes} == set(PRESETS)
    for name, size in sizes.items():
        ours = PRESETS[f"imagenet128_{name.removeprefix('simvq_')}"]
        for field, value in ours["ddconfig"].items():
            assert official["ddconfig"][field] == value, f"{name}: ddconfig.{field}"
        assert ours["quantconfig"]["params"]["n_e"] == size
        assert ours["quantconfig"]["params"]["e_dim"] == official["quantconfig"]["params"]["e_dim"]
        assert (ours["use_ema"], ours["image_size"]) == (official["use_ema"], 128)


def test_presets_build_the_released_architectures() -> None:
    sizes = {"1k": 1024, "8k": 8192, "65k": 65536, "262k": 262144}
    check_preset_architectures(SimVQ, {f"imagenet128_{n}": (8, 128, [k]) for n, k in sizes.items()})


def test_encoding_a_few_images_at_a_time_gives_the_same_indices(fixture, tmp_path, monkeypatch):
    tokenizer = load(fixture, tmp_path)
    monkeypatch.setattr("vqbench_adapters.simvq.LOOKUP_BATCH", 1)
    assert torch.equal(tokenizer.encode(fixture["images"]), fixture["indices"])
