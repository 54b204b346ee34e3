"""`vqbench export` and `Tokenizer.from_pretrained` (issue 26, item 1): a trained run written as
a tokenizer folder loads back to the run's own evaluation, bit for bit; a damaged or
mismatched folder, or a missing plugin, is one line (exit 2), and nothing is written."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.engine_helpers import final_weights, run_cli, small_config, write_config
from tests.test_readme import plugin_example
from vqbench import Tokenizer, VQBenchError, list_quantizers
from vqbench.build import load_trained
from vqbench.cli import main
from vqbench.data import build_split
from vqbench.tokenizer import FORMAT

QUIET = {"env": {"HF_HUB_OFFLINE": "1"}, "timeout": 600}


def one_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqbench: error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny simvq run whose evaluation uses the model EMA, and a run of the README's plugin
    quantizer (a file), each trained and evaluated by `vqbench train`."""
    home = tmp_path_factory.mktemp("export")
    (home / "my_vq.py").write_text(plugin_example())
    runs = {}
    for name, quantizer, extra in (
        ("simvq", "simvq", []),
        ("plugin", "scaled_cosine_vq", ["--plugin", "my_vq.py"]),
    ):
        config = small_config("simvq", steps=4, train={"ema_decay": 0.5})
        config["quantizer"] = {"name": quantizer, "params": {"codebook_size": 64, "dim": 16}}
        write_config(home / f"{name}.yaml", config)
        result = run_cli("train", f"{name}.yaml", "--out", f"runs/{name}", *extra, cwd=home)
        assert result.returncode == 0, result.stderr
        runs[name] = home / "runs" / name
    runs["home"] = home
    return runs


@pytest.fixture(scope="module")
def exported(trained) -> Path:
    out = trained["home"] / "tokenizers" / "simvq"
    result = run_cli("export", str(trained["simvq"]), "--out", str(out), **QUIET)
    assert result.returncode == 0, result.stderr
    return out


def validation_images(run: Path) -> torch.Tensor:
    config, _, _, _ = load_trained(run)
    data = build_split(config.data, train=False, seed=config.seed)
    return torch.stack([data[i] for i in range(len(data))])


