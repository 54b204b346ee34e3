"""suites/gpu-smoke.yaml: validated here; a shrunken copy runs end to end on CPU (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vqbench.cli import main
from vqbench.suite import load_suite

SUITE = Path(__file__).resolve().parents[1] / "suites" / "gpu-smoke.yaml"
EIGHT = {"vanilla", "ema", "fc", "fsq", "lfq", "vqgan_lc", "simvq", "group_vq"}


def test_the_suite_is_the_eight_quantizers_in_the_vqgan_preset():
    suite = load_suite(SUITE)
    assert {run.config.quantizer.name for run in suite.runs} == EIGHT
    for run in suite.runs:
        c = run.config
        assert (c.model.preset, c.data.resolution, c.train.batch_size) == ("vqgan", 128, 32)
        assert c.train.time_quantizer and c.train.precision == "bf16"
        assert 200 <= c.train.steps <= 500
    assert len({run.settings_fingerprint for run in suite.runs}) == 1


def shrunken(tmp_path: Path) -> Path:
    """The same suite at CPU size: 32x32, 3 steps of 4 images, 256 codes."""
    spec = yaml.safe_load(SUITE.read_text())
    spec["shared"]["data"].update(resolution=32, train_size=16, val_size=8)
    spec["shared"]["train"].update(steps=3, batch_size=4, precision="fp32", log_every=1)
    spec["shared"]["eval"]["batch_size"] = 8
    for run in spec["runs"]:
        params = run["quantizer"]["params"]
        if "codebook_size" in params:
            params["codebook_size"] = 256
        if run["quantizer"]["name"] == "vqgan_lc":
            params.update(patch_size=4, max_features=1024)
    path = tmp_path / "gpu-smoke.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_shrunken_copy_runs_and_reports_speed(tmp_path, monkeypatch):
    monkeypatch.setenv("VQBENCH_OFFLINE", "1")
    path = shrunken(tmp_path)
    args = ["run", str(path), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "out")]
    assert main([*args, "--device", "cpu"]) == 0
    report = (tmp_path / "out" / "gpu-smoke.md").read_text()
    speed = report.split("## Training speed")[1].split("## Notes")[0]
    assert sum(line.startswith("| ") for line in speed.splitlines()) == 1 + 8  # header + rows
