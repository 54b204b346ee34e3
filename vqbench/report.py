"""Reports: typed rows collected from finished runs, rendered as markdown and JSON.

`collect` reads each run's `eval*.json` and turns a suite into `Row`s (one per run or
post-training operation, seeds merged into mean +- std; `probe.json`, the downstream probe, adds
its columns); `render_markdown` and `render_json`
write them with the paper's numbers beside ours where the suite mirrors a paper table. What a
quantizer is (its codebook size, how many independent groups it has) comes from its own
evaluation results, never from its name. Figures are `vqbench.plots`' job.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from vqbench.bounded import check_yaml
from vqbench.config import ScheduleConfig
from vqbench.errors import VQBenchError
from vqbench.estimator import get_estimator_class
from vqbench.files import read_json
from vqbench.protocols import get_protocol, recorded_protocol
from vqbench.rundir import RunDir, SuiteDir
from vqbench.suite import ExpandedTokenizer, Suite
from vqbench.version import __version__

#: (our result key, column title, the paper table's key printed beside it)
COLUMNS = [
    ("usage", "Codebook Usage", "usage"),
    ("rfid", "rFID", "rfid"),
    ("lpips", "LPIPS", "lpips"),
    ("psnr_batch", "PSNR", "psnr"),
    ("ssim", "SSIM", "ssim"),
    ("psnr", "PSNR per image", None),
]
#: The downstream probe's columns (`vqbench.probe`), shown when a row has a probe.
PROBE_COLUMNS = [
    ("bits_per_token", "Bits/token"),
    ("bits_per_image", "Bits/image"),
    ("gfid", "gFID"),
    ("sample_usage", "Sample usage"),
]
PERCENT_KEYS = {"usage", "sample_usage"}
#: Columns where a higher value is better (the others: lower is better).
HIGHER_IS_BETTER = {"usage", "psnr_batch", "psnr", "ssim", "sample_usage"}
#: The columns compared with the baseline and ranked, in table order.
COMPARED = [key for key, _, _ in COLUMNS] + [key for key, _ in PROBE_COLUMNS]
TITLES = {key: title for key, title, _ in COLUMNS} | dict(PROBE_COLUMNS)
#: The rule every comparison uses (Welch's standard error of a difference of two means).
TWO_SE_RULE = (
    "two-SE rule: two rows differ where |mean difference| > 2 sqrt(s1²/n1 + s2²/n2) (Welch's "
    "standard error of the difference, i.e. |Welch t| > 2; sample std s over n seeds)"
)
DIGITS = {"ssim": 4, "bits_per_token": 3, "bits_per_image": 1}

FID_NOTES = {
    "torch-fidelity": "rFID: torch-fidelity (uint8 images at the training resolution, its "
    "Inception weights); SimVQ and the paper used pytorch-fid on float images, so values "
    "differ slightly from theirs.",
    "pytorch-fid": "rFID: pytorch-fid, as SimVQ and the paper computed it (float images in "
    "[0, 1], PyTorch bilinear resize to 299, pytorch-fid's Inception weights).",
    "clean-fid": "rFID: clean-fid (uint8 images, its TorchScript Inception; mode `clean`: PIL "
    "bicubic resize to 299, `legacy_tensorflow`: TensorFlow's resize inside the network); "
    "SimVQ and the paper used pytorch-fid, so values differ from theirs.",
}
SPLIT_WORDS = {"val": "validation", "train": "training"}

PROTOCOL_NOTES = [
    "PSNR is the paper's (SimVQ's evaluation.py): images truncated to uint8, the PSNR of each "
    "batch of 64 consecutive validation images' pooled MSE, averaged over batches. It is lower "
    "than the mean of per-image PSNR, which is our own column (PSNR per image: images rounded "
    "to uint8, data range 1).",
    "SSIM is the paper's: scikit-image's defaults (7x7 uniform window) per image on SimVQ's "
    "truncated images, averaged per batch of 64 and then over batches.",
    "Usage is codes hit at least once over the whole validation split / codebook size.",
]

PROBE_NOTES = [
    "Probe: the same small causal transformer (GPT-2 from a config) is trained on every run's "
    "training tokens (raster order) with identical settings, then scored on the validation "
    "tokens. Bits/token is the validation negative log-likelihood per token position in bits "
    "(every stage or digit of a position together); Bits/image is its sum over an image's "
    "positions, the number comparable across codebook sizes and token counts (lower is easier "
    "to model). gFID is the FID of decoded samples of the prior against the validation images; "
    "Sample usage is the share of the codebook the sampled tokens use. Mean ± std over the "
    "prior's seeds (and the suite's seeds, where there are several).",
]


# ---- the paper's numbers ---------------------------------------------------------------------
def paper_tables() -> dict[str, Any]:
    text = resources.files("vqbench").joinpath("resources/paper_tables.yaml").read_text()
    check_yaml(text, "vqbench/resources/paper_tables.yaml")
    return yaml.safe_load(text)


def paper_rows(ref: str | None) -> list[dict[str, Any]]:
    """Rows of a paper table given as 'table1.blocks.0' or 'table4'."""
    if not ref:
        return []
    node: Any = paper_tables()
    for part in ref.split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
        except (ValueError, IndexError):
            node = None
        if node is None:
            raise VQBenchError(
                f"paper table '{ref}' does not exist; see vqbench/resources/paper_tables.yaml"
            )
    return node.get("rows", []) if isinstance(node, dict) else []


def match_paper_row(rows: list[dict[str, Any]], key: dict[str, Any] | None):
    if not key:
        return None
    for row in rows:
        if all(row.get(k) == v for k, v in key.items()):
            return row
    return None


# ---- rows -------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summarise(values: list[Any]) -> dict[str, Any]:
    numbers = [v for v in (_number(x) for x in values) if v is not None]
    if not numbers:
        reasons = sorted({str(v) for v in values if isinstance(v, str)})
        return {"mean": None, "std": None, "n": 0, "unavailable": reasons[0] if reasons else None}
    std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers)}


def metric_values(result: dict[str, Any]) -> dict[str, Any]:
    lpips = next((v for k, v in result.items() if k.startswith("lpips")), None)
    return {
        "usage": result.get("usage"),
        "rfid": result.get("rfid"),
        "lpips": lpips,
        "psnr": result.get("psnr"),
        "psnr_batch": result.get("psnr_batch"),
        "ssim": result.get("ssim"),
        "perplexity": result.get("perplexity"),
        "product_usage": result.get("product_usage"),
    }


def estimator_label(params: dict[str, Any]) -> str:
    """How the row's gradient estimator is named (the estimator says, see `describe`)."""
    name = params.get("estimator", "ste")
    return get_estimator_class(name).describe(params.get("estimator_params", {}))


