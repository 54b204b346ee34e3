"""`python -m vqbench_reproduction [RESULTS_DIR]`: write RESULTS_DIR/REPRODUCTION.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vqbench_reproduction.write import write

from vqbench.errors import VQBenchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqbench_reproduction",
        description="Check the Group-VQ paper's claims on the reports of suites/repro/*.yaml "
        "and write RESULTS_DIR/REPRODUCTION.md.",
    )
    parser.add_argument("results", nargs="?", default="results", help="reports folder")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {write(Path(args.results))}")
    except VQBenchError as err:
        print(f"vqbench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
