"""Sizes that cannot fit: one line naming the size, the memory it needs and the memory there
is, exit 2, nothing written, before anything is allocated.

Each family a user can type is tried far past any machine (a codebook of 10^12 codes in a run
config and in a suite, `--extend` / `--resample` targets, train and eval batch sizes, image
resolutions, embedded dataset sizes, the probe's batches and samples); the arithmetic of the
check is tested on hand-worked byte counts against a memory set by the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.engine_helpers import small_config, write_config
from vqbench import bounded
from vqbench.bounded import available_memory, check_fits, format_bytes
from vqbench.cli import main
from vqbench.config import image_bytes, parse_run_config
from vqbench.errors import VQBenchError

ROOT = Path(__file__).resolve().parents[1]
HUGE = 10**12


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_available_memory_is_the_hosts():
    available, where = available_memory()
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < available <= physical and where == "this machine has"
    with open("/proc/meminfo") as f:
        meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    assert available <= meminfo["MemTotal"]


def test_check_fits_hand_worked(monkeypatch):
    monkeypatch.setattr(bounded, "available_memory", lambda device=None: (3 * 2**30, "it has"))
    check_fits("x", 3 * 2**30, "fix")  # exactly what there is: fits
    with pytest.raises(VQBenchError) as err:
        check_fits("--extend 7", 3 * 2**30 + 1, "give less")
    assert str(err.value) == (
        "--extend 7 needs 3.0 GiB of memory and it has 3.0 GiB available; give less"
    )
    assert format_bytes(8 * 10**12) == "7.3 TiB" and format_bytes(1023) == "1023 bytes"


def test_batch_floor_is_hand_worked(monkeypatch):
    # tiny preset with ch=16 at 32 x 32: 4 bytes x 1,024 pixels x (3 + 2 x 16) = 143,360.
    config = small_config("simvq", batch=4)
    assert image_bytes(parse_run_config(config, "c")) == 143_360
    room = 4 * 143_360
    monkeypatch.setattr(bounded, "available_memory", lambda device=None: (room, "it has"))
    config["data"].update(train_size=8, val_size=8)  # 8 + 8 crops: 49,152 bytes
    config["eval"]["batch_size"] = 4
    parse_run_config(config, "c")  # a batch of 4 is exactly what there is
    config["train"]["batch_size"] = 5
    with pytest.raises(VQBenchError, match=r"c: train batch of 5 at data.resolution=32 needs"):
        parse_run_config(config, "c")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c["quantizer"]["params"].update(codebook_size=HUGE),
            "simvq with codebook_size=1000000000000, dim=16 needs 116.4 TiB of memory",
        ),
        (lambda c: c["train"].update(batch_size=HUGE), f"train batch of {HUGE} at"),
        (lambda c: c["eval"].update(batch_size=HUGE), f"eval.batch_size={HUGE} at"),
        (lambda c: c["data"].update(resolution=2**20), "at data.resolution=1048576 needs"),
        (lambda c: c["data"].update(train_size=HUGE), "1,000,000,000,008 embedded crops at"),
    ],
)
def test_a_run_config_that_cannot_fit(tmp_path, capsys, mutate, message):
    config = small_config("simvq")
    config["data"].update(val_size=8)
    mutate(config)
    path = write_config(tmp_path / "big.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = one_line(capsys)
    assert message in err and "available; " in err, err
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_suite_that_cannot_fit(tmp_path, capsys):
    suite = yaml.safe_load((ROOT / "suites" / "tiny.yaml").read_text())
    suite["runs"][0]["quantizer"]["params"]["codebook_size"] = HUGE
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    args = ["run", str(path), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r")]
    assert main(args) == 2
    assert "vanilla with codebook_size=1000000000000, dim=32 needs" in one_line(capsys)
    assert sorted(tmp_path.iterdir()) == [path]


@pytest.fixture(scope="module")
def trained_group_vq(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gvq")
    config = write_config(folder / "c.yaml", small_config("group_vq", steps=1))
    assert main(["train", str(config), "--out", str(folder / "run"), "--no-eval"]) == 0
    return folder / "run"


def snapshot(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("op", ["--extend", "--resample"])
def test_a_codebook_operation_that_cannot_fit(trained_group_vq, capsys, op):
    before = snapshot(trained_group_vq)
    capsys.readouterr()
    assert main(["eval", str(trained_group_vq), op, str(HUGE)]) == 2
    err = one_line(capsys)
    assert f"{op} {HUGE} needs" in err and "TiB of memory" in err, err
    assert snapshot(trained_group_vq) == before


def test_a_probe_that_cannot_fit(trained_group_vq, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_group_vq, run)
    before = snapshot(run)
    for settings, message in [
        ({"batch_size": HUGE}, f"probe.batch_size={HUGE} needs"),
        ({"samples": HUGE, "eval_batch_size": HUGE}, f"probe.samples={HUGE} (in batches"),
    ]:
        path = tmp_path / "probe.yaml"
        path.write_text(yaml.safe_dump({"probe": settings}))
        capsys.readouterr()
        assert main(["probe", str(run), "--config", str(path)]) == 2
        assert message in one_line(capsys)
    assert snapshot(run) == before
