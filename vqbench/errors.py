"""Errors a user can mend. The CLI prints their message as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VQBenchError(ValueError):
    """Bad input: the message says what is wrong and how to mend it, in one line.

    Raised in a DataLoader worker (an image that cannot be decoded), it comes back to the main
    process rebuilt from a message holding the worker's traceback; that is cut back to the one
    line raised.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        if "\nOriginal Traceback (most recent call last):" in message:
            message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(message, *args)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" did you mean 'simvq'?"` for the closest choice, or `""` when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""
