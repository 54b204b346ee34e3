"""Files that a kill never leaves half-written, and the JSON-lines log that survives one.

Every file vqbench writes (run folders, checkpoints, evaluation results, reports, plots) goes
through `atomic_write`: the content is written to a temporary name in the same folder, flushed
to disk and renamed over the target, so a reader sees the old file or the new one, never a
mix. `read_jsonl` reads a log whose last line a kill may have cut short.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vqbench.bounded import LIMITS, check_json, check_size, json_depth, read_text
from vqbench.errors import VQBenchError


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_error(path: Path, err: OSError) -> VQBenchError:
    """A failed write (disk full, read-only, permissions) as one line naming the file."""
    reason = err.strerror or str(err) or type(err).__name__
    return VQBenchError(
        f"cannot write '{path}' ({reason}); make room on its disk or choose a writable folder"
    )


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    If the block raises, the temporary file is removed and `path` is left as it was; an
    `OSError` (disk full, read-only folder) becomes a one-line `VQBenchError`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise write_error(path, err) from None
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def check_writable(folder: str | Path, what: str) -> None:
    """`folder` is a folder this process may write into, or can be made one (writes nothing)."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise VQBenchError(
                f"{what} '{folder}' cannot be a folder: '{parent}' is a file; choose another"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise VQBenchError(
                f"{what} '{folder}' cannot be written: '{parent}' is read-only (or not yours); "
                f"choose another"
            )
        return


def load_json(path: str | Path) -> Any:
    """The JSON value in `path`, within `vqbench.bounded`'s limits (size, then depth)."""
    path = Path(path)
    try:
        text = read_text(path, LIMITS.json_bytes, "JSON file")
        check_json(text, path)
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VQBenchError(
            f"'{path}' is not valid JSON ({err.__class__.__name__}); delete it, or restore it "
            f"from a copy"
        ) from None


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from `path`, None if the file is missing, a clear error if it is not JSON."""
    path = Path(path)
    if not path.is_file():
        return None
    data = load_json(path)
    if not isinstance(data, dict):
        raise VQBenchError(f"'{path}' must hold a JSON object; delete it to start afresh")
    return data


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one complete JSON line (flushed, so a later kill cannot cut it)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(Path(path), err) from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a line a kill cut short (or damaged bytes, or nested
    past `LIMITS.depth`) is skipped. A log past `LIMITS.log_bytes` is refused unread."""
    path = Path(path)
    if not path.is_file():
        return []
    check_size(path, LIMITS.log_bytes, "log")
    records = []
    for line in path.read_bytes().decode(errors="replace").splitlines():
        if json_depth(line) > LIMITS.depth:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # an incomplete line (the process was killed while writing it)
        if isinstance(record, dict):
            records.append(record)
    return records
