"""The fixture scripts on bad input: one line, exit code 2, nothing written.

(The scripts' good path needs the official checkouts, which are not in the repository; the
fixtures they wrote are what the other tests in this folder read.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    path.stem
    for path in (ROOT / "tools" / "reference_fixtures").glob("*.py")
    if path.stem not in {"__init__", "common"}
)


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"tools.reference_fixtures.{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_checkout_of_the_wrong_repository_writes_nothing(script: str, tmp_path: Path) -> None:
    checkout, out = tmp_path / "checkout", tmp_path / "out"
    checkout.mkdir()
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "empty"], check=True)
    extra = ["--commit", "0" * 40] if script == "fsq" else []
    result = run(script, "--checkout", str(checkout), "--out", str(out), *extra)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "is not in" in result.stderr and "checkout" in result.stderr
    assert not out.exists()


def test_a_missing_folder_or_commit_is_one_line(tmp_path: Path) -> None:
    for args in (
        ["--checkout", str(tmp_path / "absent")],
        ["--checkout", str(tmp_path)],  # a folder, not a git checkout
        ["--checkout", str(tmp_path), "--commit", "abc"],
    ):
        result = run("fsq", *args, "--out", str(tmp_path / "out"))
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()
