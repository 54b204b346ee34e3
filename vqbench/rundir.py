"""A run directory: one implementation of everything a run folder holds.

    config.yaml    the resolved config (every default filled in)
    fingerprint    hash of what determines the trained weights (`RunConfig.fingerprint`)
    env.json       versions, device, world size and process-group backend of the first start
    status.json    running | trained | diverged | finished, and the step
    metrics.jsonl  one JSON record per line (losses, images/s, per-epoch usage)
    checkpoints/   see `vqbench.checkpoint`
    eval*.json     evaluation results
    tb/            TensorBoard event files (`train.tensorboard: true`)
    .lock          held by the process training into the folder

Every file is written atomically (`vqbench.files`), and a start rewrites only what changed, so
a kill at any moment leaves a folder that can be resumed. `.lock` (an advisory `flock`, freed
by the kernel when its holder dies) keeps two processes from training into one folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from vqbench import distributed
from vqbench.errors import VQBenchError
from vqbench.files import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
)
from vqbench.version import __version__

STATES = ("running", "trained", "diverged", "finished")


def environment(world: distributed.World) -> dict[str, Any]:
    """What a result depends on besides the config: versions, device, processes, threads."""
    device = world.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "vqbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": name or platform.machine(),
        "world_size": world.size,
        "backend": distributed.backend(),
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # ---- the files ---------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def log_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    def eval_file(self, operation: str | None = None, split: str = "val") -> Path:
        """`eval.json`, `eval-extend-2048.json`, `eval-train.json`, ..."""
        name = f"eval-{operation}" if operation else "eval"
        return self.path / (f"{name}.json" if split == "val" else f"{name}-{split}.json")

    def recorded_fingerprint(self) -> str | None:
        path = self.path / "fingerprint"
        return path.read_text().strip() if path.is_file() else None

    def environment(self) -> dict[str, Any]:
        return read_json(self.path / "env.json") or {}

    # ---- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        status = read_json(self.path / "status.json") or {}
        if status and status.get("state") not in STATES:
            raise VQBenchError(
                f"'{self.path / 'status.json'}' holds no run state; delete it (--resume "
                f"writes it again)"
            )
        return status

    def state(self) -> str | None:
        return self.status().get("state")

    def set_status(self, state: str, step: int | None) -> None:
        atomic_write_json(self.path / "status.json", {"state": state, "step": step}, indent=None)

    # ---- the log -----------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.log_file, record)

    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.log_file)

    def epoch_records(self) -> list[dict[str, Any]]:
        """The per-epoch records (train usage, optional validation), in order."""
        return [r for r in self.records() if "train_usage" in r]

    def truncate_log(self, step: int) -> None:
        """On resume, keep the records up to `step` (the rest will be redone), as one file."""
        if not self.log_file.exists():
            return
        kept = [r for r in self.records() if r.get("step", 0) <= step]
        atomic_write_text(self.log_file, "".join(json.dumps(r) + "\n" for r in kept))

    def write_result(self, path: Path, results: dict[str, Any]) -> None:
        atomic_write_json(path, results)

    # ---- starting a run ----------------------------------------------------------------------
    def _holds_nothing(self) -> bool:
        return not self.path.exists() or not any(
            p.name != ".lock" and not p.name.startswith(".tmp") for p in self.path.iterdir()
        )

    def check(self, fingerprint: str, *, resume: bool, force: bool) -> bool:
        """Decide what to do before anything is written; True means resume."""
        if self.path.exists() and not self.path.is_dir():
            raise VQBenchError(f"--out '{self.path}' is a file, not a folder; choose another --out")
        if force or self._holds_nothing():
            return False
        theirs = self.recorded_fingerprint()
        if theirs is None:
            raise VQBenchError(
                f"output folder '{self.path}' is not empty and holds no vqbench run; "
                f"choose another --out or pass --force to replace its contents"
            )
        if theirs != fingerprint:
            raise VQBenchError(
                f"output folder '{self.path}' holds a different run (fingerprint "
                f"{theirs}, this config {fingerprint}); choose another --out or pass "
                f"--force to replace it"
            )
        if resume:
            return True
        state = self.status().get("state", "running")
        raise VQBenchError(
            f"output folder '{self.path}' already holds this run ({state}); pass "
            f"--resume to continue it or --force to start over"
        )

    def _write_once(self, name: str, text: str) -> None:
        """Write `name` unless it already holds `text` (a start rewrites only what changed)."""
        path = self.path / name
        if not (path.is_file() and path.read_text() == text):
            atomic_write_text(path, text)

    def prepare(self, config, world: distributed.World, *, resume: bool, force: bool) -> bool:
        """Rank 0 checks, locks and writes the folder; every process learns the outcome."""
        outcome: tuple[str, Any] = ("ok", False)
        if world.is_main:
            try:
                outcome = ("ok", self._prepare(config, world, resume=resume, force=force))
            except VQBenchError as err:
                outcome = ("error", str(err))
        outcome = distributed.broadcast_object(outcome)
        if outcome[0] == "error":
            raise VQBenchError(outcome[1])
        return outcome[1]

    def _prepare(self, config, world: distributed.World, *, resume: bool, force: bool) -> bool:
        fingerprint = config.fingerprint()
        resuming = self.check(fingerprint, resume=resume, force=force)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise VQBenchError(
                f"cannot create the run folder '{self.path}' ({err.strerror}); choose another --out"
            ) from None
        self.acquire_lock()
        if force and not resuming:
            self.clear()
        try:
            self._write_once("fingerprint", fingerprint + "\n")
            self._write_once("config.yaml", yaml.safe_dump(config.resolved(), sort_keys=False))
            if not (self.path / "env.json").is_file():
                atomic_write_json(self.path / "env.json", environment(world))
            if not resuming:
                self.set_status("running", 0)
        except OSError as err:
            raise VQBenchError(
                f"cannot write into the run folder '{self.path}' ({err.strerror}); choose "
                f"another --out"
            ) from None
        return resuming

    def clear(self) -> None:
        """Remove everything but the lock (`--force`)."""
        for item in self.path.iterdir():
            if item.name == ".lock":
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()

    # ---- the lock ----------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        """Hold `.lock` while training; refuse (naming the holder) if another process has it."""
        if self._lock_fd is not None:
            return
        path = self.path / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise VQBenchError(
                f"cannot write into the run folder '{self.path}' ({err.strerror}); choose "
                f"another --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise VQBenchError(
                f"run folder '{self.path}' is in use by {holder}; wait for it to finish or "
                f"stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None
