"""Suites: many runs under identical settings, parsed, validated, expanded and fingerprinted.

A suite file names shared settings (everything of a run config but the quantizer) and a list of
runs, each naming a quantizer and its parameters, optionally post-training operations
(`post: [{extend: 131072}, {resample: 32768}]`) and the paper row it mirrors. Runs may override
only the fields the suite lists under `varies` (default: nothing besides the quantizer), so
every run of a block shares one settings fingerprint. `blocks:` groups runs with their own
shared settings (Table 1's three blocks). Everything is validated before anything runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from vqbench.config import RunConfig, format_config_error, parse_run_config, read_yaml
from vqbench.errors import VQBenchError


class PostOperation(pydantic.BaseModel):
    """A post-training evaluation: Group-VQ's `extend: N` or `resample: N` (Algorithm 2)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    extend: pydantic.PositiveInt | None = None
    resample: pydantic.PositiveInt | None = None
    label: str | None = None
    paper: dict[str, Any] | None = None

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> PostOperation:
        if (self.extend is None) == (self.resample is None):
            raise ValueError("each post entry names exactly one of extend: N or resample: N")
        return self

    @property
    def op(self) -> tuple[str, int]:
        return ("extend", self.extend) if self.extend is not None else ("resample", self.resample)


class SuiteRun(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    label: str | None = None  # the method name printed in the table
    quantizer: dict[str, Any]
    overrides: dict[str, Any] = {}
    post: list[PostOperation] = []
    paper: dict[str, Any] | None = None  # fields that pick the paper row, e.g. {method: SimVQ}


class SuiteBlock(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    title: str = ""
    paper: str | None = None  # e.g. "table1.blocks.0", "table4"
    shared: dict[str, Any] = {}
    runs: list[SuiteRun] = pydantic.Field(min_length=1)


class SuiteFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    suite: str
    title: str = ""
    description: str = ""
    plugins: list[str] = []
    seeds: list[pydantic.NonNegativeInt] = pydantic.Field([0], min_length=1)
    varies: list[str] = []
    shared: dict[str, Any] = {}
    paper: str | None = None
    runs: list[SuiteRun] = []
    blocks: list[SuiteBlock] = []
    notes: list[str] = []

    @pydantic.model_validator(mode="after")
    def _runs_or_blocks(self) -> SuiteFile:
        if bool(self.runs) == bool(self.blocks):
            raise ValueError("a suite needs a non-empty 'runs' list or 'blocks', not both")
        return self


@dataclass
class ExpandedRun:
    block: int
    name: str
    label: str
    seed: int
    config: RunConfig
    post_ops: list[PostOperation]
    paper: dict[str, Any] | None
    settings_fingerprint: str

    @property
    def run_id(self) -> str:
        return f"{self.name}-s{self.seed}"

    @property
    def post(self) -> list[tuple[str, int]]:
        return [p.op for p in self.post_ops]


@dataclass
class Suite:
    source: Path
    spec: SuiteFile
    runs: list[ExpandedRun] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.suite

    def blocks(self) -> list[SuiteBlock]:
        if self.spec.blocks:
            return self.spec.blocks
        return [SuiteBlock(title=self.spec.title, paper=self.spec.paper, runs=self.spec.runs)]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        keys += _flat_keys(value, path + ".") if isinstance(value, dict) and value else [path]
    return keys


def settings_fingerprint(config: RunConfig) -> str:
    """Fingerprint of everything but the quantizer and the seed: equal across a fair block."""
    data = config.resolved()
    for key in ("name", "eval", "quantizer", "seed", "plugins"):
        data.pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def load_suite(path: str | Path, seeds: int | None = None) -> Suite:
    """Parse, validate and expand a suite; one-line errors naming the file and the field."""
    path = Path(path)
    data = read_yaml(path)
    try:
        spec = SuiteFile(**data)
    except pydantic.ValidationError as err:
        raise VQBenchError(format_config_error(str(path), err, SuiteFile)) from None
    suite = Suite(path, spec)
    seed_list = list(range(seeds)) if seeds is not None else spec.seeds
    seen = set()
    for b, block in enumerate(suite.blocks()):
        shared = deep_merge(spec.shared, block.shared)
        for run in block.runs:
            if run.name in seen:
                raise VQBenchError(
                    f"{path}: run name '{run.name}' appears twice; names must be "
                    f"unique (they name the run folders)"
                )
            seen.add(run.name)
            illegal = [
                k
                for k in _flat_keys(run.overrides)
                if not any(k == v or k.startswith(v + ".") for v in spec.varies)
            ]
            if illegal:
                raise VQBenchError(
                    f"{path}: run '{run.name}' overrides '{illegal[0]}', which the suite does "
                    f"not declare as varied; add it to 'varies' or move it to 'shared'"
                )
            for seed in seed_list:
                merged = deep_merge(shared, run.overrides)
                merged.update(
                    name=f"{spec.suite}/{run.name}-s{seed}",
                    seed=seed,
                    quantizer=run.quantizer,
                    plugins=spec.plugins,
                )
                config = parse_run_config(merged, f"{path} (run '{run.name}')")
                suite.runs.append(
                    ExpandedRun(
                        block=b,
                        name=run.name,
                        label=run.label or run.name,
                        seed=seed,
                        config=config,
                        post_ops=list(run.post),
                        paper=run.paper,
                        settings_fingerprint=settings_fingerprint(config),
                    )
                )
    return suite


# ---- running ---------------------------------------------------------------------------
def run_dir_of(root: Path, suite: Suite, run: ExpandedRun) -> Path:
    return root / suite.name / run.run_id


def post_result_file(run_dir: Path, op: str, size: int) -> Path:
    return run_dir / f"eval-{op}-{size}.json"


def run_is_complete(run_dir: Path, run: ExpandedRun) -> bool:
    from vqbench.train import read_status

    fingerprint = run_dir / "fingerprint"
    return (
        fingerprint.is_file()
        and fingerprint.read_text().strip() == run.config.fingerprint()
        and read_status(run_dir).get("state") == "finished"
        and (run_dir / "eval.json").is_file()
        and all(post_result_file(run_dir, op, n).is_file() for op, n in run.post)
    )


def check_data_folders(runs: list[ExpandedRun]) -> None:
    """Every image folder a run needs exists (listing them waits for the run itself)."""
    for run in runs:
        data = run.config.data
        if data.kind != "imagefolder":
            continue
        for key, folder in (("root", data.root), ("val_root", data.val_root)):
            if not Path(folder).is_dir():
                raise VQBenchError(
                    f"dataset folder '{folder}' does not exist (data.{key} of "
                    f"run '{run.name}'); point it at your copy of the images"
                )


def check_run_folders(root: Path, suite: Suite, runs: list[ExpandedRun], force: bool) -> None:
    """Refuse, before training anything, folders that hold a different run."""
    for run in runs:
        fingerprint = run_dir_of(root, suite, run) / "fingerprint"
        if (
            not force
            and fingerprint.is_file()
            and fingerprint.read_text().strip() != run.config.fingerprint()
        ):
            raise VQBenchError(
                f"{fingerprint.parent} holds a run with other settings (fingerprint "
                f"{fingerprint.read_text().strip()}, suite {run.config.fingerprint()}); use "
                f"another --out or pass --force to retrain it"
            )


def run_suite(
    suite: Suite,
    *,
    root: Path,
    results: Path,
    only: list[str] | None = None,
    device: str | None = None,
    force: bool = False,
    log=print,
) -> list[Path]:
    """Train and evaluate every run not finished yet; resume interrupted ones; then report."""
    from vqbench.evaluate import evaluate_run
    from vqbench.report import write_report
    from vqbench.train import read_status, train, write_status

    runs = [r for r in suite.runs if not only or r.name in only]
    if only and not runs:
        names = sorted({r.name for r in suite.runs})
        raise VQBenchError(
            f"--only {only} matches no run of {suite.source}; runs: {', '.join(names)}"
        )
    check_data_folders(runs)
    check_run_folders(root, suite, runs, force)
    record_suite(suite, root / suite.name)
    done = []
    for i, run in enumerate(runs, 1):
        run_dir = run_dir_of(root, suite, run)
        if run_is_complete(run_dir, run) and not force:
            log(f"[{i}/{len(runs)}] {run.run_id}: finished earlier, skipped")
            done.append(run_dir)
            continue
        status = read_status(run_dir).get("state")
        resume = status in ("running", "trained") and not force
        log(f"[{i}/{len(runs)}] {run.run_id}: {'resuming' if resume else 'training'}")
        if status != "trained" or force:
            train(run.config, run_dir, resume=resume, force=force, device=device)
        evaluate_run(run_dir, device=device)
        for op, size in run.post:
            evaluate_run(run_dir, device=device, **{op: size})
        write_status(run_dir, state="finished", step=read_status(run_dir).get("step"))
        done.append(run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        write_report(suite, root / suite.name, results)
    return done


def record_suite(suite: Suite, folder: Path) -> None:
    """Keep the suite (with the seeds actually used) beside its runs, for `vqbench report`."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    spec = suite.spec.model_dump(mode="json", exclude_defaults=True)
    spec["seeds"] = sorted({r.seed for r in suite.runs})
    (folder / "suite.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def describe(suite: Suite) -> list[list[Any]]:
    """Rows of `vqbench run --dry-run`: what would run, its fingerprints and its cost."""
    from vqbench.train import build_model

    rows = []
    for run in suite.runs:
        c = run.config
        steps = c.train.steps
        budget = f"{steps} steps" if steps else f"{c.train.epochs} epochs"
        model = build_model(c)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        params = ", ".join(f"{k}={v}" for k, v in c.quantizer.params.items())
        images = f"{steps * c.train.batch_size:,}" if steps else "epochs x dataset"
        rows.append(
            [
                run.block,
                run.run_id,
                f"{c.quantizer.name}({params})",
                " ".join(f"{op} {n}" for op, n in run.post) or "-",
                c.fingerprint(),
                run.settings_fingerprint,
                budget,
                c.train.batch_size,
                images,
                f"{trainable / 1e6:.2f}M",
            ]
        )
    return rows
