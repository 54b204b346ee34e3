"""vqbench.rundir: what a run folder and a suite folder hold, and who may write into them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from vqbench import VQBenchError
from vqbench.rundir import RunDir, SuiteDir


def test_file_names_of_a_run_folder(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.eval_file() == tmp_path / "r" / "eval.json"
    assert run.eval_file("extend-128") == tmp_path / "r" / "eval-extend-128.json"
    assert run.eval_file(None, "train") == tmp_path / "r" / "eval-train.json"
    assert run.checkpoints == tmp_path / "r" / "checkpoints"
    assert RunDir.owning(run.checkpoints / "step-00000004").path == run.path
    assert run.figure_data() is None  # evaluated by an older version, or not at all


def test_check_decides_fresh_resume_or_refuses(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.check("abc", resume=False, force=False) is False  # nothing there: a fresh run
    run.path.mkdir()
    (run.path / "fingerprint").write_text("abc\n")
    (run.path / "status.json").write_text('{"state": "running", "step": 2}')
    assert run.check("abc", resume=True, force=False) is True
    with pytest.raises(VQBenchError, match="pass --resume"):
        run.check("abc", resume=False, force=False)
    with pytest.raises(VQBenchError, match="holds a different run"):
        run.check("xyz", resume=True, force=False)
    assert run.check("xyz", resume=True, force=True) is False
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(VQBenchError, match="holds no vqbench run"):
        RunDir(tmp_path / "other").check("abc", resume=True, force=False)


def test_the_lock_keeps_a_second_process_out(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.acquire_lock()
    try:
        code = (
            "import sys; from vqbench.rundir import RunDir; from vqbench import VQBenchError\n"
            f"try:\n    RunDir({str(run.path)!r}).acquire_lock()\n"
            "except VQBenchError as e:\n    print(e); sys.exit(3)\n"
        )
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode == 3 and "is in use by pid" in other.stdout
    finally:
        run.release_lock()
    assert run.lock_holder() is None


def test_the_suite_folder_owns_suite_yaml_and_its_runs(tmp_path):
    suite = SuiteDir.under(tmp_path / "runs", "mini")
    assert suite.path == tmp_path / "runs" / "mini"
    suite.record({"suite": "mini", "seeds": [0, 1]})
    assert yaml.safe_load(suite.suite_file.read_text()) == {"suite": "mini", "seeds": [0, 1]}
    for name in ("b-s0", "a-s0", "c-s0"):
        suite.run(name).path.mkdir()
    for name in ("b-s0", "a-s0"):  # c-s0 never started: no env.json
        (suite.run(name).path / "env.json").write_text('{"device": "cpu"}')
    assert [r.path.name for r in suite.started_runs()] == ["a-s0", "b-s0"]
    assert suite.started_runs()[0].environment() == {"device": "cpu"}
    assert SuiteDir.holding(suite.run("a-s0")).suite_file == suite.suite_file
