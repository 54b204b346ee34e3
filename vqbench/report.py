"""Reports: markdown tables beside the paper's numbers, JSON, and plots, from finished runs.

`write_report` reads each run's `eval*.json`, `metrics.jsonl` and checkpoint, averages seeds
(mean +- std), and writes `results/<suite>.md`, `results/<suite>.json` and PNG plots next to
them. `vqbench report RUNS_DIR` rebuilds all of it without training.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

import vqbench
from vqbench.errors import VQBenchError

COLUMNS = [
    ("usage", "Codebook Usage"),
    ("rfid", "rFID"),
    ("lpips", "LPIPS"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
]

PROTOCOL_NOTES = [
    "rFID is computed with torch-fidelity (uint8 images at the training resolution); SimVQ and "
    "the paper used pytorch-fid on float images, so values differ slightly.",
    "PSNR is the mean of per-image PSNR (data range 1, uint8-quantised images); SimVQ's "
    "evaluation computed a batch-level PSNR (a known bug), reported separately in the JSON as "
    "`psnr_batch_simvq`.",
    "SSIM follows scikit-image's defaults (7x7 uniform window), per image, mean over images.",
    "Usage is codes hit at least once over the whole validation split / codebook size.",
    "SimVQ's trainer lets generator gradients leak into the discriminator step; vqbench does not "
    "reproduce that.",
]


def paper_tables() -> dict[str, Any]:
    text = resources.files("vqbench").joinpath("resources/group_vq_tables.yaml").read_text()
    return yaml.safe_load(text)


def paper_rows(ref: str | None) -> list[dict[str, Any]]:
    """Rows of a paper table given as 'table1.blocks.0' or 'table4'."""
    if not ref:
        return []
    node: Any = paper_tables()
    for part in ref.split("."):
        node = node[int(part)] if isinstance(node, list) else node.get(part)
        if node is None:
            raise VQBenchError(
                f"paper table '{ref}' does not exist; see vqbench/resources/group_vq_tables.yaml"
            )
    return node.get("rows", []) if isinstance(node, dict) else []


def match_paper_row(rows: list[dict[str, Any]], key: dict[str, Any] | None):
    if not key:
        return None
    for row in rows:
        if all(row.get(k) == v for k, v in key.items()):
            return row
    return None


def independent_groups(quantizer: str, params: dict[str, Any], size: int) -> int:
    """The paper's 'Group' column: how many independently updated groups of codes."""
    if quantizer == "group_vq":
        return int(params.get("groups", 64))
    if quantizer in ("simvq", "vqgan_lc"):
        return 1
    if quantizer in ("fsq", "lfq"):
        return 0
    return size


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
        "ssim": result.get("ssim"),
        "perplexity": result.get("perplexity"),
        "psnr_batch_simvq": result.get("psnr_batch_simvq"),
    }


def _fmt(summary: dict[str, Any], key: str) -> str:
    if summary["mean"] is None:
        return "n/a"
    scale, digits = (100.0, 1) if key == "usage" else (1.0, 4 if key == "ssim" else 2)
    text = f"{summary['mean'] * scale:.{digits}f}"
    if summary["n"] > 1:
        text += f" ± {summary['std'] * scale:.{digits}f}"
    return text


def _paper_value(row: dict[str, Any] | None, key: str) -> str | None:
    if row is None or row.get(key) is None:
        return None
    value = row[key]
    return f"{value:.1f}" if key == "usage" else f"{value:g}"


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def collect(suite, runs_dir: Path) -> list[dict[str, Any]]:
    """One record per table row: a run (or one of its post-training operations), seeds merged."""
    from vqbench.suite import post_result_file

    blocks = suite.blocks()
    records: dict[tuple, dict[str, Any]] = {}
    for run in suite.runs:
        run_dir = runs_dir / run.run_id
        paper = match_paper_row(paper_rows(blocks[run.block].paper), run.paper)
        q = run.config.quantizer
        rows = paper_rows(blocks[run.block].paper)
        variants = [(None, run_dir / "eval.json", run.label, paper)]
        for post in run.post_ops:
            op, size = post.op
            label = post.label or (
                f"{run.label} + {'self-extension' if op == 'extend' else 'resampling'} to {size:,}"
            )
            variants.append(
                (
                    (op, size),
                    post_result_file(run_dir, op, size),
                    label,
                    match_paper_row(rows, post.paper),
                )
            )
        for op, path, label, paper_row in variants:
            key = (run.block, run.name, op)
            result = load_json(path)
            rec = records.setdefault(
                key,
                {
                    "block": run.block,
                    "run": run.name,
                    "label": label,
                    "operation": op,
                    "quantizer": q.name,
                    "params": q.params,
                    "seeds": [],
                    "results": [],
                    "settings_fingerprint": run.settings_fingerprint,
                    "paper": paper_row,
                    "run_dirs": [],
                },
            )
            rec["seeds"].append(run.seed)
            rec["run_dirs"].append(str(run_dir))
            if result:
                rec["results"].append(result)
    for rec in records.values():
        size = next((r["codebook_size"] for r in rec["results"]), None)
        rec["codebook_size"] = size
        rec["groups"] = independent_groups(rec["quantizer"], rec["params"], size or 0)
        per_metric: dict[str, list[Any]] = {}
        for result in rec["results"]:
            for k, v in metric_values(result).items():
                per_metric.setdefault(k, []).append(v)
        rec["metrics"] = {k: summarise(v) for k, v in per_metric.items()}
    return list(records.values())


