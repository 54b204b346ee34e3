"""Read the fixtures that ``tools/reference_fixtures/*.py`` wrote from the official code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Fixture:
    """One reference run: its tensors and where they came from (repository, commit, files)."""

    name: str
    meta: dict
    tensors: dict[str, torch.Tensor]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    @property
    def settings(self) -> dict:
        return self.meta["settings"]


def load_fixture(name: str) -> Fixture:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    assert len(meta["commit"]) == 40, f"fixture {name} does not record its reference commit"
    return Fixture(name, meta, load_file(FIXTURES / f"{name}.safetensors"))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, **tol) -> None:
    """``torch.testing.assert_close`` with the quantity named in the message."""
    torch.testing.assert_close(
        actual.detach().to(expected.dtype), expected, msg=lambda m: f"{what}: {m}", **tol
    )