@dataclass
class Row:
    """One table row: a run (or one of its post-training operations), seeds merged."""

    block: int
    run: str
    label: str
    operation: tuple[str, int] | None
    quantizer: str
    params: dict[str, Any]
    settings_fingerprint: str
    paper: dict[str, Any] | None
    seeds: list[int] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)  # probe.json of each seed
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    throughput: dict[str, float] | None = None  # with train.time_quantizer (see `throughput`)
    baseline: bool = False  # the suite's `baseline:` row
    vs_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)  # see `two_se_test`
    probe_seeds_asked: int | None = None  # prior seeds x suite seeds the probe asked for
    published: bool = False  # a released tokenizer (the suite's `tokenizers:`), not trained here

    @property
    def codebook_size(self) -> int | None:
        return next((r["codebook_size"] for r in self.results if "codebook_size" in r), None)

    @property
    def groups(self) -> int | None:
        """Independently updated groups of codes (the paper's 'Group' column)."""
        return next(
            (r["independent_groups"] for r in self.results if "independent_groups" in r), None
        )

    @property
    def index_sizes(self) -> list[int] | None:
        """The sizes of a composite's D indices (residual stages, product parts), else None."""
        sizes = next((r["index_sizes"] for r in self.results if "index_sizes" in r), None)
        return sizes if sizes and len(sizes) > 1 else None

    @property
    def estimator(self) -> str:
        return estimator_label(self.params)

    @property
    def protocols(self) -> list[tuple[str, int, str]]:
        """(protocol, version, split) of each evaluated seed, distinct, in order; an
        `eval.json` without the fields is the default protocol's version 1."""
        found = [(*recorded_protocol(r), r.get("split", "val")) for r in self.results]
        return list(dict.fromkeys(found))

    def summarise(self) -> None:
        per_metric: dict[str, list[Any]] = {}
        for result in self.results:
            for k, v in metric_values(result).items():
                per_metric.setdefault(k, []).append(v)
        for probe in self.probes:
            for seed in probe.get("seeds", []):
                for k, _ in PROBE_COLUMNS:
                    per_metric.setdefault(k, []).append(seed.get(k))
        self.metrics = {k: summarise(v) for k, v in per_metric.items()}

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("results", "probes")}
        data.update(codebook_size=self.codebook_size, groups=self.groups, raw=self.results)
        if self.probes:
            data["probe_raw"] = self.probes
        return data


