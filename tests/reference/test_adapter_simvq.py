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

from tests.reference.fixtures import assert_close, load_fixture
from tests.reference.published_checks import (
    check_bad_checkpoints,
    check_outputs,
    check_preset_architectures,
    check_shapes,
    checkpoint,
    official_config,
)
from vqbench.errors import VQBenchError
from vqbench.published import load_published

ADAPTERS = ("simvq",)
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("adapter_simvq")


def config(fixture, folder, **more):
    s = fixture.settings
    args = {"quantconfig": s["quantconfig"], "use_ema": s["use_ema"]}
    return official_config(fixture, folder, **(args | more))


def load(fixture, folder, **options):
    return load_published("simvq", checkpoint(fixture), config=config(fixture, folder), **options)


def test_the_official_indices_and_reconstructions(fixture, tmp_path) -> None:
    tokenizer = load(fixture, tmp_path)
    assert_close(tokenizer.encoder(fixture["images"]), fixture["latents"], "latents", **TOL)
    check_outputs(tokenizer, fixture)
    check_shapes(tokenizer, fixture, [fixture.settings["quantconfig"]["params"]["n_e"]])
    assert tokenizer.downsampling == 2 and tokenizer.resolution == 16


def test_the_training_weights_without_ema(fixture, tmp_path) -> None:
    check_outputs(load(fixture, tmp_path, use_ema=False), fixture, suffix="_raw")
    assert not torch.equal(fixture["indices_raw"], fixture["indices"])  # EMA makes a difference


def test_a_checkpoint_that_does_not_fit_is_one_line(fixture, tmp_path) -> None:
    options = {"config": config(fixture, tmp_path)}
    key = "quantize.embedding_proj.weight"
    check_bad_checkpoints("simvq", fixture, tmp_path, key, **options)


def test_bad_options_are_one_line(fixture, tmp_path) -> None:
    file = checkpoint(fixture)
    quant = {"params": {"n_e": 32, "e_dim": 4}}
    for options, pattern in (
        ({"preset": "imagenet128_4k"}, "unknown preset 'imagenet128_4k'; pick one of"),
        ({"config": tmp_path / "absent.yaml"}, "does not exist"),
        ({"legacy": True}, "unknown option 'legacy' for simvq"),
        ({"config": config(fixture, tmp_path, quantconfig=quant)}, "e_dim = ddconfig.z_channels"),
    ):
        with pytest.raises(VQBenchError, match=pattern) as err:
            load_published("simvq", file, **options)
        assert "\n" not in str(err.value)


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