def estimator_name(params: dict[str, Any]) -> str:
    """`rotation`, `radius (clipped)`, ...; radius rows carry the GRIT-style label."""
    name = params.get("estimator", "ste")
    extra = params.get("estimator_params", {})
    if name == "radius":
        return (
            f"radius surrogate ({extra.get('radius', 'identity')}; GRIT-style, "
            f"reconstructed from the abstract)"
        )
    return name + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


def block_table(records: list[dict[str, Any]]) -> str:
    with_estimator = any(r["params"].get("estimator", "ste") != "ste" for r in records)
    headers = ["Method", "Codebook Size", "Group"] + (["Estimator"] if with_estimator else [])
    headers += [title for _, title in COLUMNS]
    rows = []
    for rec in records:
        cells = [
            rec["label"],
            f"{rec['codebook_size']:,}" if rec["codebook_size"] else "-",
            rec["groups"],
        ] + ([estimator_name(rec["params"])] if with_estimator else [])
        for key, _ in COLUMNS:
            summary = rec["metrics"].get(key, {"mean": None})
            cell = _fmt(summary, key) if rec["results"] else "not run"
            paper = _paper_value(rec["paper"], key)
            cells.append(f"{cell} ({paper})" if paper is not None else cell)
        rows.append(cells)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def unavailable_notes(records: list[dict[str, Any]]) -> list[str]:
    notes = set()
    for rec in records:
        for key, summary in rec["metrics"].items():
            if summary.get("unavailable"):
                notes.add(f"{key}: {summary['unavailable']}")
    return sorted(notes)


def settings_summary(suite) -> list[str]:
    first = suite.runs[0].config
    c = first
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
        f"- Optimiser: Adam lr {c.optim.lr}, betas {tuple(c.optim.betas)}; global batch "
        f"{c.train.batch_size}; {budget}; model EMA {c.train.ema_decay}",
        f"- Seeds: {sorted({r.seed for r in suite.runs})}",
    ]


def environment_line(runs_dir: Path) -> str:
    envs = [load_json(p) for p in sorted(runs_dir.glob("*/env.json"))]
    if not envs:
        return "- Hardware: (no finished run)"
    e = envs[0]
    return (
        f"- Hardware: {e.get('device_name') or e.get('device')} ({e.get('device')}, "
        f"world size {e.get('world_size')}, {e.get('threads')} threads); torch "
        f"{e.get('torch')}"
    )


def write_report(suite, runs_dir: Path, results_dir: Path) -> Path:
    from vqbench import plots

    results_dir.mkdir(parents=True, exist_ok=True)
    records = collect(suite, runs_dir)
    name = suite.name
    figures = plots.write_all(suite, records, runs_dir, results_dir)
    lines = [
        f"# {suite.spec.title or name}",
        "",
        f"Suite `{suite.name}`, written by vqbench {vqbench.__version__} on "
        f"{date.today().isoformat()}. Each cell: ours (mean ± std over seeds where there "
        "are several), then the paper's value in parentheses where the suite mirrors a "
        "paper table. Usage in percent.",
        "",
    ]
    if suite.spec.description:
        lines += [suite.spec.description.strip(), ""]
    lines += settings_summary(suite) + [environment_line(runs_dir), ""]
    for b, block in enumerate(suite.blocks()):
        block_records = [r for r in records if r["block"] == b]
        fingerprints = sorted({r["settings_fingerprint"] for r in block_records})
        if block.title and len(suite.blocks()) > 1:
            lines += [f"## {block.title}", ""]
        lines += [
            block_table(block_records),
            "",
            f"Settings fingerprint (everything but the quantizer): "
            f"{', '.join(f'`{f}`' for f in fingerprints)}"
            + (
                " — identical for every row."
                if len(fingerprints) == 1
                else " — the block's rows differ in settings the suite declares as varied."
            ),
            "",
        ]
    notes = (
        list(suite.spec.notes)
        + PROTOCOL_NOTES
        + [f"Unavailable — {note}" for note in unavailable_notes(records)]
    )
    lines += ["## Notes", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{title}]({path.name})" for title, path in figures]
    out = results_dir / f"{name}.md"
    out.write_text("\n".join(lines) + "\n")
    (results_dir / f"{name}.json").write_text(
        json.dumps(
            {
                "suite": name,
                "title": suite.spec.title,
                "vqbench": vqbench.__version__,
                "date": date.today().isoformat(),
                "settings": settings_summary(suite),
                "rows": [
                    {k: v for k, v in r.items() if k != "results"} | {"raw": r["results"]}
                    for r in records
                ],
                "notes": notes,
                "figures": [p.name for _, p in figures],
            },
            indent=2,
            default=str,
        )
    )
    return out


def rebuild(runs_dir: str | Path, results_dir: str | Path = "results") -> Path:
    """`vqbench report RUNS_DIR`: rebuild the report of the suite whose runs are in RUNS_DIR."""
    from vqbench.suite import load_suite

    runs_dir = Path(runs_dir)
    marker = runs_dir / "suite.yaml"
    if not marker.is_file():
        raise VQBenchError(
            f"'{runs_dir}' holds no suite.yaml; give a folder made by 'vqbench run' (runs/<suite>)"
        )
    return write_report(load_suite(marker), runs_dir, Path(results_dir))