def two_se_test(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """`a - b` of two summaries (`summarise`), Welch's standard error of that difference and
    whether it exceeds two of them; None where either has fewer than two values (one seed
    gives no spread to compare with)."""
    if a.get("mean") is None or b.get("mean") is None or a["n"] < 2 or b["n"] < 2:
        return None
    difference = a["mean"] - b["mean"]
    se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    return {"difference": difference, "se": se, "significant": abs(difference) > 2 * se}


def compare_to_baseline(rows: list[Row], baseline: str | None) -> None:
    """Mark the suite's baseline row (the run named `baseline`, per block) and test every
    other row of its block against it, column by column (`two_se_test`)."""
    if baseline is None:
        return
    for base in [r for r in rows if r.run == baseline and r.operation is None]:
        base.baseline = True
        for row in rows:
            if row.block != base.block or row is base:
                continue
            tests = {
                key: two_se_test(row.metrics[key], base.metrics[key])
                for key in COMPARED
                if key in row.metrics and key in base.metrics
            }
            row.vs_baseline = {k: t for k, t in tests.items() if t is not None}


def ranking(rows: list[Row]) -> dict[str, list[tuple[str, str]]]:
    """Per column, the pairs (better, worse) whose means differ by more than two standard
    errors (`two_se_test`): the ranking the seeds support, and nothing more."""
    out: dict[str, list[tuple[str, str]]] = {}
    for key in COMPARED:
        pairs = []
        for a in rows:
            for b in rows:
                test = two_se_test(a.metrics.get(key, {}), b.metrics.get(key, {}))
                if a is b or test is None or not test["significant"]:
                    continue
                if (test["difference"] > 0) == (key in HIGHER_IS_BETTER):
                    pairs.append((a.label, b.label))
        if any(two_se_test(r.metrics.get(key, {}), r.metrics.get(key, {})) for r in rows):
            out[key] = pairs
    return out


def ranking_lines(rows: list[Row]) -> list[str]:
    """`PSNR: A > B, C; B > C` per column, or that no difference passes the rule."""
    lines = []
    for key, pairs in ranking(rows).items():
        better = "higher" if key in HIGHER_IS_BETTER else "lower"
        if not pairs:
            lines.append(f"{TITLES[key]} ({better} is better): no two rows differ by more "
                         "than two standard errors")  # fmt: skip
            continue
        winners: dict[str, list[str]] = {}
        for a, b in pairs:
            winners.setdefault(a, []).append(b)
        text = "; ".join(f"{a} > {', '.join(bs)}" for a, bs in winners.items())
        lines.append(f"{TITLES[key]} ({better} is better): {text}")
    return lines


def post_label(run_label: str, op: str, size: int) -> str:
    kind = "self-extension" if op == "extend" else "resampling"
    return f"{run_label} + {kind} to {size:,}"


def protocol_label(protocol: tuple[str, int, str]) -> str:
    name, version, split = protocol
    return f"{name} v{version} ({SPLIT_WORDS.get(split, split)})"


def check_protocols(rows: list[Row], mixed: bool = False) -> None:
    """The rows of one table were measured under one protocol (name, version and split), or
    one line naming two that differ (unless `mixed`: `vqbench report --mixed-protocols`)."""
    if mixed:
        return
    for block in sorted({r.block for r in rows}):
        seen: dict[tuple[str, int, str], str] = {}
        for row in (r for r in rows if r.block == block):
            for protocol in row.protocols:
                seen.setdefault(protocol, row.label)
        if len(seen) > 1:
            (a, row_a), (b, row_b) = list(seen.items())[:2]
            raise VQBenchError(
                f"a table mixes protocols: {protocol_label(a)} ({row_a}) and "
                f"{protocol_label(b)} ({row_b}); evaluate every row under one eval.protocol, "
                f"or pass --mixed-protocols to put them in one table anyway"
            )


def protocol_line(rows: list[Row], config: Any = None) -> str:
    """What a table's numbers were measured under: the protocol (what it leaves free filled in
    from the block's run `config`), and the images rFID compares the reconstructions with."""
    found = list(dict.fromkeys(p for row in rows for p in row.protocols))
    if not found:
        return "Protocol: none recorded (no row has been evaluated)."
    if len(found) > 1:
        return (
            "Protocols (mixed, --mixed-protocols): "
            + "; ".join(
                f"{row.label}: {', '.join(protocol_label(p) for p in row.protocols)}"
                for row in rows
                if row.protocols
            )
            + ". Rows under different protocols are not comparable."
        )
    name, version, split = found[0]
    try:
        known = get_protocol(name)
        if known.version != version:
            what = f"{name} v{version}"
        elif config is None:
            what = known.describe(split)
        else:
            what = known.describe(split, config.data.resolution, config.eval)
    except VQBenchError:  # a plugin's protocol that is not installed here
        what = f"{name} v{version}"
    return f"Protocol: {what}. rFID against the {SPLIT_WORDS.get(split, split)} images."


def block_config(suite: Suite, block: int) -> Any:
    """The run config of a block's first run (None for an empty block)."""
    return next((run.config for run in suite.runs if run.block == block), None)


def collect(suite: Suite, runs_dir: Path, mixed_protocols: bool = False) -> list[Row]:
    """One `Row` per table row: a run (or one of its post-training operations), seeds merged;
    the rows of a table share one protocol unless `mixed_protocols` (`check_protocols`)."""
    blocks = suite.blocks()
    rows: dict[tuple, Row] = {}
    for run in suite.runs:
        folder = SuiteDir(runs_dir).run(run.run_id)
        table = paper_rows(blocks[run.block].paper)
        variants = [(None, folder.eval_file(), run.label, match_paper_row(table, run.paper))]
        for post in run.post_ops:
            op, size = post.op
            variants.append(
                (
                    (op, size),
                    folder.eval_file(f"{op}-{size}"),
                    post.label or post_label(run.label, op, size),
                    match_paper_row(table, post.paper),
                )
            )
        q = run.config.quantizer
        for op, path, label, paper in variants:
            row = rows.setdefault(
                (run.block, run.name, op),
                Row(run.block, run.name, label, op, q.name, q.params,
                    run.settings_fingerprint, paper),
            )  # fmt: skip
            row.seeds.append(run.seed)
            row.run_dirs.append(str(folder.path))
            result = read_json(path)
            if result:
                row.results.append(result)
            probe = read_json(folder.probe_file) if op is None else None
            if probe:
                row.probes.append(probe)
    for t in suite.tokenizers:
        rows[(t.block, t.name, None)] = published_row(suite, runs_dir, t)
    for row in rows.values():
        row.summarise()
        if row.operation is None:
            row.throughput = throughput(row.run_dirs)
            if suite.probe is not None:
                row.probe_seeds_asked = len(row.seeds) * len(suite.probe.seeds)
    out = list(rows.values())
    check_protocols(out, mixed_protocols)
    compare_to_baseline(out, suite.spec.baseline)
    return out


def published_row(suite: Suite, runs_dir: Path, tokenizer: ExpandedTokenizer) -> Row:
    """The row of a published tokenizer: its folder's eval.json (and probe.json), marked."""
    folder = SuiteDir(runs_dir).run(tokenizer.run_id)
    trained = [r.settings_fingerprint for r in suite.runs if r.block == tokenizer.block]
    spec = tokenizer.config.tokenizer
    row = Row(
        tokenizer.block, tokenizer.name, f"{tokenizer.label} (published)", None, spec.adapter,
        {}, trained[0] if trained else "-", None, seeds=[tokenizer.config.seed],
        run_dirs=[str(folder.path)], published=True,
    )  # fmt: skip
    for path, results in ((folder.eval_file(), row.results), (folder.probe_file, row.probes)):
        found = read_json(path)
        if found:
            results.append(found)
    return row


def published_notes(rows: list[Row]) -> list[str]:
    """What a row marked (published) is, with the checkpoint each one measured."""
    published = [r for r in rows if r.published]
    if not published:
        return []
    files = "; ".join(
        f"{r.label.removesuffix(' (published)')}: `{r.quantizer}` adapter, "
        + (
            f"{r.results[0]['checkpoint']} (sha256 {r.results[0]['checkpoint_sha256'][:12]})"
            if r.results
            else "not evaluated yet"
        )
        for r in published
    )
    return [
        "Rows marked (published): released tokenizers loaded through an adapter "
        "(`vqbench.tokenizers`) and evaluated with the same data and evaluation settings as "
        "the trained rows (and probed alike); nothing of them was trained here, so their "
        "training settings are not in the block's fingerprint. " + files + "."
    ]


def throughput(run_dirs: list[str]) -> dict[str, float] | None:
    """Steady-state training speed from the runs' logs, mean over seeds: images/s, ms per step,
    the quantizer's ms per step and its share (`train.time_quantizer`). The first log window
    (warm-up: allocation, autotuning) is left out. None without quantizer timing."""
    per_run = []
    for run_dir in run_dirs:
        windows = [r for r in RunDir(run_dir).records() if "quantizer_ms" in r]
        steady = windows[1:] or windows
        if steady:
            per_run.append(
                {
                    "images_per_s": len(steady) / sum(1 / r["images_per_s"] for r in steady),
                    "step_ms": statistics.fmean(r["step_ms"] for r in steady),
                    "quantizer_ms": statistics.fmean(r["quantizer_ms"] for r in steady),
                }
            )
    if not per_run:
        return None
    mean = {k: statistics.fmean(r[k] for r in per_run) for k in per_run[0]}
    mean["quantizer_share"] = mean["quantizer_ms"] / mean["step_ms"]
    return mean


def throughput_table(rows: list[Row]) -> str:
    lines = [
        [
            row.label,
            f"{row.throughput['images_per_s']:.1f}",
            f"{row.throughput['step_ms']:.1f}",
            f"{row.throughput['quantizer_ms']:.2f}",
            f"{100 * row.throughput['quantizer_share']:.1f}%",
        ]
        for row in rows
        if row.throughput
    ]
    headers = ["Method", "images/s", "ms per step", "quantizer ms per step", "quantizer share"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)


# ---- rendering --------------------------------------------------------------------------------
def _fmt(summary: dict[str, Any], key: str) -> str:
    if summary["mean"] is None:
        return "n/a"
    scale, digits = (100.0, 1) if key in PERCENT_KEYS else (1.0, DIGITS.get(key, 2))
    text = f"{summary['mean'] * scale:.{digits}f}"
    if summary["n"] > 1:
        text += f" ± {summary['std'] * scale:.{digits}f}"
    return text


def _paper_value(row: dict[str, Any] | None, key: str) -> str | None:
    if row is None or row.get(key) is None:
        return None
    value = row[key]
    return f"{value:.1f}" if key == "usage" else f"{value:g}"


def _size_cell(size: int | None, index_sizes: list[int] | None) -> str:
    if not size:
        return "-"
    if index_sizes:  # a composite: the product, then its factors
        return f"{size:,} ({' x '.join(f'{s:,}' for s in index_sizes)})"
    return f"{size:,}"


def composite_notes(rows: list[Row]) -> list[str]:
    """What a composite row's Usage shows, and its product usage (from the JSON)."""
    composites = [r for r in rows if r.index_sizes and r.results]
    if not composites:
        return []
    products = "; ".join(
        f"{r.label}: {_fmt(r.metrics.get('product_usage', {'mean': None}), 'usage')}"
        for r in composites
    )
    return [
        "† Composite quantizers (several indices per position: residual stages or product "
        "parts): Codebook Size is the product of the index sizes in parentheses, and Usage is "
        "the mean over the indices of each index's usage of its own codebook. The usage of "
        "the product codebook (distinct index combinations / Codebook Size) is "
        f"`product_usage` in the JSON, with `usage_per_index`: {products} (percent)."
    ]


def _mark(row: Row, key: str) -> str:
    """` ▲` / ` ▼`: higher / lower than the baseline row by more than two standard errors."""
    test = row.vs_baseline.get(key)
    if not test or not test["significant"]:
        return ""
    return " ▲" if test["difference"] > 0 else " ▼"


def _probe_cell(row: Row, key: str) -> str:
    summary = row.metrics.get(key, {"mean": None})
    cell = _fmt(summary, key) + _mark(row, key)
    asked = row.probe_seeds_asked
    if asked and summary["mean"] is not None and summary["n"] < asked:
        cell += f" (n={summary['n']} of {asked})"
    return cell


def _shows_groups(rows: list[Row]) -> bool:
    """The paper's Group column, where it says something: a row mirrors a paper table, or a
    quantizer splits its codes into several groups (not one per code, as a free codebook's,
    nor one shared map, nor none)."""
    return any(r.paper for r in rows) or any(
        r.groups is not None and r.codebook_size and 1 < r.groups < r.codebook_size for r in rows
    )


def block_table(rows: list[Row]) -> str:
    with_estimator = any(r.params.get("estimator", "ste") != "ste" for r in rows)
    with_groups = _shows_groups(rows)
    headers = ["Method", "Codebook Size"] + (["Group"] if with_groups else [])
    headers += ["Estimator"] if with_estimator else []
    headers += [title for _, title, _ in COLUMNS]
    probed = any(r.probes for r in rows)
    headers += [title for _, title in PROBE_COLUMNS] if probed else []
    lines = []
    for row in rows:
        size, groups = row.codebook_size, row.groups
        cells = [
            row.label + (" (baseline)" if row.baseline else ""),
            _size_cell(size, row.index_sizes),
        ]
        cells += [groups if groups is not None else "-"] if with_groups else []
        cells += [row.estimator] if with_estimator else []
        for key, _, paper_key in COLUMNS:
            summary = row.metrics.get(key, {"mean": None})
            cell = _fmt(summary, key) + _mark(row, key) if row.results else "not run"
            if key == "usage" and row.index_sizes and row.results:
                cell += " †"  # per-index mean; see composite_notes
            paper = _paper_value(row.paper, paper_key) if paper_key else None
            cells.append(f"{cell} ({paper})" if paper is not None else cell)
        if probed:
            cells += [_probe_cell(row, key) if row.probes else "-" for key, _ in PROBE_COLUMNS]
        lines.append(cells)
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)


