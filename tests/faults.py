"""A test plugin (`vqbench --plugin tests/faults.py ...`) that kills or pauses vqbench at a chosen
write, to test what a kill -9 at that moment leaves behind.

`VQBENCH_KILL_AT=NAME[#N]`: at the N-th (default first) file write whose file name contains
NAME, write half of the bytes, flush them to disk and SIGKILL this process: the file is left
as a kill mid-write leaves it. `VQBENCH_PAUSE_AT=NAME[#N]`: at that write, create the file
`VQBENCH_PAUSED` names and sleep (the test then does what it wants and kills the process).

Writes are seen where Python opens a file for writing (`open`, `Path.write_text`, ...) and
where torch and safetensors write checkpoints (`torch.save`, `safetensors.torch.save_file`).
"""

from __future__ import annotations

import builtins
import io
import os
import signal
import time
from pathlib import Path

import torch


def _target(variable: str) -> tuple[str, int] | None:
    value = os.environ.get(variable)
    if not value:
        return None
    name, _, count = value.partition("#")
    return name, int(count or 1)


KILL, PAUSE = _target("VQBENCH_KILL_AT"), _target("VQBENCH_PAUSE_AT")
_seen: dict[str, int] = {}


def _hit(target: tuple[str, int] | None, path) -> bool:
    if target is None or target[0] not in Path(os.fspath(path)).name:
        return False
    key = f"{id(target)}"
    _seen[key] = _seen.get(key, 0) + 1
    return _seen[key] == target[1]


def _die_after_half(path, data: bytes) -> None:
    with _real_open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _pause() -> None:
    Path(os.environ["VQBENCH_PAUSED"]).write_text(str(os.getpid()))
    time.sleep(300)


class _DyingFile:
    """A file whose first write is cut in half, then the process is killed."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data):
        half = data[: max(1, len(data) // 2)]
        self._file.write(half)
        self._file.flush()
        os.fsync(self._file.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


_real_open = io.open


def _open(file, mode="r", *args, **kwargs):
    # (not "r+": `atomic_write` reopens its temporary file that way only to fsync it)
    writing = isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax")
    if writing and _hit(PAUSE, file):
        _pause()
    f = _real_open(file, mode, *args, **kwargs)
    if writing and _hit(KILL, file):
        return _DyingFile(f)
    return f


builtins.open = io.open = _open

_real_torch_save = torch.save


def _torch_save(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)):
        if _hit(PAUSE, f):
            _pause()
        if _hit(KILL, f):
            buffer = io.BytesIO()
            _real_torch_save(obj, buffer, *args, **kwargs)
            _die_after_half(f, buffer.getvalue())
    return _real_torch_save(obj, f, *args, **kwargs)


torch.save = _torch_save


def _patch_safetensors() -> None:
    import safetensors.torch

    import vqbench.checkpoint

    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if _hit(PAUSE, filename):
            _pause()
        if _hit(KILL, filename):
            _die_after_half(filename, safetensors.torch.save(tensors))
        return real(tensors, filename, *args, **kwargs)

    vqbench.checkpoint.save_file = save_file


_patch_safetensors()
