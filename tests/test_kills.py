"""kill -9 at chosen moments of train, resume, eval and report leaves every earlier result intact
and the run resumable, ending exactly where an uninterrupted run ends: the same weights, bit for
bit, and the same log (`metrics.jsonl` reads as one run: no step twice, none missing).

The kills come from `tests/faults.py` (`VQBENCH_KILL_AT=NAME#N`: at the N-th write of a file
named like NAME, half the bytes are written and the process is killed), so they land inside a
write, the worst moment for a file.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from tests.engine_helpers import final_weights, run_cli, small_config, write_config
from vqbench.cli import main

FAULTS = str(Path(__file__).with_name("faults.py"))

#: 32 training crops / batch 4 = 8 steps an epoch: logs at 3, 6, 9, 12; epoch records at 8, 12;
#: checkpoints at 4, 8 and the final one at 12. The log window (3) straddles checkpoints.
CONFIG = small_config("simvq", steps=12, batch=4, train={"checkpoint_every": 4, "log_every": 3})


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")


def vqbench(*args: str, kill: str | None = None):
    env = {"VQBENCH_KILL_AT": kill} if kill else {}
    return run_cli("--plugin", FAULTS, *args, env=env)


def train(config: Path, run: Path, *extra: str, kill: str | None = None):
    result = vqbench("train", str(config), "--out", str(run), "--no-eval", *extra, kill=kill)
    if kill is None:
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert result.returncode in (0, -9), result.stderr[-3000:]
    return result


def log_of(run: Path) -> list[dict]:
    """The records, without the one field that depends on the clock."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def assert_as_uninterrupted(run: Path, reference: Path) -> None:
    for which in ("model", "ema"):
        ours, theirs = final_weights(run, which), final_weights(reference, which)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), f"{which} weights differ"
    steps = [(r["step"], "train_usage" in r) for r in log_of(run)]
    assert len(steps) == len(set(steps)), f"a record appears twice: {steps}"
    assert log_of(run) == log_of(reference)
    assert json.loads((run / "status.json").read_text()) == {"state": "trained", "step": 12}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    config = write_config(folder / "c.yaml", CONFIG)
    train(config, folder / "run")
    return folder / "run"


def killed_then_resumed(tmp_path: Path, kills: list[str], reference: Path, config=CONFIG):
    path = write_config(tmp_path / "c.yaml", config)
    run = tmp_path / "run"
    first = train(path, run, kill=kills[0])
    assert first.returncode == -9, f"not killed at {kills[0]}"
    for kill in kills[1:]:
        train(path, run, "--resume", kill=kill)
    done = train(path, run, "--resume")
    assert "Traceback" not in done.stderr
    assert_as_uninterrupted(run, reference)
    return done


def test_killed_mid_record_before_the_first_checkpoint_then_mid_checkpoint(tmp_path, reference):
    """The first log record is cut in half with no checkpoint yet; the resumed run (which
    starts again from step 0) is killed while writing its first checkpoint's state."""
    done = killed_then_resumed(tmp_path, ["metrics.jsonl#1", "state.pt#1"], reference)
    assert "no usable checkpoint: starting again from step 0" in done.stdout


@pytest.mark.slow
def test_killed_mid_epoch_record_then_mid_checkpoint_of_the_resumed_run(tmp_path, reference):
    """Killed while writing the epoch record of step 8 (checkpoint 4 is the newest), then the
    resumed run is killed while writing its own checkpoint 8."""
    done = killed_then_resumed(tmp_path, ["metrics.jsonl#3", "state.pt#1"], reference)
    assert "resumed from step-00000004" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "kills",
    [
        ["model.safetensors#2"],  # inside checkpoint 8's weights
        ["state.pt#2", "fingerprint"],  # the resumed run's start
        ["state.pt#2", "env.json"],
        ["state.pt#2", "status.json"],
        ["state.pt#2", "metrics.jsonl#1"],  # the resumed run truncating the log
        ["latest#2"],  # the pointer to the newest checkpoint
        ["status.json#3"],
        ["metrics.jsonl#5", "metrics.jsonl#2"],  # the last log record, then a resumed one
        ["fingerprint#1"],  # the very first write of the run
        ["config.yaml#1"],
    ],
    ids=lambda kills: " then ".join(kills),
)
def test_killed_at_other_writes(tmp_path, reference, kills):
    killed_then_resumed(tmp_path, kills, reference)