def unavailable_notes(rows: list[Row]) -> list[str]:
    notes = set()
    for row in rows:
        for key, summary in row.metrics.items():
            if summary.get("unavailable"):
                notes.add(f"{key}: {summary['unavailable']}")
    return sorted(notes)


def settings_summary(suite: Suite) -> list[str]:
    c = suite.runs[0].config
    budget = f"{c.train.steps} steps" if c.train.steps else f"{c.train.epochs} epochs"
    data = (
        f"embedded photos (scikit-image), {c.data.train_size or 2048} train / "
        f"{c.data.val_size or 256} val crops"
        if c.data.kind == "embedded"
        else f"{c.data.root} / {c.data.val_root}"
    )
    losses = [
        f"L1 + {c.loss.perceptual_weight} LPIPS"
        if c.loss.perceptual_weight
        else "L1 (no LPIPS term)",
        f"{c.loss.gan_weight} GAN" if c.loss.gan_weight else "no GAN",
        f"{c.loss.quantizer_weight} quantizer loss",
    ]
    return [
        f"- Data: {data}, {c.data.resolution}x{c.data.resolution}",
        f"- Model: `{c.model.preset}` preset {c.model.overrides or ''}".rstrip(),
        f"- Loss: {' + '.join(losses)}",
        f"- Optimiser: Adam lr {c.optim.lr}{schedule_words(c.optim.schedule)}, betas "
        f"{tuple(c.optim.betas)}; global batch {c.train.batch_size}; {budget}; model EMA "
        f"{c.train.ema_decay}",
        f"- Seeds: {sorted({r.seed for r in suite.runs})}",
    ] + ([f"- Probe: {suite.probe.describe()}"] if suite.probe is not None else [])


