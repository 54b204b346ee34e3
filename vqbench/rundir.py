"""A run directory: one implementation of everything a run folder holds.

    config.yaml    the resolved config (every default filled in)
    fingerprint    hash of what determines the trained weights (`RunConfig.fingerprint`)
    env.json       versions, device, world size and process-group backend of the first start
    status.json    running | trained | diverged | finished, and the step
    metrics.jsonl  one JSON record per line (losses, images/s, per-epoch usage)
    checkpoints/   see `vqbench.checkpoint`
    eval*.json     evaluation results
    figures.json   what the report's figures need of the evaluated weights (group statistics,
                   codes sampled and projected per group), written by evaluation
    reconstructions.png  the first validation images (top) and their reconstructions (bottom)
    plugins.json   the plugins loaded when it was made (`--plugin`, `plugins:`), loaded again
                   by every later command (`load_recorded_plugins`)
    probe.json     the downstream probe (`vqbench.probe`); probe-samples.png, its samples
    tb/            TensorBoard event files (`train.tensorboard: true`)
    .lock          held by the process training into the folder

A suite's folder (`runs/<suite>/`) holds `suite.yaml` (the suite as it was run) beside one run
folder per run id; `SuiteDir` is its one owner.

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
import re
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
    check_writable,
    read_json,
    read_jsonl,
)
from vqbench.registry import load_plugin, loaded_plugins
from vqbench.version import __version__

STATES = ("running", "trained", "diverged", "finished")
#: What `vqbench.files.atomic_write` writes before its rename (and a kill may leave behind).
TEMPORARY = re.compile(r"^\.(tmp-.*|.+\.tmp-\d+)$")


def environment(world: distributed.World, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a result depends on besides the config: versions, device, processes, threads, and
    which training images (`vqbench.data.data_digest`)."""
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
        **({"data": data} if data else {}),
    }


PLUGINS_FILE = "plugins.json"


def record_plugins(folder: Path) -> None:
    """Add the plugins this process loaded to `folder/plugins.json` (nothing when none was)."""
    loaded = loaded_plugins()
    if not loaded:
        return
    path = folder / PLUGINS_FILE
    recorded = _recorded_plugins(path)
    merged = list(dict.fromkeys(recorded + loaded))
    if merged != recorded:
        atomic_write_json(path, {"plugins": merged})


def _recorded_plugins(path: Path) -> list[str]:
    plugins = (read_json(path) or {}).get("plugins")
    return [p for p in plugins if isinstance(p, str)] if isinstance(plugins, list) else []