@pytest.mark.slow
def test_killed_while_a_resumed_start_rewrites_its_config(tmp_path, reference):
    """A resumed start with a setting outside the fingerprint changed rewrites config.yaml."""
    path = write_config(tmp_path / "c.yaml", CONFIG)
    run = tmp_path / "run"
    assert train(path, run, kill="state.pt#2").returncode == -9
    changed = {**CONFIG, "eval": {**CONFIG["eval"], "batch_size": 4}}
    path = write_config(tmp_path / "c.yaml", changed)
    train(path, run, "--resume", kill="config.yaml")
    assert yaml.safe_load((run / "config.yaml").read_text())["eval"]["batch_size"] in (4, 8)
    train(path, run, "--resume")
    assert_as_uninterrupted(run, reference)


@pytest.mark.slow
def test_killed_while_eval_writes_its_results(tmp_path, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    first = vqbench("eval", str(run))
    assert first.returncode == 0, first.stderr
    before = (run / "eval.json").read_bytes()
    assert vqbench("eval", str(run), kill="eval.json").returncode == -9
    assert (run / "eval.json").read_bytes() == before
    again = vqbench("eval", str(run))
    assert again.returncode == 0 and (run / "eval.json").read_bytes() == before


def mini_suite(tmp_path: Path) -> Path:
    config = small_config("simvq", steps=2)
    spec = {
        "suite": "mini",
        "shared": {k: v for k, v in config.items() if k not in ("name", "quantizer")},
        "runs": [{"name": "simvq", "quantizer": config["quantizer"]}],
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("written", ["mini.md", pytest.param("mini.json", marks=pytest.mark.slow)])
def test_killed_while_a_report_is_written(tmp_path, written):
    runs, results = tmp_path / "runs", tmp_path / "results"
    suite = mini_suite(tmp_path)
    out = ["--out", str(runs), "--results", str(results)]
    assert main(["run", str(suite), *out]) == 0
    report = {name: (results / name).read_bytes() for name in ("mini.md", "mini.json")}
    killed = vqbench("report", str(runs / "mini"), "--results", str(results), kill=written)
    assert killed.returncode == -9
    assert {name: (results / name).read_bytes() for name in report} == report
    for figure in results.glob("*.png"):
        Image.open(figure).load()  # every figure complete
    assert main(["report", str(runs / "mini"), "--results", str(results)]) == 0
    before, after = report["mini.md"].decode(), (results / "mini.md").read_text()
    assert after.split("## Notes")[0] == before.split("## Notes")[0]


@pytest.mark.slow
def test_killed_mid_suite_report_then_run_again(tmp_path):
    """The suite is killed while writing its first report; running it again skips the finished
    run and writes the report."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    suite = mini_suite(tmp_path)
    args = ("run", str(suite), "--out", str(runs), "--results", str(results))
    assert vqbench(*args, kill="mini.md").returncode == -9
    assert not (results / "mini.md").exists()
    again = vqbench(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier, skipped" in again.stdout and (results / "mini.md").is_file()


@pytest.mark.slow
def test_sigint_is_one_line_and_the_run_resumes(tmp_path, reference):
    """Ctrl-C mid-run: one line, exit 130, and --resume ends as an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    path = write_config(tmp_path / "c.yaml", CONFIG)
    run, paused = tmp_path / "run", tmp_path / "paused"
    env = {
        **os.environ,
        "VQBENCH_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "VQBENCH_PAUSE_AT": "metrics.jsonl#3",
        "VQBENCH_PAUSED": str(paused),
    }
    command = [sys.executable, "-m", "vqbench", "--plugin", FAULTS, "train", str(path)]
    proc = subprocess.Popen(
        [*command, "--out", str(run), "--no-eval"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not paused.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("vqbench:")] == [
        "vqbench: interrupted; every file written so far is complete, and a run continues "
        "from its last checkpoint (vqbench train --resume, or vqbench run again)"
    ]
    train(path, run, "--resume")
    assert_as_uninterrupted(run, reference)


@pytest.mark.slow
def test_a_suite_killed_in_its_first_write_of_a_run_finishes_when_run_again(tmp_path):
    """Killed after a run's fingerprint but before its status: running the suite again
    resumes that run instead of refusing its folder."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ("run", str(mini_suite(tmp_path)), "--out", str(runs), "--results", str(results))
    assert vqbench(*args, kill="config.yaml#1").returncode == -9
    again = vqbench(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "simvq-s0: resuming" in again.stdout and (results / "mini.md").is_file()