def schedule_words(schedule: ScheduleConfig) -> str:
    """Nothing for the constant default; else the schedule in words."""
    if schedule.kind == "constant":
        return ""
    words = f" ({schedule.kind.replace('_', ' ')}"
    if schedule.warmup_steps:
        words += f", {schedule.warmup_steps} warmup steps"
    if schedule.kind == "cosine":
        words += f", down to {schedule.min_lr_ratio:g} of it"
    return words + ")"


def environment_line(runs_dir: Path) -> str:
    envs = [run.environment() for run in SuiteDir(runs_dir).started_runs()]
    if not envs:
        return "- Hardware: (no finished run)"
    e = envs[0]
    return (
        f"- Hardware: {e.get('device_name') or e.get('device')} ({e.get('device')}, "
        f"world size {e.get('world_size')}, {e.get('threads')} threads); torch "
        f"{e.get('torch')}"
    )


def ranking_note(suite: Suite) -> str:
    """What a table can rank: one seed ranks nothing below the seed-to-seed spread."""
    seeds = sorted({r.seed for r in suite.runs})
    if len(seeds) == 1:
        return (
            "One seed: a difference smaller than the seed-to-seed spread (mean ± std over "
            "seeds in a suite with several, e.g. the reproduction study's suites at this "
            "scale) is not a ranking. Training is deterministic on one machine with the same "
            "threads and versions only; another machine gives other values."
        )
    return (
        f"{len(seeds)} seeds (mean ± sample std). Rows are ranked by the {TWO_SE_RULE}; "
        "smaller differences are not rankings. The ranking each column supports is under "
        "'Ranking'"
        + (
            f"; ▲ / ▼ mark a cell higher / lower than the baseline row ({suite.spec.baseline}) "
            "by that rule."
            if suite.spec.baseline
            else "."
        )
    )


