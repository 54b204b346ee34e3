"""What the claims read: the suites' report JSON, and per-run evidence (training curves, the
trained codebooks' per-group code norms that evaluation wrote into `figures.json`; no trained
weights are loaded). `Evidence` is passed to each claim, so tests can hand it made-up runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from scipy.stats import f_oneway

from vqbench.build import run_config
from vqbench.errors import VQBenchError
from vqbench.files import load_json
from vqbench.quantizer import create_quantizer
from vqbench.rundir import RunDir

RESULTS = Path("results")


def load_report(suite: str, results: Path = RESULTS) -> dict[str, Any]:
    path = results / f"{suite}.json"
    if not path.is_file():
        raise VQBenchError(
            f"{path} is missing: run `vqbench run suites/repro/"
            f"{suite.removeprefix('repro-')}.yaml` first"
        )
    return load_json(path)  # bounded: size and depth (vqbench.bounded)


def values(row: dict[str, Any], key: str) -> list[float]:
    """One metric of a report row, one value per seed."""
    return [float(r[key]) for r in row["raw"] if isinstance(r.get(key), (int, float))]


def row_of(report: dict[str, Any], run: str, operation=None) -> dict[str, Any]:
    """The row of `run` (and post-training `operation`, e.g. ["extend", 2048])."""
    for row in report["rows"]:
        op = row["operation"]
        if row["run"] == run and (
            op == operation
            or (op is not None and operation is not None and list(op) == list(operation))
        ):
            return row
    raise KeyError((run, operation))


class Evidence:
    """Per-run evidence beyond the report: training curves and trained codebooks."""

    def usage_curve(self, run_dir: str) -> list[float]:
        """Train usage of each epoch."""
        return [r["train_usage"] for r in RunDir(run_dir).epoch_records()]

    def norm_anova(self, run_dir: str) -> tuple[float, float]:
        """One-way ANOVA p-value of code norms across groups: trained, and at initialisation."""
        run = RunDir(run_dir)
        data = run.figure_data()
        if data is None or data["groups"] is None:
            raise VQBenchError(
                f"{run_dir} has no per-group code norms (figures.json); write them with "
                f"`vqbench eval {run_dir} --figures-only`"
            )
        trained = f_oneway(*data["groups"]["code_norms"]).pvalue
        config = run_config(run)
        torch.manual_seed(config.seed)
        initial = create_quantizer(config.quantizer.name, **config.quantizer.params)
        with torch.no_grad():
            norms, group = initial.codebook().norm(dim=1), initial.code_groups()
        by_group = [norms[group == j].numpy() for j in range(int(group.max()) + 1)]
        return float(trained), float(f_oneway(*by_group).pvalue)

    def epochs_to_full(self, run_dir: str, fraction: float = 0.9) -> int:
        """First epoch (1-based) whose train usage reaches `fraction` of the run's best epoch."""
        usage = self.usage_curve(run_dir)
        best = max(usage)
        return next(i for i, u in enumerate(usage, 1) if u >= fraction * best)
