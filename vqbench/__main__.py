import sys
from pathlib import Path

# `python -m vqbench` puts the working directory first on the import path: a stray `yaml.py`
# there would shadow PyYAML. vqbench is imported already; a plugin module in the working
# directory is still found (`vqbench.registry.load_plugin` looks there after everything else).
if sys.path and Path(sys.path[0] or ".").resolve() == Path.cwd().resolve():
    del sys.path[0]

from vqbench.cli import main  # noqa: E402

raise SystemExit(main())
