"""`ibq` against IBQ's tokenizer (TencentARC/SEED-Voken, `src/IBQ/models/ibqgan.py` `IBQ`).

Fixture: `tools/reference_fixtures/adapter_ibq.py` (the official model with random weights and
small hyperparameters, its Lightning checkpoint and its outputs). The adapter loads the
checkpoint as it is and must give the official indices exactly and its reconstructions within
float32 summation error, with the EMA weights (the official evaluation's) and with the training
weights.
"""

from __future__ import annotations

import pytest
import torch
from vqbench_adapters.ibq import IBQ, PRESETS

from tests.reference.fixtures import load_fixture
from tests.reference.published_checks import (
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

ADAPTERS = ("ibq",)


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("adapter_ibq")


def config(fixture, folder, **more):
    return lightning_config(fixture, folder, ("n_embed", "embed_dim", "use_ema"), **more)


def load(fixture, folder, **options):
    return load_published("ibq", checkpoint(fixture), config=config(fixture, folder), **options)


def test_the_official_indices_and_reconstructions(fixture, tmp_path) -> None:
    tokenizer = load(fixture, tmp_path)
    latents = tokenizer.quant_conv(tokenizer.encoder(fixture["images"]))
    check_official_model(tokenizer, fixture, latents, [fixture.settings["n_embed"]])


def test_the_training_weights_without_ema(fixture, tmp_path) -> None:
    check_training_weights(load(fixture, tmp_path, use_ema=False), fixture)


def test_a_checkpoint_that_does_not_fit_is_one_line(fixture, tmp_path) -> None:
    options = {"config": config(fixture, tmp_path)}
    check_bad_checkpoints("ibq", fixture, tmp_path, "quantize.embedding.weight", **options)


def test_bad_options_are_one_line(fixture, tmp_path) -> None:
    cases = [
        ({"preset": "imagenet256_4096"}, "unknown preset 'imagenet256_4096'; pick one of"),
        ({"config": tmp_path / "absent.yaml"}, "does not exist"),
        ({"use_entropy_loss": True}, "unknown option 'use_entropy_loss' for ibq"),
        ({"preset": "imagenet256_1024", "config": config(fixture, tmp_path)}, "not both"),
    ]
    check_one_line_errors("ibq", checkpoint(fixture), cases)


def test_presets_are_the_released_configs(fixture) -> None:
    check_presets(PRESETS, fixture)


def test_presets_build_the_released_architectures() -> None:
    codes = (1024, 8192, 16384, 262144)
    expected = {f"imagenet256_{k}": (16, 256, [k]) for k in codes}
    expected |= {f"pretrain256_{k}": (16, 256, [k]) for k in (16384, 262144)}
    check_preset_architectures(IBQ, expected)


def test_encoding_a_few_images_at_a_time_gives_the_same_indices(fixture, tmp_path, monkeypatch):
    tokenizer = load(fixture, tmp_path)
    monkeypatch.setattr("vqbench_adapters.ibq.LOOKUP_BATCH", 1)
    assert torch.equal(tokenizer.encode(fixture["images"]), fixture["indices"])
