"""Suites: validation of every shipped suite, bad input, a small suite end to end, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.engine_helpers import small_config
from vqbench import VQBenchError
from vqbench.cli import main
from vqbench.suite import load_suite

SUITES = sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_every_shipped_suite_validates_and_shares_settings_per_block(path):
    suite = load_suite(path)
    assert suite.runs
    for b, _ in enumerate(suite.blocks()):
        fingerprints = {r.settings_fingerprint for r in suite.runs if r.block == b}
        assert len(fingerprints) == 1, f"block {b} of {path.name} mixes settings"


def test_dry_run_of_table1_shows_the_papers_settings(capsys, tmp_path):
    # The plan is printed; ImageNet is not on this machine, which the dry run then says.
    assert main(["run", "suites/table1.yaml", "--dry-run", "--out", str(tmp_path / "runs")]) == 2
    out, err = capsys.readouterr()
    assert "'/data/imagenet/train' does not exist (data.root of run 'vqgan')" in err
    assert "16 runs in 3 block(s)" in out
    assert "group_vq(codebook_size=65536, dim=128, groups=64)" in out
    assert "50 epochs" in out and "40 epochs" in out and "20 epochs" in out and " 256 |" in out
    assert not (tmp_path / "runs").exists()


def small_suite(tmp_path: Path, **changes) -> Path:
    base = small_config("simvq", steps=4, batch=4)
    shared = {k: base[k] for k in ("data", "model", "loss", "optim", "train", "eval")}
    shared["eval"]["metrics"] = ["usage", "psnr", "ssim", "lpips", "fid"]  # n/a here: no weights
    spec = {
        "suite": "mini",
        "title": "Mini suite",
        "seeds": [0, 1],
        "shared": shared,
        "runs": [
            {
                "name": "simvq",
                "label": "SimVQ",
                "quantizer": {"name": "simvq", "params": {"codebook_size": 64, "dim": 16}},
            },
            {
                "name": "group_vq",
                "label": "Group-VQ",
                "quantizer": {
                    "name": "group_vq",
                    "params": {"codebook_size": 64, "dim": 16, "groups": 4},
                },
                "post": [{"extend": 128}, {"resample": 32, "label": "+ downsampling"}],
            },
        ],
    }
    spec.update(changes)
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def forbid_weights(monkeypatch) -> None:
    """Make every way of loading weights, building a model or using a device fail."""
    import safetensors.torch
    import torch

    import vqbench.build

    def refuse(*args, **kwargs):
        raise AssertionError("the report loaded weights, built a model or used a device")

    for owner, name in [
        (torch, "load"),
        (safetensors.torch, "load_file"),
        (vqbench.build, "load_trained"),
        (vqbench.build, "build_model"),
        (vqbench.build, "load_checkpoint"),
        (torch.nn.Module, "load_state_dict"),
        (torch.nn.Module, "__call__"),
        (torch.nn.Module, "to"),
    ]:
        monkeypatch.setattr(owner, name, refuse)


def test_a_small_suite_end_to_end_then_rerun_and_report(tmp_path, capsys, monkeypatch):
    suite = small_suite(tmp_path)
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["run", str(suite), "--out", str(runs), "--results", str(results)]
    assert main(args) == 0
    report = (results / "mini.md").read_text()
    data = json.loads((results / "mini.json").read_text())
    rows = {r["label"]: r for r in data["rows"]}
    assert set(rows) == {"SimVQ", "Group-VQ", "Group-VQ + self-extension to 128", "+ downsampling"}
    assert rows["Group-VQ + self-extension to 128"]["codebook_size"] == 128
    assert rows["+ downsampling"]["codebook_size"] == 32
    assert rows["SimVQ"]["metrics"]["psnr"]["n"] == 2 and rows["SimVQ"]["groups"] == 1
    assert " ± " in report and "| Method " in report and "identical for every row" in report
    assert "Unavailable — rfid: n/a (" in report  # no Inception weights here, said so
    for figure in data["figures"]:
        assert (results / figure).is_file() and f"({figure})" in report
    assert any("groups-group_vq" in f for f in data["figures"])
    assert (runs / "mini" / "suite.yaml").is_file()
    # A re-run skips every finished run and rewrites the same report.
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.safetensors")}
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.safetensors")} == stamps
    # `vqbench report` rebuilds the tables and every figure from the run folders alone.
    (results / "mini.md").unlink()
    for figure in data["figures"]:
        (results / figure).unlink()
    with monkeypatch.context() as patched:
        forbid_weights(patched)
        assert main(["report", str(runs / "mini"), "--results", str(results)]) == 0
    rebuilt = (results / "mini.md").read_text()
    assert rebuilt.split("## Notes")[0] == report.split("## Notes")[0]
    assert json.loads((results / "mini.json").read_text())["figures"] == data["figures"]
    for figure in data["figures"]:
        assert (results / figure).is_file()


def test_runs_evaluated_before_figure_data_are_brought_up_to_date_without_retraining(
    tmp_path, capsys, monkeypatch
):
    """Folders without figures.json / reconstructions.png (older code): the report says which
    command writes them; `vqbench eval RUN --figures-only` writes them and nothing else."""
    suite = small_suite(tmp_path, seeds=[0])
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(["run", str(suite), "--out", str(runs), "--results", str(results)]) == 0
    figures = json.loads((results / "mini.json").read_text())["figures"]
    folders = sorted(p.parent for p in (runs / "mini").glob("*/eval.json"))
    assert len(folders) == 2
    for folder in folders:
        (folder / "figures.json").unlink()
        (folder / "reconstructions.png").unlink()
    evals = {p: p.read_bytes() for p in (runs / "mini").rglob("eval*.json")}
    weights = {p: p.stat().st_mtime_ns for p in (runs / "mini").rglob("*.safetensors")}
    capsys.readouterr()
    assert main(["report", str(runs / "mini"), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"vqbench eval {folders[0]} --figures-only" in out
    assert not any(
        "reconstructions" in f for f in json.loads((results / "mini.json").read_text())["figures"]
    )
    for folder in folders:
        assert main(["eval", str(folder), "--figures-only"]) == 0
        assert (folder / "figures.json").is_file() and (folder / "reconstructions.png").is_file()
    assert {p: p.read_bytes() for p in (runs / "mini").rglob("eval*.json")} == evals
    assert {p: p.stat().st_mtime_ns for p in (runs / "mini").rglob("*.safetensors")} == weights
    with monkeypatch.context() as patched:
        forbid_weights(patched)
        assert main(["report", str(runs / "mini"), "--results", str(results)]) == 0
    assert json.loads((results / "mini.json").read_text())["figures"] == figures


def test_killing_a_suite_and_starting_again_finishes_without_redoing_runs(tmp_path):
    suite = small_suite(tmp_path, seeds=[0])
    spec = yaml.safe_load(suite.read_text())
    spec["shared"]["train"].update(steps=30, checkpoint_every=3)
    suite.write_text(yaml.safe_dump(spec))
    runs, results = tmp_path / "runs", tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "vqbench",
        "run",
        str(suite),
        "--out",
        str(runs),
        "--results",
        str(results),
    ]
    env = {**os.environ, "VQBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = runs / "mini" / "group_vq-s0" / "checkpoints" / "latest"
    deadline = time.time() + 180
    while time.time() < deadline and not second.exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_weights = runs / "mini" / "simvq-s0" / "checkpoints" / "step-00000030"
    assert first_weights.is_dir(), "the first run had not finished when killed"
    stamp = (first_weights / "model.safetensors").stat().st_mtime_ns
    assert not (results / "mini.md").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "simvq-s0: finished earlier, skipped" in again.stdout
    assert "group_vq-s0: resuming" in again.stdout
    assert (first_weights / "model.safetensors").stat().st_mtime_ns == stamp
    assert (results / "mini.md").is_file()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the file is empty"),
        ("suite: [1\n", "invalid YAML"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("suite: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ],
)
def test_unreadable_suites(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert (
        main(
            [
                "run",
                str(path),
                "--out",
                str(tmp_path / "runs"),
                "--results",
                str(tmp_path / "results"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def change(path, edit):
    spec = yaml.safe_load(path.read_text())
    edit(spec)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update(runz=[]), "unknown key 'runz'; did you mean 'runs'?"),
        (lambda s: s["shared"]["train"].update(batch_sise=4), "did you mean 'batch_size'?"),
        (lambda s: s.update(runs=[]), "a suite needs a non-empty 'runs' list or 'blocks'"),
        (lambda s: s["runs"][0]["quantizer"].update(name="simvqq"), "did you mean 'simvq'?"),
        (
            lambda s: s["runs"][1]["quantizer"]["params"].update(groups=7),
            "groups=7 does not divide codebook_size=64",
        ),
        (lambda s: s["shared"]["train"].update(steps=0), "train.steps=0 is invalid"),
        (lambda s: s["shared"]["train"].update(batch_size=-1), "train.batch_size=-1 is invalid"),
        (lambda s: s["shared"]["train"].update(epochs="ten"), "train.epochs='ten' is invalid"),
        (lambda s: s["shared"]["data"].update(kind="imagenet"), "data.kind='imagenet' is invalid"),
        (lambda s: s.update(plugins=["no_such_plugin"]), "cannot import plugin module"),
        (
            lambda s: s["runs"][0].update(overrides={"optim": {"lr": 1.0}}),
            "overrides 'optim.lr', which the suite does not declare as varied",
        ),
        (lambda s: s["runs"][1].update(post=[{"grow": 128}]), "unknown key 'runs.1.post.0.grow'"),
        (
            lambda s: s["shared"]["data"].update(
                kind="imagefolder", root="/no/data", val_root="/no/data"
            ),
            "dataset folder '/no/data' does not exist",
        ),
    ],
)
def test_bad_suites_fail_before_anything_is_written(tmp_path, capsys, edit, message):
    path = change(small_suite(tmp_path), edit)
    code = main(
        ["run", str(path), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_only_and_seeds(tmp_path):
    suite = load_suite(small_suite(tmp_path), seeds=3)
    assert sorted({r.seed for r in suite.runs}) == [0, 1, 2]
    with pytest.raises(VQBenchError, match="--only \\['nope'\\] matches no run"):
        from vqbench.runner import run_suite

        run_suite(suite, root=tmp_path / "runs", results=tmp_path / "results", only=["nope"])


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_example_run_configs_validate(path):
    from vqbench.config import load_run_config

    assert load_run_config(path).fingerprint()
