"""vqbench.runner: where a suite's runs go, what it records, when a run counts as done."""

from __future__ import annotations

import pytest
import yaml

from tests.engine_helpers import small_config
from vqbench import VQBenchError
from vqbench.rundir import SuiteDir
from vqbench.runner import describe, rebuild, record_suite, run_dir_of, run_is_complete
from vqbench.suite import load_suite


def mini(folder, seeds=(0, 1)):
    base = small_config("vanilla")
    spec = {
        "suite": "mini",
        "seeds": list(seeds),
        "shared": {k: base[k] for k in ("data", "model", "loss", "optim", "train", "eval")},
        "runs": [{"name": "vq", "quantizer": base["quantizer"]}],
    }
    path = folder / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_suite(path)


def test_run_folders_and_the_recorded_suite(tmp_path):
    suite = mini(tmp_path)
    folders = [run_dir_of(tmp_path, suite, r).path for r in suite.runs]
    assert folders == [tmp_path / "mini" / "vq-s0", tmp_path / "mini" / "vq-s1"]
    folder = SuiteDir.under(tmp_path, "mini")
    record_suite(suite, folder)
    recorded = yaml.safe_load(folder.suite_file.read_text())
    assert recorded["seeds"] == [0, 1] and recorded["suite"] == "mini"
    assert [row[1] for row in describe(suite)] == ["vq-s0", "vq-s1"]


def test_a_run_is_complete_only_when_finished_evaluated_and_of_the_same_config(tmp_path):
    suite = mini(tmp_path, seeds=[0])
    expanded = suite.runs[0]
    run = run_dir_of(tmp_path, suite, expanded)
    run.path.mkdir(parents=True)
    assert not run_is_complete(run, expanded)
    (run.path / "fingerprint").write_text(expanded.config.fingerprint() + "\n")
    run.set_status("finished", 4)
    assert not run_is_complete(run, expanded)  # no eval.json yet
    run.write_result(run.eval_file(), {"usage": 0.5})
    assert run_is_complete(run, expanded)
    (run.path / "fingerprint").write_text("other\n")
    assert not run_is_complete(run, expanded)


def test_report_of_a_folder_without_a_suite_is_one_line(tmp_path):
    with pytest.raises(VQBenchError, match="holds no suite.yaml"):
        rebuild(tmp_path)
