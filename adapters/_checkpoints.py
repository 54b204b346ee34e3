"""Training checkpoints read for their weights, without the training code that pickled them.

A released checkpoint is often the whole training state. Lightning's `.ckpt` files (taming-
transformers, SEED-Voken) pickle Lightning's own objects, e.g. `ModelCheckpoint` callbacks
(keyed by their class in Lightning 1.x); LlamaGen's `.pt` files pickle the training script's
`argparse.Namespace`. Loading them tensors-only fails on those objects, and loading them
trusted needs the training code (`pytorch_lightning`) installed. Neither is needed for the
weights: `read_training_checkpoint` loads tensors-only with each such object read into an
inert stand-in, a class of the same name that runs no code (torch's `safe_globals` with
`(stand-in, name)` pairs). Any other Python object in the file still needs trust.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vqbench.published import read_checkpoint

#: Lightning's modules: the objects it pickles into a `.ckpt` are its own training state.
LIGHTNING = ("pytorch_lightning.", "lightning.", "lightning_fabric.")


def stand_in(name: str) -> type:
    """An empty class named as the pickled global `name` (`module.Class`)."""
    module, _, qualname = name.rpartition(".")
    return type(qualname, (), {"__module__": module, "__doc__": f"inert stand-in for {name}"})


def pickled_globals(path: str | Path) -> list[str]:
    """The classes and functions a torch file pickles beyond tensors (none for other files,
    which `read_checkpoint` then judges)."""
    if Path(path).suffix == ".safetensors" or not Path(path).is_file():
        return []
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, OSError):  # not a torch zip file: read_checkpoint judges
        return []


def read_training_checkpoint(
    path: str | Path, *, trust: bool = False, inert: Iterable[str] = LIGHTNING
) -> dict[str, Any]:
    """`read_checkpoint(path)`, with the pickled globals whose names start with a prefix in
    `inert` read into stand-ins (no trust needed for them)."""
    prefixes = tuple(inert)
    names = pickled_globals(path)
    standing = [name for name in names if name.startswith(prefixes)]
    if not standing:
        return read_checkpoint(path, trust=trust)
    others = len(standing) < len(names)
    with torch.serialization.safe_globals([(stand_in(name), name) for name in standing]):
        return read_checkpoint(path, trust=trust and others)
