"""The adapter `taming_vqgan` against taming-transformers' own `VQModel`.

Fixture: `tools/reference_fixtures/adapter_taming_vqgan.py` built the official `VQModel` with random
weights from a small `model.yaml`, saved its Lightning checkpoint (with `loss.*` keys) and its
latents, indices and reconstructions on fixed images. The adapter loads that checkpoint through
`load_published` and must give the same indices (exactly) and reconstructions (to 1e-5).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from vqbench_adapters.taming_vqgan import PRESETS, TamingVQGAN, parse_params

from tests.reference.fixtures import FIXTURES, assert_close, load_fixture
from tests.reference.published_checks import (
    TOL,
    check_one_line_errors,
    check_shapes,
    check_vq_outputs,
)
from vqbench.errors import VQBenchError
from vqbench.published import load_published, read_checkpoint

NAME = "taming_vqgan"
CHECKPOINT, CONFIG = FIXTURES / f"{NAME}.ckpt", FIXTURES / f"{NAME}.yaml"


@pytest.fixture(scope="module")
def fixture():
    return load_fixture(NAME)


@pytest.fixture(scope="module")
def tokenizer() -> TamingVQGAN:
    return load_published(NAME, CHECKPOINT, config=CONFIG)


def test_indices_and_reconstructions_equal_the_official_model(fixture, tokenizer) -> None:
    assert len(fixture["indices"].unique()) > 10, "the fixture's indices use few codes"
    check_vq_outputs(tokenizer, fixture)


def test_shapes_index_sizes_and_downsampling(fixture, tokenizer) -> None:
    params = fixture.settings["params"]
    check_shapes(tokenizer, fixture, [params["n_embed"]])
    assert tokenizer.downsampling == 2 ** (len(params["ddconfig"]["ch_mult"]) - 1) == 2
    assert tokenizer.resolution == params["ddconfig"]["resolution"]


def test_the_checkpoint_holds_training_loss_keys_that_are_ignored() -> None:
    state = torch.load(CHECKPOINT, weights_only=True)["state_dict"]
    assert any(key.startswith("loss.") for key in state)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_the_released_imagenet_architecture(fixture, preset: str) -> None:
    """The official `configs/imagenet_vqgan.yaml` (f16, 1,024 codes), as recorded with every
    weight's shape; the released f16-16384 differs in `n_embed` only."""
    official = fixture.settings["imagenet_vqgan"]
    params = PRESETS[preset]
    assert params["ddconfig"] == official["params"]["ddconfig"]
    assert params["embed_dim"] == official["params"]["embed_dim"]
    with torch.device("meta"):
        model = TamingVQGAN(parse_params(params, preset)).model
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    n_embed = params["n_embed"]
    expected = dict(official["shapes"], **{"quantize.embedding.weight": [n_embed, 256]})
    assert shapes == expected
    assert n_embed == int(preset.rsplit("_", 1)[1])


def test_the_released_architecture_encodes_and_decodes_at_f16() -> None:
    torch.manual_seed(0)
    tokenizer = TamingVQGAN(parse_params(PRESETS["imagenet_f16_1024"], "preset")).eval()
    assert tokenizer.downsampling == 16 and tokenizer.index_sizes() == [1024]
    indices = tokenizer.encode(torch.rand(1, 3, 32, 48) * 2 - 1)
    assert indices.shape == (1, 2, 3) and int(indices.max()) < 1024
    assert tokenizer.decode(indices).shape == (1, 3, 32, 48)


def lightning_checkpoint(monkeypatch, path: Path) -> Path:
    """The fixture's checkpoint as Lightning 1.x saves one: its `ModelCheckpoint` callback
    pickled (keyed by its class) beside `state_dict`, from a `pytorch_lightning` that is then
    gone (made up here, removed before loading)."""
    with monkeypatch.context() as patch:
        names = ["pytorch_lightning", "pytorch_lightning.callbacks"]
        names.append("pytorch_lightning.callbacks.model_checkpoint")
        modules = [types.ModuleType(name) for name in names]
        for parent, child in zip(modules, modules[1:], strict=False):
            setattr(parent, child.__name__.rsplit(".", 1)[1], child)
        callback = type("ModelCheckpoint", (), {"__module__": names[-1]})
        modules[-1].ModelCheckpoint = callback
        for module in modules:
            patch.setitem(sys.modules, module.__name__, module)
        state = {"state_dict": _state(), "callbacks": {callback: {"best_model_score": 0.5}}}
        state["pytorch-lightning_version"] = "1.0.8"
        torch.save(state, path)
    assert "pytorch_lightning" not in sys.modules
    return path


