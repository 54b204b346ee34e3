"""What the reference tests of published-tokenizer adapters share: the fixture's checkpoint,
its architecture as an official config file, and the checks every adapter must pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.reference.fixtures import FIXTURES, Fixture, assert_close
from vqbench.errors import VQBenchError
from vqbench.published import load_published

#: Reconstructions: the same float32 arithmetic up to summation order.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def checkpoint(fixture: Fixture) -> Path:
    return FIXTURES / fixture.settings["checkpoint"]


def official_config(fixture: Fixture, folder: Path, **init_args) -> Path:
    """The fixture's architecture as a LightningCLI config file laid out as the official ones
    (`model.init_args` with `ddconfig`, the data's image size)."""
    args = {"ddconfig": fixture.settings["ddconfig"], **init_args}
    size = fixture.settings["ddconfig"]["resolution"]
    data = {"init_args": {"train": {"params": {"config": {"size": size}}}}}
    file = folder / "config.yaml"
    file.write_text(yaml.safe_dump({"model": {"init_args": args}, "data": data}))
    return file


def lightning_config(fixture: Fixture, folder: Path, keys: tuple[str, ...], **more) -> Path:
    """`official_config` whose `init_args` are the fixture's settings `keys`, then `more`."""
    args = {key: fixture.settings[key] for key in keys}
    return official_config(fixture, folder, **(args | more))


def check_official_model(tokenizer, fixture: Fixture, latents, index_sizes: list[int]) -> None:
    """With the EMA weights (the official evaluation's): `latents` (the adapter's, before
    quantisation) within `TOL`, `check_outputs`, `check_shapes`, and the fixture's small model
    (factor 2, 16x16 images)."""
    assert_close(latents, fixture["latents"], "latents", **TOL)
    check_outputs(tokenizer, fixture)
    check_shapes(tokenizer, fixture, index_sizes)
    assert tokenizer.downsampling == 2 and tokenizer.resolution == 16


def check_training_weights(tokenizer, fixture: Fixture) -> None:
    """Loaded with `use_ema=False`: the official outputs of the training weights, which differ
    from the EMA weights'."""
    check_outputs(tokenizer, fixture, suffix="_raw")
    assert not torch.equal(fixture["indices_raw"], fixture["indices"])  # EMA makes a difference


def check_one_line_errors(name: str, file: Path, cases) -> None:
    """Each `(options, pattern)` in `cases`: loading `file` with `options` fails with one line
    matching `pattern`."""
    for options, pattern in cases:
        with pytest.raises(VQBenchError, match=pattern) as err:
            load_published(name, file, **options)
        assert "\n" not in str(err.value)


def check_vq_outputs(tokenizer, fixture: Fixture) -> None:
    """A `_taming_blocks.VQAutoencoder` adapter: its latents, the decoding of the official
    indices and the reconstruction within `TOL`, the indices exactly."""
    images = fixture["images"]
    assert_close(tokenizer.model.latents(images), fixture["latents"], "latents", **TOL)
    indices = tokenizer.encode(images)
    assert indices.dtype == torch.int64
    assert torch.equal(indices, fixture["indices"]), "indices"
    assert_close(tokenizer.decode(fixture["indices"]), fixture["decoded"], "decode(indices)", **TOL)
    assert_close(tokenizer.reconstruct(images), fixture["reconstruction"], "model(x)", **TOL)


def check_outputs(tokenizer, fixture: Fixture, suffix: str = "") -> None:
    """Indices exactly, the evaluation path's reconstruction and the decoding of the indices
    within `TOL` of the official model's."""
    images = fixture["images"]
    indices = tokenizer.encode(images)
    assert indices.dtype == torch.int64
    assert torch.equal(indices, fixture[f"indices{suffix}"]), "indices differ from the official"
    assert_close(tokenizer.reconstruct(images), fixture[f"reconstruction{suffix}"], "recon", **TOL)
    if not suffix:
        assert_close(tokenizer.decode(indices), fixture["decoded"], "decode(indices)", **TOL)


def check_shapes(tokenizer, fixture: Fixture, index_sizes: list[int]) -> None:
    b, _, h, w = fixture["images"].shape
    f = tokenizer.downsampling
    assert tokenizer.index_sizes() == index_sizes
    indices = tokenizer.encode(fixture["images"])
    assert tuple(indices.shape[:3]) == (b, h // f, w // f)
    assert int(indices.min()) >= 0 and int(indices.max()) < index_sizes[0]
    assert tokenizer.decode(indices).shape == fixture["images"].shape
    assert not tokenizer.training and not any(p.requires_grad for p in tokenizer.parameters())


def damaged_copy(fixture: Fixture, folder: Path, edit) -> Path:
    """The fixture's checkpoint with `edit(state_dict)` applied."""
    file = folder / "damaged.ckpt"
    shutil.copy(checkpoint(fixture), file)
    loaded = torch.load(file, weights_only=True)
    edit(loaded["state_dict"])
    torch.save(loaded, file)
    return file


def check_bad_checkpoints(name: str, fixture: Fixture, folder: Path, key: str, **options) -> None:
    """A missing key, a mis-shaped key and missing EMA weights are one line each."""

    def one_line(file: Path, pattern: str, **more) -> None:
        with pytest.raises(VQBenchError, match=pattern) as err:
            load_published(name, file, **options, **more)
        assert "\n" not in str(err.value)

    missing = damaged_copy(fixture, folder, lambda s: s.pop(key))
    one_line(missing, f"key '{key}' is missing", use_ema=False)
    shaped = damaged_copy(fixture, folder, lambda s: s.update({key: s[key][:1]}))
    one_line(shaped, f"'{key}' has shape", use_ema=False)
    no_ema = damaged_copy(fixture, folder, _drop_ema)
    one_line(no_ema, "holds no EMA weights.*use_ema=False")
    load_published(name, no_ema, **options, use_ema=False)  # the training weights load


def _drop_ema(state: dict) -> None:
    for key in [k for k in state if k.startswith("model_ema.")]:
        del state[key]


def check_presets(presets: dict, fixture: Fixture, keys=("n_embed", "embed_dim")) -> None:
    """Each preset holds the architecture of the official config of the released tokenizer it
    stands for (read from the checkout by the fixture script)."""
    released = fixture.settings["released"]
    assert set(presets) == set(released)
    for preset, official in released.items():
        ours = presets[preset]
        for field, value in ours["ddconfig"].items():
            assert official["ddconfig"][field] == value, f"{preset}: ddconfig.{field}"
        for field in (*keys, "use_ema", "image_size"):
            assert ours[field] == official[field], f"{preset}: {field}"


def check_preset_architectures(cls, expected: dict[str, tuple[int, int, list[int]]]) -> None:
    """Each preset builds (on the meta device: no memory) a tokenizer of the released
    downsampling factor, image size and index sizes, evaluated with the EMA weights."""
    assert set(expected) == set(cls.presets)
    for preset, (factor, size, index_sizes) in expected.items():
        with torch.device("meta"):
            model, ema = cls.build(preset=preset)
        assert (model.downsampling, model.resolution) == (factor, size), preset
        assert model.index_sizes() == index_sizes and ema, preset
