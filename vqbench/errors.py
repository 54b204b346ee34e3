"""Errors a user can mend. The CLI prints their message as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VQBenchError(ValueError):
    """Bad input: the message says what is wrong and how to mend it, in one line."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" did you mean 'simvq'?"` for the closest choice, or `""` when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""