def recipe_notes(suite: Suite) -> list[str]:
    """The recipe choices a suite made (settings that move numbers), and each row's options."""
    c = suite.runs[0].config
    notes = [FID_NOTES[c.eval.fid_backend]] if "fid" in c.eval.metrics else []
    notes += [
        f"Precision: {c.train.precision}"
        + (" (SimVQ's 16-mixed)" if c.train.precision == "fp16" else "")
        + "; the quantizer computes distances and losses in float32.",
    ]
    if c.loss.gan_weight > 0:  # without a GAN term there is no discriminator step
        notes.append(
            "The discriminator step also receives the generator loss's gradient (SimVQ's "
            "trainer never zeroes it)."
            if c.loss.disc_receives_generator_grad
            else "The discriminator step receives only its own loss's gradient (SimVQ's "
            "trainer lets the generator's leak in; option loss.disc_receives_generator_grad)."
        )
    rows = []
    for run in suite.runs:
        q = run.config.quantizer
        label = f"{run.label} (recipe {recipe_of(q.params)}): `{q.name}` " + (
            ", ".join(f"{k}={v}" for k, v in q.params.items()) or "(defaults)"
        )
        if label not in rows:
            rows.append(label)
    return notes + [RECIPE_NOTE, "Quantizers and their parameters: " + "; ".join(rows) + "."]