def test_export_then_load_is_the_runs_own_evaluation_bit_for_bit(trained, exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    tok = Tokenizer.from_pretrained(exported)
    x = validation_images(trained["simvq"])
    config, model, _, _ = load_trained(trained["simvq"])  # what evaluate_split measures
    with torch.no_grad():
        x_rec, out = model.eval()(x)
    indices = tok.encode(x)
    assert torch.equal(indices, out.indices)
    assert torch.equal(tok.reconstruct(x), x_rec.float().clamp(-1, 1))
    assert torch.equal(tok.decode(indices), Tokenizer.from_run(trained["simvq"]).decode(indices))
    # the evaluated weights are the model EMA, which differs from the live weights
    ema, live = final_weights(trained["simvq"], "ema"), final_weights(trained["simvq"])
    saved = load_file(str(exported / "model.safetensors"))
    assert set(saved) == {f"model.{k}" for k in ema}
    assert all(torch.equal(saved[f"model.{k}"], v) for k, v in ema.items())
    assert any(not torch.equal(ema[k], live[k]) for k in ema)
    assert config.eval.use_ema


def test_an_export_evaluated_as_a_published_tokenizer_gives_the_runs_own_numbers(trained, exported):
    """`vqbench eval --tokenizer vqbench_export` (how a trained run is measured under another
    protocol, or listed beside released tokenizers) on the run's own data and eval settings
    gives the numbers of the run's own `eval.json`."""
    out = trained["home"] / "published" / "simvq"
    result = run_cli(
        "eval", "--tokenizer", "vqbench_export", "--checkpoint",
        str(exported / "model.safetensors"), "--config", "simvq.yaml", "--out", str(out),
        cwd=trained["home"], **QUIET,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ours = json.loads((out / "eval.json").read_text())
    run = json.loads((trained["simvq"] / "eval.json").read_text())
    for key in ("images", "codebook_size", "usage", "perplexity", "psnr", "psnr_batch", "ssim"):
        assert ours[key] == run[key], key
    assert ours["tokenizer"] == "vqbench_export" and ours["protocol"] == "vqbench"
    bad = run_cli(
        "eval", "--tokenizer", "vqbench_export", "--checkpoint", str(exported / "config.json"),
        "--config", "simvq.yaml", "--out", str(out.with_name("bad")), cwd=trained["home"],
        **QUIET,
    )  # fmt: skip
    assert "give EXPORTED/model.safetensors" in one_line(bad)


def test_config_and_model_card_say_what_the_tokenizer_is(trained, exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["format"] == FORMAT and config["vqbench_version"]
    assert config["quantizer"]["name"] == "simvq"
    assert config["quantizer"]["params"]["beta"] == 0.25  # resolved: a default written out
    assert config["resolution"] == 32 and config["model"]["preset"] == "tiny"
    assert config["plugin"] is None and config["weights"] == "model_ema"
    card = (exported / "README.md").read_text()
    results = json.loads((trained["simvq"] / "eval.json").read_text())
    assert f"| psnr | {results['psnr']:.4f} |" in card
    assert f"| usage | {results['usage']:.4f} |" in card
    assert "library_name: vqbench" in card and "seed 0" in card and "use_ema: true" in card
    assert config["source"]["checkpoint"] in card


def test_save_pretrained_and_from_pretrained_through_the_hub_mixin(exported, tmp_path):
    tok = Tokenizer.from_pretrained(exported)
    tok.save_pretrained(tmp_path / "again")  # what push_to_hub uploads
    again = Tokenizer.from_pretrained(tmp_path / "again")
    assert again.export_config() == tok.export_config()
    card = (exported / "README.md").read_text()
    assert (tmp_path / "again" / "README.md").read_text() == card  # the card travels along
    state = again.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tok.state_dict().items())


@pytest.mark.parametrize("name", list_quantizers())
def test_every_quantizer_is_rebuilt_from_its_resolved_config(name, tmp_path):
    """config.json's resolved parameters build the same quantizer (same outputs, same config)."""
    params = small_config(name)["quantizer"]["params"]
    torch.manual_seed(0)
    tok = Tokenizer(
        model={"preset": "tiny", "overrides": {"ch": 16, "ch_mult": [1, 2]}},
        quantizer={"name": name, "params": params},
        resolution=32,
        format=FORMAT,
    )
    tok.save_pretrained(tmp_path)
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.export_config() == tok.export_config()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(again.encode(x), tok.encode(x))
    assert torch.equal(again.reconstruct(x), tok.reconstruct(x))


def damage(folder: Path, how: str) -> str:
    """Damage a copy of an exported folder; returns what the error line must say."""
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    config = json.loads(config_file.read_text())
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "cannot be read"
    if how == "wrong shapes":
        config["quantizer"]["params"]["codebook_size"] = 32
        config_file.write_text(json.dumps(config))
        return "size mismatch for model.quantizer"
    if how == "unknown quantizer":
        config["quantizer"]["name"] = "no_such_vq"
        config_file.write_text(json.dumps(config))
        return "unknown quantizer 'no_such_vq'"
    if how == "missing key":
        del config["resolution"]
        config_file.write_text(json.dumps(config))
        return "config lacks 'resolution'"
    if how == "bad parameter":
        config["quantizer"]["params"]["codebook_size"] = "many"
        config_file.write_text(json.dumps(config))
        return "codebook_size"
    if how == "newer format":
        config["format_version"] = 99
        config_file.write_text(json.dumps(config))
        return "is not a vqbench-tokenizer of version <= 1"
    if how == "not JSON":
        config_file.write_text("{not json")
        return "is not valid JSON"
    if how == "no weights":
        weights.unlink()
        return "lacks model.safetensors"
    raise AssertionError(how)


DAMAGES = [
    "truncated weights",
    "wrong shapes",
    "unknown quantizer",
    "missing key",
    "bad parameter",
    "newer format",
    "not JSON",
    "no weights",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_or_mismatched_folder_is_one_line_exit_2(exported, tmp_path, capsys, how):
    folder = tmp_path / "tok"
    shutil.copytree(exported, folder)
    expected = damage(folder, how)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["tokenizer", str(folder)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqbench: error: "), err
    assert expected in lines[0] and "\n" not in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    with pytest.raises(VQBenchError, match=re.escape(str(folder))):  # names the tokenizer
        Tokenizer.from_pretrained(folder)


@pytest.mark.parametrize("which", ["model", "ema"])
def test_exporting_a_damaged_run_writes_nothing(trained, tmp_path, which):
    run = tmp_path / "run"
    shutil.copytree(trained["simvq"], run)
    step = (run / "checkpoints" / "latest").read_text().strip()
    weights = run / "checkpoints" / step / f"{which}.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    line = one_line(run_cli("export", str(run), "--out", str(tmp_path / "out"), **QUIET))
    assert step in line and "delete it to fall back" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_export_refuses_a_folder_in_use_and_replaces_it_with_force(trained, exported, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    line = one_line(run_cli("export", str(trained["simvq"]), "--out", str(out), **QUIET))
    assert "is not empty" in line and (out / "mine.txt").read_text() == "keep me"
    result = run_cli("export", str(trained["simvq"]), "--out", str(out), "--force", **QUIET)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in exported.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_a_killed_exports_temporary_folder_is_removed_by_the_next(trained, tmp_path):
    dead = tmp_path / ".out.tmp-999999999"  # no such process
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    result = run_cli("export", str(trained["simvq"]), "--out", str(tmp_path / "out"), **QUIET)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupted_export_leaves_no_folder(trained, tmp_path, monkeypatch):
    from vqbench import export

    def interrupted(self, folder, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.Tokenizer, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_run(trained["simvq"], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_plugin_quantizer_exports_and_needs_its_plugin_to_load(trained):
    home = trained["home"]
    out = home / "tokenizers" / "plugin"
    result = run_cli("export", str(trained["plugin"]), "--out", str(out), **QUIET)  # plugins.json
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["quantizer"]["name"] == "scaled_cosine_vq"
    assert config["plugin"]["file"] == "my_vq.py" and config["plugin"]["package"] is None
    assert config["quantizer"]["params"]["scale"] == 1.0
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    line = one_line(run_cli("tokenizer", str(out), cwd=elsewhere, **QUIET))
    assert "quantizer 'scaled_cosine_vq' comes from the plugin file 'my_vq.py'" in line
    assert "--plugin" in line
    loaded = run_cli("tokenizer", str(out), "--plugin", str(home / "my_vq.py"), **QUIET)
    assert loaded.returncode == 0 and "scaled_cosine_vq" in loaded.stdout, loaded.stderr


def test_a_plugin_module_that_is_not_installed_is_named(tmp_path, clean_registry):
    """A plugin imported as a module: the config names it; without it, one line naming it."""
    package = tmp_path / "site" / "vq_plugin_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(plugin_example().replace("scaled_cosine_vq", "pkg_vq"))
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from vqbench.registry import load_plugin; load_plugin('vq_plugin_pkg');"
        "from vqbench.tokenizer import Tokenizer, FORMAT;"
        "tok = Tokenizer(model={'preset': 'tiny', 'overrides': {'ch': 16, 'ch_mult': [1, 2]}},"
        "quantizer={'name': 'pkg_vq', 'params': {'codebook_size': 8, 'dim': 4}},"
        "resolution=32, plugin=__import__('vqbench.tokenizer').tokenizer.plugin_of('pkg_vq'),"
        "format=FORMAT); tok.save_pretrained(sys.argv[2])"
    )
    import subprocess
    import sys

    made = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "site"), str(tmp_path / "tok")],
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert made.returncode == 0, made.stderr
    plugin = json.loads((tmp_path / "tok" / "config.json").read_text())["plugin"]
    assert plugin["module"] == "vq_plugin_pkg" and plugin["file"] is None
    line = one_line(run_cli("tokenizer", str(tmp_path / "tok"), cwd=tmp_path, **QUIET))
    assert "quantizer 'pkg_vq' comes from the plugin module 'vq_plugin_pkg'" in line
    assert "not installed" in line
    found = run_cli("tokenizer", str(tmp_path / "tok"), env={"PYTHONPATH": str(tmp_path / "site")})
    assert found.returncode == 0, found.stderr  # importable: loaded from the config


def test_a_hub_id_not_cached_offline_fails_in_one_line_quickly(tmp_path):
    start = time.monotonic()
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    line = one_line(run_cli("tokenizer", "someone/no-such-tokenizer", env=env, timeout=120))
    assert time.monotonic() - start < 60
    assert "tokenizer 'someone/no-such-tokenizer'" in line and "config.json not found" in line
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))


def test_a_path_that_is_not_a_folder_is_named(tmp_path):
    with pytest.raises(VQBenchError, match="is not a folder"):
        Tokenizer.from_pretrained(tmp_path / "missing" / "tok")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_this_machine_lacks_is_one_line(exported, capsys):
    assert main(["tokenizer", str(exported), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no CUDA device" in err
