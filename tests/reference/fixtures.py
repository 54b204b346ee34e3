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


def surrogate_backward(z_q: torch.Tensor, loss: torch.Tensor, upstream: torch.Tensor) -> None:
    """``loss + <z_q, upstream>`` backward, as ``tools/reference_fixtures`` did on the
    reference side (a fixed decoder gradient ``upstream`` arriving at ``z_q``)."""
    (loss + (z_q * upstream).sum()).backward()


def init_statistics(codes: torch.Tensor) -> torch.Tensor:
    """``[|mean|, spread, mean norm, max |entry|]`` of a ``(K, d)`` codebook (the same
    statistics ``tools/reference_fixtures/common.py`` records from the reference)."""
    codes = codes.detach().float()
    mean = codes.mean(0)
    spread = (codes - mean).pow(2).sum(1).mean().sqrt()
    return torch.stack([mean.norm(), spread, codes.norm(dim=1).mean(), codes.abs().max()])
