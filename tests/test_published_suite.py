"""A suite's `tokenizers:` section: published tokenizers evaluated and probed under the suite's
settings, reported beside the trained rows as rows marked (published)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.engine_helpers import small_config
from tests.published_helpers import NAME, write_checkpoint
from tests.test_published_eval import TINY_PROBE
from vqbench import VQBenchError
from vqbench.cli import main
from vqbench.runner import rebuild, run_suite
from vqbench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


def suite_file(folder: Path, **extra) -> Path:
    base = small_config("vanilla", steps=2, batch=4)
    spec = {
        "suite": "mixed",
        "seeds": [0],
        "shared": {k: base[k] for k in ("data", "model", "loss", "optim", "train", "eval")},
        "runs": [{"name": "vq", "label": "VQ", "quantizer": base["quantizer"]}],
        "tokenizers": [
            {"name": "pool", "label": "PoolVQ", "adapter": NAME,
             "checkpoint": str(write_checkpoint(folder / "pool.pt")), "options": {"size": 8}}
        ],
        "probe": {**TINY_PROBE, "seeds": [0]},
        **extra,
    }  # fmt: skip
    path = folder / "mixed.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_suite_reports_a_published_tokenizer_beside_its_trained_rows(tmp_path):
    suite = load_suite(suite_file(tmp_path))
    assert [t.name for t in suite.tokenizers] == ["pool"]
    config = suite.tokenizers[0].config
    assert config.data == suite.runs[0].config.data and config.eval == suite.runs[0].config.eval
    logs: list[str] = []
    run_suite(suite, root=tmp_path / "runs", results=tmp_path / "results", device="cpu",
              log=logs.append)  # fmt: skip
    folder = tmp_path / "runs" / "mixed" / "pool"
    evaluated = json.loads((folder / "eval.json").read_text())
    assert evaluated["tokenizer"] == NAME and (folder / "probe.json").is_file()
    report = json.loads((tmp_path / "results" / "mixed.json").read_text())
    rows = {r["run"]: r for r in report["rows"]}
    assert rows["pool"]["published"] and not rows["vq"]["published"]
    assert rows["pool"]["metrics"]["psnr"]["mean"] == evaluated["psnr"]
    assert rows["pool"]["metrics"]["bits_per_token"]["mean"] is not None  # probed too
    md = (tmp_path / "results" / "mixed.md").read_text()
    line = next(li for li in md.splitlines() if li.startswith("| PoolVQ (published)"))
    assert f"{evaluated['psnr']:.2f}" in line
    assert any(li.startswith("| VQ ") for li in md.splitlines())
    assert "Rows marked (published)" in md and evaluated["checkpoint_sha256"][:12] in md
    # a second run skips what is done; the report rebuilds from the folders alone
    logs.clear()
    run_suite(suite, root=tmp_path / "runs", results=tmp_path / "results", device="cpu",
              log=logs.append)  # fmt: skip
    assert any("pool (published" in li and "evaluated earlier, skipped" in li for li in logs)
    assert any("pool (published" in li and "probed earlier, skipped" in li for li in logs)
    assert "PoolVQ (published)" in rebuild(tmp_path / "runs" / "mixed", tmp_path / "r2").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adapter": "no_such"}, "unknown tokenizer adapter 'no_such'"),
        ({"name": "vq"}, "tokenizer name 'vq' is also a run's"),
        ({"block": 3}, "names block 3; the suite has 1"),
        ({"colour": 1}, "colour"),
    ],
)
def test_a_bad_tokenizers_entry_is_one_line(tmp_path, change, message):
    path = suite_file(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["tokenizers"][0].update(change)
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(VQBenchError, match=message) as err:
        load_suite(path)
    assert "\n" not in str(err.value)


def test_a_missing_checkpoint_fails_the_dry_run(tmp_path, capsys):
    path = suite_file(tmp_path)
    (tmp_path / "pool.pt").unlink()
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "pool.pt' does not exist (tokenizer 'pool')" in err and len(err.splitlines()) == 1


def test_the_committed_reports_fingerprints_are_those_of_their_suites():
    """`tokenizers:` changes no run config: every committed report's settings fingerprints
    are still what its suite file gives."""
    checked = 0
    for report in sorted((ROOT / "results").glob("*.json")):
        source = ROOT / "suites" / f"{report.stem}.yaml"
        if not source.is_file():
            continue
        suite = load_suite(source)
        ours = {(r.block, r.name): r.settings_fingerprint for r in suite.runs}
        for row in json.loads(report.read_text())["rows"]:
            assert ours[(row["block"], row["run"])] == row["settings_fingerprint"], report.name
            checked += 1
    assert checked >= 20
