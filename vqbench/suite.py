"""Suites: many runs under identical settings, parsed, validated, expanded and fingerprinted.

(Running them is `vqbench.runner`'s job; reporting, `vqbench.report`'s.)

A suite file names shared settings (everything of a run config but the quantizer) and a list of
runs, each naming a quantizer and its parameters, optionally post-training operations
(`post: [{extend: 131072}, {resample: 32768}]`) and the paper row it mirrors. Runs may override
only the fields the suite lists under `varies` (default: nothing besides the quantizer), so
every run of a block shares one settings fingerprint. `blocks:` groups runs with their own
shared settings (Table 1's three blocks). An optional `probe:` section (`vqbench.config`'s
`ProbeConfig`, run by `vqbench.probe`) trains the same autoregressive prior on every run's
tokens after its evaluation. An optional `tokenizers:` section lists published tokenizers
(`{name, label, adapter, checkpoint, options}`), evaluated and probed under the same data and
eval settings and reported beside the trained rows.
Everything is validated before anything runs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from vqbench.config import (
    ProbeConfig,
    RunConfig,
    check_name,
    format_config_error,
    parse_run_config,
    read_yaml,
)
from vqbench.errors import VQBenchError, did_you_mean
from vqbench.published import get_adapter_class
from vqbench.published_run import PublishedConfig, parse_published_config
from vqbench.registry import load_plugin


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

    @pydantic.field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name, "run name")


class SuiteTokenizer(pydantic.BaseModel):
    """A published tokenizer shown beside the trained rows (`tokenizers:`): an adapter
    (`vqbench.tokenizers`), its checkpoint file and options, evaluated (and probed, when the
    suite probes) under the data and eval settings of the block it sits in."""

    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    label: str | None = None
    adapter: str
    checkpoint: str
    options: dict[str, Any] = {}
    trust: bool = False  # the checkpoint may hold pickled Python objects
    block: pydantic.NonNegativeInt = 0  # the block whose table (and settings) it joins

    @pydantic.field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name, "tokenizer name")


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
    probe: ProbeConfig | None = None  # the downstream probe, identical for every run
    baseline: str | None = None  # a run's name: the report marks what differs from its row
    tokenizers: list[SuiteTokenizer] = []  # published tokenizers beside the trained rows

    @pydantic.field_validator("suite")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_name(name, "suite name")

    @pydantic.field_validator("seeds", mode="before")
    @classmethod
    def _a_list_of_seeds(cls, seeds: Any) -> Any:
        if not isinstance(seeds, list):
            raise ValueError("give a list of seeds, e.g. [0, 1, 2] (or --seeds N for 0 .. N-1)")
        if len(set(map(str, seeds))) != len(seeds):
            raise ValueError("a seed appears twice; each seed names one run folder per run")
        return seeds

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
class ExpandedTokenizer:
    """A published tokenizer of the suite with the settings it is evaluated under."""

    block: int
    name: str
    label: str
    config: PublishedConfig

    @property
    def run_id(self) -> str:
        return self.name


@dataclass
class Suite:
    source: Path
    spec: SuiteFile
    runs: list[ExpandedRun] = field(default_factory=list)
    tokenizers: list[ExpandedTokenizer] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.suite

    @property
    def probe(self) -> ProbeConfig | None:
        return self.spec.probe

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


def _run_setting_hint(err: pydantic.ValidationError) -> str:
    """For a run that names a shared setting (`runs.2.optim`): how a run changes one."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if first["type"] != "extra_forbidden" or len(loc) < 3 or loc[-3] != "runs":
        return ""
    key = loc[-1]
    if key not in RunConfig.model_fields:
        return ""
    return (
        f"; a run changes a shared setting through 'overrides' ({{{key}: ...}}), with "
        f"'{key}' (or '{key}.FIELD') listed under the suite's 'varies'"
    )


def load_suite(path: str | Path, seeds: int | None = None) -> Suite:
    """Parse, validate and expand a suite; one-line errors naming the file and the field."""
    path = Path(path)
    data = read_yaml(path)
    try:
        spec = SuiteFile(**data)
    except pydantic.ValidationError as err:
        message, hint = format_config_error(str(path), err, SuiteFile), _run_setting_hint(err)
        message = message.removesuffix(" remove it").removesuffix(";") + hint
        raise VQBenchError(message) from None
    names = [r.name for block in (spec.blocks or [spec]) for r in block.runs]
    if spec.baseline is not None and spec.baseline not in names:
        raise VQBenchError(
            f"{path}: baseline '{spec.baseline}' is not a run of the suite;"
            f"{did_you_mean(spec.baseline, names) or ''} runs: {', '.join(names)}"
        )
    if seeds is not None and seeds < 1:
        raise VQBenchError(f"--seeds {seeds}: give at least 1 (seeds 0 .. N-1 are run)")
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
                        settings_fingerprint=config.settings_fingerprint(),
                    )
                )
    suite.tokenizers = expand_tokenizers(suite, seed_list[0], seen)
    return suite


def expand_tokenizers(suite: Suite, seed: int, run_names: set[str]) -> list[ExpandedTokenizer]:
    """The suite's `tokenizers:` under their block's data and eval settings (and the first
    seed, which picks the embedded photos' crops as it does for the runs)."""
    spec, path, out = suite.spec, suite.source, []
    for module in spec.plugins:
        load_plugin(module)
    blocks = suite.blocks()
    for entry in spec.tokenizers:
        if entry.name in run_names:
            raise VQBenchError(
                f"{path}: tokenizer name '{entry.name}' is also a run's; names must be unique "
                f"(they name the folders)"
            )
        run_names.add(entry.name)
        if entry.block >= len(blocks):
            raise VQBenchError(
                f"{path}: tokenizer '{entry.name}' names block {entry.block}; the suite has "
                f"{len(blocks)} (0 .. {len(blocks) - 1})"
            )
        get_adapter_class(entry.adapter)  # an unknown adapter: one line, before anything runs
        shared = deep_merge(spec.shared, blocks[entry.block].shared)
        settings = {k: shared[k] for k in ("data", "eval") if k in shared}
        tokenizer = entry.model_dump(include={"adapter", "checkpoint", "options", "trust"})
        config = parse_published_config(
            {**settings, "name": f"{spec.suite}/{entry.name}", "seed": seed,
             "tokenizer": tokenizer},
            f"{path} (tokenizer '{entry.name}')",
        )  # fmt: skip
        out.append(ExpandedTokenizer(entry.block, entry.name, entry.label or entry.name, config))
    return out