def load_recorded_plugins(folder: Path) -> None:
    """Load the plugins a run (or a suite's folder) was made with, so that `eval`, `probe` and
    `report` need no `--plugin` again. A recorded file that has moved is named in one line,
    unless a plugin of that file name was loaded from its new place (`--plugin NEW_PATH`)."""
    path = folder / PLUGINS_FILE
    for plugin in _recorded_plugins(path):
        if plugin.endswith(".py") and not Path(plugin).is_file():
            if any(Path(p).name == Path(plugin).name for p in loaded_plugins()):
                continue
            raise VQBenchError(
                f"plugin file '{plugin}' (recorded in '{path}') no longer exists; put it back "
                f"or pass its new place with --plugin PATH"
            )
        load_plugin(plugin)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @classmethod
    def owning(cls, checkpoint: Path) -> RunDir:
        """The run whose `checkpoints/` folder holds `checkpoint` (a `step-*` folder)."""
        return cls(Path(checkpoint).parent.parent)

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

    @property
    def figure_data_file(self) -> Path:
        return self.path / "figures.json"

    @property
    def reconstructions_file(self) -> Path:
        return self.path / "reconstructions.png"

    def figure_data(self) -> dict[str, Any] | None:
        """`figures.json`, or None for a run evaluated before evaluation wrote it."""
        return read_json(self.figure_data_file)

    @property
    def probe_file(self) -> Path:
        return self.path / "probe.json"

    @property
    def probe_samples_file(self) -> Path:
        return self.path / "probe-samples.png"

    def recorded_fingerprint(self) -> str | None:
        path = self.path / "fingerprint"
        return path.read_bytes().decode(errors="replace").strip() if path.is_file() else None

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
        """Nothing but the lock and half-written temporary files (a kill during the very first
        write) is in the folder."""
        return not self.path.exists() or not any(
            p.name != ".lock" and not TEMPORARY.match(p.name) for p in self.path.iterdir()
        )

    def recorded_config(self) -> dict[str, Any]:
        """The resolved config the folder records (`{}` when it has none or it is unreadable)."""
        try:
            data = yaml.safe_load(self.config_file.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    def difference(self, config) -> str:
        """` (first difference: optim.lr: 0.0002 there, 0.0001 here)`, or ''; for a run recorded
        before fingerprints covered the quantizer's defaults, that."""
        if config is None:
            return ""
        first = config.first_difference(self.recorded_config())
        if first:
            return f" (first difference: {first})"
        if self.recorded_fingerprint() == config.legacy_fingerprint():
            return (
                " (recorded by vqbench 0.2.0, whose fingerprint did not cover the quantizer's "
                "defaults: they may have changed since, e.g. the reference recipes)"
            )
        return ""

    def check(self, fingerprint: str, *, resume: bool, force: bool, config=None) -> bool:
        """Decide what to do, reading only (nothing is created); True means resume. With the
        run's `config`, a folder holding another run is refused naming the first setting that
        differs."""
        if self.path.exists() and not self.path.is_dir():
            raise VQBenchError(f"--out '{self.path}' is a file, not a folder; choose another --out")
        check_writable(self.path, "--out")
        holder = self.lock_holder()
        if holder is not None:
            raise VQBenchError(
                f"run folder '{self.path}' is in use by {holder}; wait for it to finish or "
                f"stop it, then try again"
            )
        if force or self._holds_nothing():
            return False
        self._check_entries()
        theirs = self.recorded_fingerprint()
        if theirs is None:
            raise VQBenchError(
                f"output folder '{self.path}' is not empty and holds no vqbench run; "
                f"choose another --out or pass --force to replace its contents"
            )
        if theirs != fingerprint:
            raise VQBenchError(
                f"output folder '{self.path}' holds a different run (fingerprint "
                f"{theirs}, this config {fingerprint}){self.difference(config)}; choose "
                f"another --out or pass --force to replace it"
            )
        if resume:
            return True
        state = self.status().get("state", "running")
        if state == "running":  # no process holds the lock (checked above): it was stopped
            raise VQBenchError(
                f"output folder '{self.path}' holds this run, interrupted (its status says "
                f"running, but no process holds its lock); pass --resume to continue it or "
                f"--force to start over"
            )
        raise VQBenchError(
            f"output folder '{self.path}' already holds this run ({state}); pass "
            f"--resume to continue it or --force to start over"
        )

    def _check_entries(self) -> None:
        """What a run folder holds has the right kind (a file, or the checkpoints folder)."""
        for name in ("fingerprint", "config.yaml", "env.json", "status.json", "metrics.jsonl"):
            if (self.path / name).exists() and not (self.path / name).is_file():
                raise VQBenchError(
                    f"'{self.path / name}' is not a file; remove it (or choose another --out)"
                )
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise VQBenchError(
                f"'{self.checkpoints}' is not a folder; remove it (or choose another --out)"
            )

    def _write_once(self, name: str, text: str) -> None:
        """Write `name` unless it already holds `text` (a start rewrites only what changed)."""
        path = self.path / name
        if not (path.is_file() and path.read_bytes() == text.encode()):
            atomic_write_text(path, text)

    def _on_rank0(self, action) -> Any:
        """Run `action` on rank 0; every process gets its result or its one-line error."""
        outcome: tuple[str, Any] = ("ok", None)
        if distributed.is_main_process():
            try:
                outcome = ("ok", action())
            except VQBenchError as err:
                outcome = ("error", str(err))
        outcome = distributed.broadcast_object(outcome)
        if outcome[0] == "error":
            raise VQBenchError(outcome[1])
        return outcome[1]

    def decide(self, config, world: distributed.World, *, resume: bool, force: bool) -> bool:
        """Whether this start resumes the run in the folder, decided before anything is written
        (rank 0 reads the folder; every process learns the outcome)."""
        fingerprint = config.fingerprint()
        return self._on_rank0(
            lambda: self.check(fingerprint, resume=resume, force=force, config=config)
        )

    def check_same_data(self, digest: dict[str, Any] | None) -> None:
        """A resumed run trains on the images its first start recorded (rank 0 checks)."""

        def check() -> None:
            recorded = self.environment().get("data")
            if recorded and digest and recorded != digest:
                raise VQBenchError(
                    f"the training images changed since this run started ({recorded['images']} "
                    f"images then, {digest['images']} now; listing {recorded['listing']} then, "
                    f"{digest['listing']} now); restore them, or start over with --force"
                )

        self._on_rank0(check)

    def prepare(
        self,
        config,
        world: distributed.World,
        *,
        resume: bool,
        force: bool,
        step: int = 0,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Rank 0 locks the folder and writes what a start records; `resume` is what `decide`
        said, and is checked again under the lock."""

        def write() -> None:
            if (
                self._prepare(config, world, resume=resume, force=force, step=step, data=data)
                != resume
            ):
                raise VQBenchError(
                    f"run folder '{self.path}' changed while this run was starting; try again"
                )

        self._on_rank0(write)

    def _prepare(
        self, config, world: distributed.World, *, resume: bool, force: bool, step: int, data
    ) -> bool:
        fingerprint = config.fingerprint()
        resuming = self.check(fingerprint, resume=resume, force=force, config=config)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise VQBenchError(
                f"cannot create the run folder '{self.path}' ({err.strerror}); choose another --out"
            ) from None
        self.acquire_lock()
        try:
            if resuming != resume:  # the folder changed since `decide`: write nothing
                self.release_lock()
                return resuming
            if force and not resuming:
                self.clear()
            self._write_once("fingerprint", fingerprint + "\n")
            self._write_once("config.yaml", yaml.safe_dump(config.resolved(), sort_keys=False))
            record_plugins(self.path)
            if not (self.path / "env.json").is_file():
                atomic_write_json(self.path / "env.json", environment(world, data))
            try:
                status = self.status()
            except VQBenchError:  # damaged: this start writes it again
                status = {}
            if status != {"state": "running", "step": step}:
                self.set_status("running", step)
            if resuming:
                self.truncate_log(step)
        except BaseException:
            self.release_lock()
            raise
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
    def lock_holder(self) -> str | None:
        """Who holds `.lock` now (its first line), or None; creates nothing."""
        if self._lock_fd is not None:
            return None
        try:
            fd = os.open(self.path / ".lock", os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 512).decode(errors="replace").strip() or "another process"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

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


class SuiteDir:
    """A suite's folder: `suite.yaml` (the suite as run, with its seeds) and its run folders."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def under(cls, root: str | Path, suite: str) -> SuiteDir:
        """`root/<suite>`: where `vqbench run --out root` puts a suite's runs."""
        return cls(Path(root) / suite)

    @classmethod
    def holding(cls, run: RunDir) -> SuiteDir:
        """The suite folder a run folder sits in (it may hold no suite: a lone run)."""
        return cls(run.path.parent)

    @property
    def suite_file(self) -> Path:
        return self.path / "suite.yaml"

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.path / run_id)

    def started_runs(self) -> list[RunDir]:
        """Run folders that have started (they record `env.json`), by name."""
        return [RunDir(p.parent) for p in sorted(self.path.glob("*/env.json"))]

    def record(self, spec: dict[str, Any]) -> None:
        """Write `suite.yaml` (atomically), creating the folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.suite_file, yaml.safe_dump(spec, sort_keys=False))