RECIPE_NOTE = (
    "Recipes: `reference` trains each quantizer with its authors' loss terms, weights and "
    "initialisation (the default); `shared` sets codebook 1.0 and commitment 0.25 wherever "
    "the method has those terms. Explicit parameters override either."
)


def recipe_of(params: dict) -> str:
    """The recipe a row's quantizer parameters choose (`QuantizerParams.recipe`), with a
    composite's inner recipe where `quantizer_params` names another."""

    def name(p: dict, default: str = "reference") -> str:
        recipe = p.get("recipe", default)
        return "shared" if recipe == "harmonised" else str(recipe)

    outer = name(params)
    inner = params.get("quantizer_params")
    if isinstance(inner, dict) and name(inner, outer) != outer:
        return f"{outer}, inner {name(inner, outer)}"
    return outer


def notes_of(suite: Suite, rows: list[Row]) -> list[str]:
    unavailable = [f"Unavailable — {note}" for note in unavailable_notes(rows)]
    probe = PROBE_NOTES if any(r.probes for r in rows) else []
    return (
        list(suite.spec.notes)
        + [ranking_note(suite)]
        + recipe_notes(suite)
        + PROTOCOL_NOTES
        + composite_notes(rows)
        + published_notes(rows)
        + probe
        + unavailable
    )


