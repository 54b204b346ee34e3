"""YAML and JSON read within fixed bounds, checked before any Python object is built.

A YAML file can be small on disk and enormous in memory: anchors whose aliases nest a few
levels deep ("billion laughs") expand to billions of nodes once a consumer walks them, and a
file nested thousands of levels deep exhausts Python's recursion. Every YAML and JSON file
vqbench reads (suites, run configs, the `config.yaml` of a run folder, `eval.json`,
`status.json`, checksums, the `metrics.jsonl` log) passes these checks first:

* its size on disk (`stat`, before a byte is read);
* YAML: PyYAML's event stream (its parser is iterative and builds no tree) is walked once to
  count the nesting depth, the aliases and the nodes the document holds with every alias
  expanded (each anchor's expanded size is known when its node ends, so an alias adds that
  size in O(1));
* JSON: the nesting depth, from the brackets outside strings.

The limits (`LIMITS`) are far above any real file: the largest suite is 5 KiB, about 400
nodes, 6 levels deep and has no alias. A file over one is one line naming the file, the limit
and how to mend it (exit 2).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

from vqbench.errors import VQBenchError


@dataclass(frozen=True)
class Limits:
    """What one file may cost (see the module docstring for the real files' sizes)."""

    yaml_bytes: int = 1 << 20  # 1 MiB
    json_bytes: int = 64 << 20  # 64 MiB (eval.json, probe.json, checksums: < 200 KiB)
    log_bytes: int = 1 << 30  # 1 GiB (metrics.jsonl, one line per logged step)
    depth: int = 100
    aliases: int = 1_000
    nodes: int = 100_000  # with every alias expanded


LIMITS = Limits()


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size:,} bytes"


def check_size(path: str | Path, max_bytes: int, what: str = "file") -> None:
    """Refuse `path` if its size on disk passes `max_bytes` (nothing is read)."""
    try:
        size = os.stat(path).st_size
    except OSError as err:
        raise VQBenchError(f"{what} '{path}' cannot be read ({err.strerror})") from None
    if size > max_bytes:
        raise VQBenchError(
            f"{what} '{path}' is {_mib(size)}, over the limit of {_mib(max_bytes)} for such a "
            f"file; check that it is the file you meant (a real one is far smaller)"
        )


def read_text(path: str | Path, max_bytes: int, what: str = "file") -> str:
    """The UTF-8 text of `path`, refused by its size on disk before it is read."""
    check_size(path, max_bytes, what)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # a file that grew since stat is still bounded
    except OSError as err:
        raise VQBenchError(f"{what} '{path}' cannot be read ({err.strerror})") from None
    if len(data) > max_bytes:
        raise VQBenchError(f"{what} '{path}' grew past {_mib(max_bytes)} while being read")
    return data.decode()  # UnicodeDecodeError: the callers say "not a text file"


def _over(path: Path | str, what: str, limit: int, fix: str) -> VQBenchError:
    """`'x.yaml': its nesting depth passes the limit of 100; flatten it (...)`."""
    return VQBenchError(
        f"'{path}': {what} passes the limit of {limit:,}; {fix} (a real file is far below it)"
    )


if TYPE_CHECKING:
    import yaml

NO_ALIASES = "write it out without anchors and aliases (&name, *name)"


class _YamlCost:
    """Depth, alias count and expanded node count of a YAML event stream, checked as it goes.

    Each open collection is a frame `[anchor, nodes before it, height of its tallest child]`;
    an anchor records `(expanded nodes, height)` of its node, which an alias adds in place."""

    def __init__(self, path: Path | str, limits: Limits) -> None:
        self.path, self.limits = path, limits
        self.frames: list[list] = []
        self.anchors: dict[str, tuple[int, int]] = {}
        self.nodes = self.aliases = 0

    def _node(self, height: int) -> None:
        """A node of `height` (0: a scalar) in the open collection."""
        if len(self.frames) + height > self.limits.depth:
            raise _over(self.path, "its nesting depth", self.limits.depth, "flatten it")
        if self.frames:
            self.frames[-1][2] = max(self.frames[-1][2], height)

    def _add(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.limits.nodes:
            raise _over(
                self.path, "its node count with aliases expanded", self.limits.nodes, NO_ALIASES
            )

    def event(self, event: yaml.Event) -> None:
        import yaml  # here, not at import: `python -m vqbench` must not import a stray yaml.py

        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self._node(1)  # its own depth, before its children are read
            self.frames.append([event.anchor, self.nodes, 0])
            self._add(1)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, start, tallest = self.frames.pop()
            self._node(tallest + 1)
            if anchor is not None:
                self.anchors[anchor] = (self.nodes - start, tallest + 1)
        elif isinstance(event, yaml.ScalarEvent):
            self._add(1)
            self._node(0)
            if event.anchor is not None:
                self.anchors[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.aliases:
                raise _over(self.path, "its alias count", self.limits.aliases, NO_ALIASES)
            nodes, height = self.anchors.get(event.anchor, (1, 0))  # unknown: PyYAML says so
            self._add(nodes)
            self._node(height)


def check_yaml(text: str, path: Path | str, limits: Limits = LIMITS) -> None:
    """Refuse YAML `text` whose depth, aliases or expanded nodes pass `limits`.

    Syntax errors are left to the loader that follows (it reports them with their line)."""
    import yaml

    cost = _YamlCost(path, limits)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            cost.event(event)
    except yaml.YAMLError:
        return


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """Deepest nesting of JSON `text`: brackets outside strings, counted without parsing."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def check_json(text: str, path: Path | str, limits: Limits = LIMITS) -> None:
    """Refuse JSON `text` nested deeper than `limits.depth`."""
    depth = json_depth(text)
    if depth > limits.depth:
        raise _over(path, f"its nesting depth ({depth:,})", limits.depth, "flatten it")


# ---- sizes that cannot fit -------------------------------------------------------------------
def format_bytes(size: float) -> str:
    """`7.3 TiB`, `512.0 MiB`, `96 bytes`."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{int(size)} bytes"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """What this process's cgroup (v2) still allows, where it sets a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_memory(device: object = None) -> tuple[int, str]:
    """(bytes, where) a new allocation can take: a CUDA device's free memory, or the host's
    `MemAvailable` (capped by the cgroup's limit; physical memory where neither is known)."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"{device} has"
    known = [n for n in (_meminfo_available(), _cgroup_room()) if n is not None]
    if not known:  # pragma: no cover - non-Linux
        known = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    return min(known), "this machine has"


def check_fits(what: str, needed: int, fix: str, device: object = None) -> None:
    """Refuse `what` (e.g. `--extend 1000000000000`) if `needed` bytes pass what is available.

    Called before the allocation; the error names the size, both amounts and the fix."""
    available, where = available_memory(device)
    if needed > available:
        raise VQBenchError(
            f"{what} needs {format_bytes(needed)} of memory and {where} "
            f"{format_bytes(available)} available; {fix}"
        )
