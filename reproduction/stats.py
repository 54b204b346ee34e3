"""The statistics the verdicts rest on: means over seeds, standard errors, Welch and paired
differences, and the pre-stated rule (a difference counts when it exceeds two standard errors)."""

from __future__ import annotations

import math
import statistics


def mean_se(xs: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n)); se is infinite for one value."""
    m = statistics.fmean(xs)
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("inf")
    return m, se


def diff(a: list[float], b: list[float]) -> tuple[float, float]:
    """Difference of means and its standard error (Welch): `d / se` is Welch's t statistic."""
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    return ma - mb, math.sqrt(sa**2 + sb**2)


def paired_diff(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of the per-seed differences and its standard error (the paired t statistic's parts)."""
    return mean_se([x - y for x, y in zip(a, b, strict=True)])


def greater(a: list[float], b: list[float]) -> bool:
    """mean(a) exceeds mean(b) by more than two standard errors (Welch)."""
    d, se = diff(a, b)
    return d > 2 * se


def three_way(a: list[float], b: list[float]) -> bool | None:
    """True if mean(a) exceeds mean(b) by 2 se, False if the reverse, None otherwise."""
    return True if greater(a, b) else (False if greater(b, a) else None)


def paired_three_way(a: list[float], b: list[float]) -> bool | None:
    """Like `three_way` on the per-seed differences (the secondary, paired test)."""
    m, se = paired_diff(a, b)
    return True if m > 2 * se else (False if m < -2 * se else None)


def not_below(a: list[float], b: list[float]) -> bool:
    """mean(a) is not below mean(b) by more than two standard errors."""
    d, se = diff(a, b)
    return d > -2 * se


def fmt(xs: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """`mean ± std` (sample std over seeds)."""
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def effect(a: list[float], b: list[float]) -> str:
    """The pre-stated test (Welch), then the paired one (runs of one seed share the data order;
    added after the first results were seen)."""
    d, se = diff(a, b)
    if len(a) != len(b):  # pooled groups of runs: no pairing
        return f"{d:+.3f} (2 se = {2 * se:.3f})"
    _, pse = paired_diff(a, b)
    return f"{d:+.3f} (2 se = {2 * se:.3f}; paired by seed: 2 se = {2 * pse:.3f})"


def verdict(ok: bool | None) -> str:
    return {True: "**reproduced**", False: "**not reproduced**", None: "**inconclusive**"}[ok]