def render_markdown(
    suite: Suite, rows: list[Row], runs_dir: Path, figures: list[tuple[str, str]]
) -> str:
    lines = [
        f"# {suite.spec.title or suite.name}",
        "",
        f"Suite `{suite.name}`, written by vqbench {__version__} on "
        f"{date.today().isoformat()}. Each cell: ours (mean ± std over seeds where there "
        "are several), then the paper's value in parentheses where the suite mirrors a "
        "paper table. Usage in percent.",
        "",
    ]
    if suite.spec.description:
        lines += [suite.spec.description.strip(), ""]
    lines += settings_summary(suite) + [environment_line(runs_dir), ""]
    blocks = suite.blocks()
    for b, block in enumerate(blocks):
        block_rows = [r for r in rows if r.block == b]
        fingerprints = sorted({r.settings_fingerprint for r in block_rows if not r.published})
        if block.title and len(blocks) > 1:
            lines += [f"## {block.title}", ""]
        same = len(fingerprints) == 1
        lines += [
            block_table(block_rows),
            "",
            protocol_line(block_rows, block_config(suite, b)),
            "",
            f"Settings fingerprint (everything but the quantizer): "
            f"{', '.join(f'`{f}`' for f in fingerprints)}"
            + (
                " — identical for every row."
                if same
                else " — the block's rows differ in settings the suite declares as varied."
            ),
            "",
        ]
        supported = ranking_lines(block_rows)
        if supported:
            lines += [f"Ranking the seeds support ({TWO_SE_RULE}):", ""]
            lines += [f"- {line}" for line in supported] + [""]
    if any(row.throughput for row in rows):
        lines += [
            "## Training speed",
            "",
            "Steady state (log windows after the first), from `train.time_quantizer`: the "
            "quantizer's forward, backward and codebook upkeep, stamped inside each step "
            "(`vqbench.timing`).",
            "",
            throughput_table(rows),
            "",
        ]
    notes = notes_of(suite, rows)
    lines += ["## Notes", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{title}]({name})" for title, name in figures]
    return "\n".join(lines) + "\n"


def render_json(suite: Suite, rows: list[Row], figures: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "suite": suite.name,
        "title": suite.spec.title,
        "vqbench": __version__,
        "date": date.today().isoformat(),
        "settings": settings_summary(suite),
        "rows": [row.to_json() for row in rows],
        "baseline": suite.spec.baseline,
        "test": TWO_SE_RULE,
        "ranking": [
            {"block": b, "column": key, "better_than": [list(pair) for pair in pairs]}
            for b in range(len(suite.blocks()))
            for key, pairs in ranking([r for r in rows if r.block == b]).items()
        ],
        "protocols": [
            protocol_line([r for r in rows if r.block == b], block_config(suite, b))
            for b in range(len(suite.blocks()))
        ],
        "notes": notes_of(suite, rows),
        "figures": [name for _, name in figures],
    }