def test_a_lightning_checkpoint_loads_without_lightning_or_trust(fixture, monkeypatch, tmp_path):
    path = lightning_checkpoint(monkeypatch, tmp_path / "last.ckpt")
    with pytest.raises(VQBenchError, match="--trust-checkpoint"):
        read_checkpoint(path)  # the file holds Lightning's objects
    tokenizer = load_published(NAME, path, config=CONFIG)
    assert torch.equal(tokenizer.encode(fixture["images"]), fixture["indices"])
    assert_close(tokenizer.decode(fixture["indices"]), fixture["decoded"], "decoded", **TOL)
    assert load_published(NAME, path, config=CONFIG, trust=True).index_sizes() == [64]


def _save(state: dict, path: Path) -> Path:
    torch.save({"state_dict": state}, path)
    return path


def _state() -> dict[str, torch.Tensor]:
    return torch.load(CHECKPOINT, weights_only=True)["state_dict"]


def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_key(tmp_path: Path) -> None:
    state = _state()
    del state["decoder.up.1.attn.0.q.weight"]
    with pytest.raises(VQBenchError, match=r"'decoder\.up\.1\.attn\.0\.q\.weight' is missing"):
        load_published(NAME, _save(state, tmp_path / "missing.ckpt"), config=CONFIG)
    state = _state() | {"quantize.used": torch.zeros(3)}
    with pytest.raises(VQBenchError, match=r"unexpected key 'quantize\.used'"):
        load_published(NAME, _save(state, tmp_path / "extra.ckpt"), config=CONFIG)
    with pytest.raises(VQBenchError) as err:  # the small model read as the released one
        load_published(NAME, CHECKPOINT)
    message = str(err.value)
    assert "'encoder.conv_in.weight' has shape (32, 3, 3, 3) in the file" in message
    assert "\n" not in message


def test_a_damaged_or_absent_checkpoint_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"not a checkpoint")
    for path in (tmp_path / "last.ckpt", tmp_path / "absent.ckpt"):
        with pytest.raises(VQBenchError, match=f"checkpoint '{path}'") as err:
            load_published(NAME, path, config=CONFIG)
        assert "\n" not in str(err.value)


def test_bad_options_and_configs_are_one_line(tmp_path: Path) -> None:
    gumbel = yaml.safe_load(CONFIG.read_text())
    gumbel["model"]["target"] = "taming.models.vqgan.GumbelVQ"
    (tmp_path / "gumbel.yaml").write_text(yaml.safe_dump(gumbel))
    double = yaml.safe_load(CONFIG.read_text())
    double["model"]["params"]["ddconfig"]["double_z"] = True
    (tmp_path / "double.yaml").write_text(yaml.safe_dump(double))
    remap = yaml.safe_load(CONFIG.read_text())
    remap["model"]["params"]["remap"] = "used.npy"
    (tmp_path / "remap.yaml").write_text(yaml.safe_dump(remap))
    narrow = yaml.safe_load(CONFIG.read_text())
    narrow["model"]["params"]["ddconfig"]["ch"] = 24
    (tmp_path / "narrow.yaml").write_text(yaml.safe_dump(narrow))
    cases = [
        ({"config": tmp_path / "gumbel.yaml"}, "only VQModel checkpoints are supported"),
        ({"config": tmp_path / "double.yaml"}, "ddconfig.double_z=True is invalid: not supported"),
        ({"config": tmp_path / "remap.yaml"}, "remapped codebook is not supported"),
        ({"config": tmp_path / "narrow.yaml"}, "must be a multiple of 32"),
        ({"config": tmp_path / "absent.yaml"}, "does not exist"),
        ({"preset": "imagenet_f8"}, "no preset 'imagenet_f8'"),
        ({"preset": "imagenet_f16_1024", "config": CONFIG}, "not both"),
        ({"n_embed": 64}, "no option 'n_embed'"),
    ]
    check_one_line_errors(NAME, CHECKPOINT, cases)
