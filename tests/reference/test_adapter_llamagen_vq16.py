"""The adapter `llamagen_vq16` against LlamaGen's own `VQModel`.

Fixture: `tools/reference_fixtures/adapter_llamagen_vq16.py` built the official `VQModel` with
random weights and small settings, saved its checkpoint in `vq_train.py`'s layout (`{"model":
..., "optimizer": ..., ...}`, with the `codebook_used` buffer) and its latents, indices and
reconstructions on fixed images. The adapter loads that file through `load_published` and must
give the same indices (exactly) and reconstructions (to 1e-5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from vqbench_adapters.llamagen import PRESETS, LlamaGenVQ, architecture

from tests.reference.fixtures import FIXTURES, load_fixture
from tests.reference.published_checks import check_one_line_errors, check_shapes
from tests.reference.published_checks import check_vq_outputs as check_outputs
from vqbench.errors import VQBenchError
from vqbench.published import load_published, read_checkpoint

NAME = "llamagen_vq16"
CHECKPOINT = FIXTURES / f"{NAME}.pt"


@pytest.fixture(scope="module")
def fixture():
    return load_fixture(NAME)


def options(fixture) -> dict:
    """The fixture's `ModelArgs` and `Encoder`/`Decoder` settings as adapter options."""
    args = dict(fixture.settings["model_args"])
    del args["codebook_show_usage"]  # the adapter follows the file
    return args | fixture.settings["encoder_decoder"]


@pytest.fixture(scope="module")
def tokenizer(fixture) -> LlamaGenVQ:
    return load_published(NAME, CHECKPOINT, **options(fixture))


def test_indices_and_reconstructions_equal_the_official_model(fixture, tokenizer) -> None:
    assert len(fixture["indices"].unique()) > 10, "the fixture's indices use few codes"
    check_outputs(tokenizer, fixture)
    assert tokenizer.model.quantize.codebook_used.shape == (65536,)


def test_shapes_index_sizes_and_downsampling(fixture, tokenizer) -> None:
    check_shapes(tokenizer, fixture, [fixture.settings["model_args"]["codebook_size"]])
    assert tokenizer.downsampling == 2


def test_ema_weights_by_default_as_the_official_evaluation_and_a_file_without_the_usage_buffer(
    fixture, tmp_path
) -> None:
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    del state["quantize.codebook_used"]
    other = {k: torch.zeros_like(v) for k, v in state.items()}
    torch.save({"model": other, "ema": state}, tmp_path / "ema.pt")
    tokenizer = load_published(NAME, tmp_path / "ema.pt", weights="ema", **options(fixture))
    check_outputs(tokenizer, fixture)
    assert not hasattr(tokenizer.model.quantize, "codebook_used")
    check_outputs(load_published(NAME, tmp_path / "ema.pt", **options(fixture)), fixture)
    model = load_published(NAME, tmp_path / "ema.pt", weights="model", **options(fixture))
    assert torch.equal(model.model.quantize.embedding.weight, other["quantize.embedding.weight"])


@pytest.mark.parametrize(
    ("preset", "official", "millions"), [("vq_ds16_c2i", "VQ_16", 72), ("vq_ds8_c2i", "VQ_8", 70)]
)
def test_presets_are_the_released_architectures(fixture, preset, official, millions) -> None:
    """Every weight's shape equals that of the official `VQ_16()` / `VQ_8()`; the parameter
    count rounds to the README's (72M, 70M)."""
    with torch.device("meta"):
        model = LlamaGenVQ(architecture(preset, {}), usage_buffer=True).model
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == fixture.settings["released_shapes"][official]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_encodes_and_decodes_at_its_downsampling(preset: str) -> None:
    torch.manual_seed(0)
    tokenizer = LlamaGenVQ(architecture(preset, {})).eval()
    f = tokenizer.downsampling
    assert f == {"vq_ds16_c2i": 16, "vq_ds8_c2i": 8}[preset]
    indices = tokenizer.encode(torch.rand(1, 3, 2 * f, 3 * f) * 2 - 1)
    assert indices.shape == (1, 2, 3) and int(indices.max()) < 16384
    assert tokenizer.decode(indices).shape == (1, 3, 2 * f, 3 * f)


def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_key(fixture, tmp_path) -> None:
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    del state["decoder.conv_blocks.0.attn.1.proj_out.bias"]
    torch.save({"model": state}, tmp_path / "missing.pt")
    match = r"'decoder\.conv_blocks\.0\.attn\.1\.proj_out\.bias' is missing"
    with pytest.raises(VQBenchError, match=match):
        load_published(NAME, tmp_path / "missing.pt", **options(fixture))
    with pytest.raises(VQBenchError) as err:  # the small model read as the released VQ-16
        load_published(NAME, CHECKPOINT)
    assert "'encoder.conv_in.weight' has shape (32, 3, 3, 3) in the file" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_training_scripts_args_namespace_needs_no_trust(fixture, tmp_path) -> None:
    """`vq_train.py` pickles its `argparse.Namespace` as `args`; other objects need trust."""
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    args = argparse.Namespace(vq_model="VQ-16", codebook_size=64)
    torch.save({"model": state, "args": args}, tmp_path / "args.pt")
    with pytest.raises(VQBenchError, match="--trust-checkpoint"):
        read_checkpoint(tmp_path / "args.pt")  # the file holds a pickled object
    check_outputs(load_published(NAME, tmp_path / "args.pt", **options(fixture)), fixture)
    torch.save({"model": state, "args": args, "path": Path("x")}, tmp_path / "other.pt")
    with pytest.raises(VQBenchError, match="--trust-checkpoint"):
        load_published(NAME, tmp_path / "other.pt", **options(fixture))
    trusted = load_published(NAME, tmp_path / "other.pt", trust=True, **options(fixture))
    check_outputs(trusted, fixture)


def test_bad_options_are_one_line(fixture) -> None:
    cases = [
        ({"preset": "vq_ds32"}, "no preset 'vq_ds32'"),
        ({"weights": "best"}, "choose auto, model or ema"),
        ({"weights": "ema"}, "holds no 'ema' weights"),
        ({"norm_type": "batch"}, "unknown parameter 'norm_type'"),
        ({"ch": 16}, "ch=16 times channel multiplier 1 is not a multiple of 32"),
        ({"codebook_size": 0}, "codebook_size=0 is invalid"),
    ]
    check_one_line_errors(NAME, CHECKPOINT, cases)


def test_a_checkpoint_path_that_is_not_a_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(VQBenchError, match="does not exist"):
        load_published(NAME, tmp_path / "vq_ds16_c2i.pt")
