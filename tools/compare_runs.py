"""Compare the eval*.json numbers of two folders of runs (before / after a change).

    python tools/compare_runs.py BEFORE AFTER

Every `eval*.json` under BEFORE (matched by its path relative to BEFORE) must exist under AFTER
with every number identical (strings such as `n/a (...)` too); fields that name the file's
time or place are not compared. Exit code 0 when identical, 1 with one line per difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(leaves(inner, f"{prefix}{key}."))
        return out
    if isinstance(value, list):
        out = {}
        for i, inner in enumerate(value):
            out.update(leaves(inner, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def compare(before: Path, after: Path) -> list[str]:
    problems, files = [], sorted(before.rglob("eval*.json"))
    if not files:
        return [f"no eval*.json under {before}"]
    for old in files:
        rel = old.relative_to(before)
        new = after / rel
        if not new.is_file():
            problems.append(f"{rel}: missing after")
            continue
        a, b = leaves(json.loads(old.read_text())), leaves(json.loads(new.read_text()))
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                problems.append(
                    f"{rel}: {key}: {a.get(key, '<absent>')} != {b.get(key, '<absent>')}"
                )
    print(f"compared {len(files)} eval files, {len(problems)} differences")
    return problems


if __name__ == "__main__":
    found = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(found))
    sys.exit(1 if found else 0)
