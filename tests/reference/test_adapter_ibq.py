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

from tests.reference.fixtures import assert_close, load_fixture
from tests.reference.published_checks import (
    check_bad_checkpoints,
    check_outputs,
    check_preset_architectures,
    check_presets,
    check_shapes,
    checkpoint,
    official_config,
)
from vqbench.errors import VQBenchError
from vqbench.published import load_published

ADAPTERS = ("ibq",)
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("adapter_ibq")


def config(fixture, folder, **more):
    s = fixture.settings
    args = {"n_embed": s["n_embed"], "embed_dim": s["embed_dim"], "use_ema": s["use_ema"]}
    return official_config(fixture, folder, **(args | more))


def load(fixture, folder, **options):
    return load_published("ibq", checkpoint(fixture), config=config(fixture, folder), **options)


def test_the_official_indices_and_reconstructions(fixture, tmp_path) -> None:
    tokenizer = load(fixture, tmp_path)
    latents = tokenizer.quant_conv(tokenizer.encoder(fixture["images"]))
    assert_close(latents, fixture["latents"], "latents", **TOL)
    check_outputs(tokenizer, fixture)
    check_shapes(tokenizer, fixture, [fixture.settings["n_embed"]])
    assert tokenizer.downsampling == 2 and tokenizer.resolution == 16


def test_the_training_weights_without_ema(fixture, tmp_path) -> None:
    check_outputs(load(fixture, tmp_path, use_ema=False), fixture, suffix="_raw")
    assert not torch.equal(fixture["indices_raw"], fixture["indices"])  # EMA makes a difference


def test_a_checkpoint_that_does_not_fit_is_one_line(fixture, tmp_path) -> None:
    options = {"config": config(fixture, tmp_path)}
    check_bad_checkpoints("ibq", fixture, tmp_path, "quantize.embedding.weight", **options)


def test_bad_options_are_one_line(fixture, tmp_path) -> None:
    file = checkpoint(fixture)
    for options, pattern in (
        ({"preset": "imagenet256_4096"}, "unknown preset 'imagenet256_4096'; pick one of"),
        ({"config": tmp_path / "absent.yaml"}, "does not exist"),
        ({"use_entropy_loss": True}, "unknown option 'use_entropy_loss' for ibq"),
        ({"preset": "imagenet256_1024", "config": config(fixture, tmp_path)}, "not both"),
    ):
        with pytest.raises(VQBenchError, match=pattern) as err:
            load_published("ibq", file, **options)
        assert "\n" not in str(err.value)


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
