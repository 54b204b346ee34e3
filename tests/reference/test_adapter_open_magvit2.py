"""`open_magvit2` against Open-MAGVIT2's `VQModel` (TencentARC/SEED-Voken).

Fixture: `tools/reference_fixtures/adapter_open_magvit2.py` (the official model with random
weights and small hyperparameters, its Lightning checkpoint and its outputs). The adapter loads
the checkpoint as it is and must give the official indices exactly and its reconstructions
within float32 summation error: with the EMA weights (the official evaluation's), with the
training weights, and in the factorised index form.
"""

from __future__ import annotations

import pytest
import torch
from vqbench_adapters.open_magvit2 import PRESETS, OpenMAGVIT2

from tests.reference.fixtures import assert_close, load_fixture
from tests.reference.published_checks import (
    TOL,
    check_bad_checkpoints,
    check_official_model,
    check_one_line_errors,
    check_preset_architectures,
    check_presets,
    check_training_weights,
    checkpoint,
    lightning_config,
)
from vqbench.published import load_published

ADAPTERS = ("open_magvit2",)


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("adapter_open_magvit2")


def config(fixture, folder, **more):
    return lightning_config(fixture, folder, ("n_embed", "embed_dim", "use_ema"), **more)


def load(fixture, folder, **options):
    file = checkpoint(fixture)
    return load_published("open_magvit2", file, config=config(fixture, folder), **options)


def test_the_official_indices_and_reconstructions(fixture, tmp_path) -> None:
    tokenizer = load(fixture, tmp_path)
    index_sizes = [2 ** fixture.settings["embed_dim"]]
    check_official_model(tokenizer, fixture, tokenizer.encoder(fixture["images"]), index_sizes)


def test_the_training_weights_without_ema(fixture, tmp_path) -> None:
    check_training_weights(load(fixture, tmp_path, use_ema=False), fixture)


def test_the_pretraining_class_loads_the_same_way(fixture, tmp_path) -> None:
    """`lfqgan_pretrain.py`'s `VQModel` (the `pretrain_*` tokenizers) on the same state dict."""
    tokenizer = load(fixture, tmp_path)
    assert torch.equal(tokenizer.encode(fixture["images"]), fixture["indices_pretrain"])
    recon = tokenizer.reconstruct(fixture["images"])
    assert_close(recon, fixture["reconstruction_pretrain"], "pretrain recon", **TOL)


def test_factorised_indices(fixture, tmp_path) -> None:
    bits = fixture.settings["factorized_bits"]
    file = config(fixture, tmp_path, token_factorization=True, factorized_bits=bits)
    tokenizer = load_published("open_magvit2", checkpoint(fixture), config=file)
    indices = tokenizer.encode(fixture["images"])
    assert torch.equal(indices, fixture["indices_factorized"])
    assert tokenizer.index_sizes() == [2**b for b in bits]
    assert_close(tokenizer.decode(indices), fixture["decoded"], "decode(factorised)", **TOL)
    # the option overrides the config's choice
    file = config(fixture, tmp_path, factorized_bits=bits)
    tokenizer = load_published(
        "open_magvit2", checkpoint(fixture), config=file, token_factorization=True
    )
    assert torch.equal(tokenizer.encode(fixture["images"]), fixture["indices_factorized"])


def test_a_checkpoint_that_does_not_fit_is_one_line(fixture, tmp_path) -> None:
    options = {"config": config(fixture, tmp_path)}
    key = "decoder.adaptive.0.gamma.weight"
    check_bad_checkpoints("open_magvit2", fixture, tmp_path, key, **options)


def test_bad_options_are_one_line(fixture, tmp_path) -> None:
    cases = [
        ({"preset": "imagenet_512"}, "unknown preset 'imagenet_512'; pick one of"),
        ({"config": tmp_path / "absent.yaml"}, "does not exist"),
        ({"colour": 1}, "unknown option 'colour' for open_magvit2"),
        ({"config": config(fixture, tmp_path, embed_dim=4)}, "LFQ needs embed_dim"),
    ]
    check_one_line_errors("open_magvit2", checkpoint(fixture), cases)


def test_presets_are_the_released_configs(fixture) -> None:
    check_presets(PRESETS, fixture)


def test_presets_build_the_released_architectures() -> None:
    expected = {
        "imagenet_128_L": (8, 128, [2**18]),
        "imagenet_256_L": (16, 256, [2**18]),
        "pretrain_256_262144": (16, 256, [2**18]),
        "pretrain_256_16384": (16, 256, [2**14]),
    }
    check_preset_architectures(OpenMAGVIT2, expected)
