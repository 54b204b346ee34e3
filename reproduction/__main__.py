"""`python -m vqbench_reproduction [RESULTS_DIR]`: write RESULTS_DIR/REPRODUCTION.md."""

from __future__ import annotations

import sys
from pathlib import Path

from vqbench_reproduction.write import write

if __name__ == "__main__":
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results")
    print(f"wrote {write(results)}")
