"""A static results site: `vqbench site results/ --out site/`.

It reads the committed report files (`results/<suite>.json`, written by `vqbench.report`, and
the PNG figures they name) and writes plain HTML that opens from a file:// URL with no network:
an index of every suite, and a page per suite with its tables (sortable by clicking a column
header: `sort.js` beside the pages), numbers with their ± spread and the paper's values beside
ours, the figures (click to enlarge: CSS `:target`), the settings, the notes and links between rows
that differ in one parameter. The output depends on the report files only (no clock, no
machine), so a committed site can be checked against a fresh one.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import jinja2
import pydantic

from vqbench.errors import VQBenchError
from vqbench.files import check_writable, load_json
from vqbench.params import format_validation_error
from vqbench.quantizer import get_quantizer_class
from vqbench.report import COLUMNS, DIGITS, PERCENT_KEYS, PROBE_COLUMNS

#: What a generated site's index carries, so that `write_site` replaces only its own output.
GENERATOR = "vqbench site"


# ---- reading ----------------------------------------------------------------------------------
class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", allow_inf_nan=False)


class Summary(_Model):
    """A metric over seeds (`vqbench.report.summarise`)."""

    mean: float | None = None
    std: float | None = None
    n: int = 0
    unavailable: str | None = None


class Comparison(_Model):
    """A row against the baseline row (`vqbench.report.two_se_test`)."""

    difference: float
    se: float
    significant: bool


class ReportRow(_Model):
    """The parts of a report row (`vqbench.report.Row.to_json`) that the site shows."""

    block: int = 0
    run: str = ""
    label: str
    operation: tuple[str, int] | None = None
    quantizer: str
    params: dict[str, Any]
    settings_fingerprint: str = "-"
    paper: dict[str, Any] | None = None
    seeds: list[int] = []
    metrics: dict[str, Summary]
    codebook_size: int | None = None
    baseline: bool = False
    vs_baseline: dict[str, Comparison] = {}


class SuiteReport(_Model):
    """A suite report (`vqbench.report.render_json`)."""

    suite: str = pydantic.Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str
    vqbench: str = "?"
    date: str = "?"
    settings: list[str]
    rows: list[ReportRow]
    baseline: str | None = None
    test: str = ""
    notes: list[str]
    figures: list[Annotated[str, pydantic.Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")]]


def _check_report(data: Any, path: Path) -> dict[str, Any]:
    """`data` as a suite report whose figures exist beside it, else one line saying why."""
    fix = f"rebuild it with `vqbench report runs/{path.stem}` or move it out of the folder"
    if not isinstance(data, dict):
        raise VQBenchError(f"'{path}' is not a suite report (not a JSON object); {fix}")
    try:
        report = SuiteReport.model_validate(data).model_dump()
    except pydantic.ValidationError as err:
        raise VQBenchError(
            format_validation_error(f"'{path}' is not a suite report", err, SuiteReport)
            + f"; {fix}"
        ) from None
    if report["suite"] != path.stem:
        raise VQBenchError(
            f"'{path}' holds suite '{report['suite']}', not '{path.stem}'; rename the file to "
            f"<suite>.json or rebuild it with `vqbench report`"
        )
    for name in report["figures"]:
        if not (path.parent / name).is_file():
            raise VQBenchError(
                f"'{path}' names figure '{name}', which is not in '{path.parent}'; rebuild "
                f"the report with `vqbench report runs/{path.stem}` or restore the file"
            )
    return report


def read_reports(results: str | Path) -> list[dict[str, Any]]:
    """Every suite report in `results` (`<suite>.json`), sorted by suite name."""
    results = Path(results)
    if not results.is_dir():
        raise VQBenchError(
            f"results folder '{results}' does not exist; give the folder that holds the "
            f"suites' <suite>.json reports (e.g. results/)"
        )
    paths = sorted(results.glob("*.json"))
    if not paths:
        raise VQBenchError(
            f"'{results}' holds no <suite>.json report; run a suite (`vqbench run`) or give "
            f"the folder that holds its report"
        )
    return [_check_report(load_json(path), path) for path in paths]


# ---- cells ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """A table cell: its text, the number it sorts by (None: shown last), a tooltip."""

    text: str
    sort: float | None = None
    title: str = ""
    html: str = ""  # markup shown instead of the text (links), already escaped


def metric_cell(summary: dict[str, Any] | None, key: str, mark: str = "") -> Cell:
    """Mean ± sample std over seeds (as the markdown report prints it), sorted by the mean."""
    if not summary or summary.get("mean") is None:
        reason = (summary or {}).get("unavailable") or "not measured"
        return Cell("n/a", None, str(reason))
    scale, digits = (100.0, 1) if key in PERCENT_KEYS else (1.0, DIGITS.get(key, 2))
    text = f"{summary['mean'] * scale:.{digits}f}"
    if summary.get("n", 1) > 1 and summary.get("std") is not None:
        text += f" ± {summary['std'] * scale:.{digits}f}"
    title = f"mean over {summary.get('n', 1)} seed(s)"
    return Cell(text + mark, summary["mean"] * scale, title)


def paper_cell(paper: dict[str, Any] | None, key: str) -> Cell:
    """The paper's value of a column (usage already in percent there), sorted by it."""
    value = (paper or {}).get(key)
    if not isinstance(value, (int, float)):
        return Cell("–")
    return Cell(f"{value:.1f}" if key == "usage" else f"{value:g}", float(value), "the paper")


def baseline_mark(row: dict[str, Any], key: str) -> str:
    """` ▲` / ` ▼`: above / below the baseline row by more than two standard errors."""
    test = (row.get("vs_baseline") or {}).get(key)
    if not test or not test.get("significant"):
        return ""
    return " ▲" if test["difference"] > 0 else " ▼"


def _size_cell(row: dict[str, Any]) -> Cell:
    size = row.get("codebook_size")
    return Cell(f"{size:,}", float(size)) if isinstance(size, int) else Cell("-")


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in params.items())


# ---- links between rows -----------------------------------------------------------------------
def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def row_configuration(row: dict[str, Any]) -> dict[str, str]:
    """The row's quantizer parameters with the quantizer's defaults filled in (where it is
    installed), nested ones as `outer.inner`, plus its post-training operation and size."""
    params = row["params"]
    with contextlib.suppress(VQBenchError, TypeError, ValueError):
        params = get_quantizer_class(row["quantizer"]).resolved_params(**params)
    operation = row.get("operation") or [None, None]
    return _flatten(params) | {
        "operation": json.dumps(operation[0]),
        "operation size": json.dumps(operation[1]),
    }


@dataclass(frozen=True)
class Link:
    suite: str
    index: int
    label: str
    why: str  # "groups: 4 → 16", or "same configuration"


Links = dict[tuple[str, int], list[Link]]  # (suite, row index) -> the rows it links to


def row_links(reports: list[dict[str, Any]]) -> Links:
    """Rows worth comparing, for each row (suite, index): within a suite, the rows of the same
    quantizer and settings fingerprint whose configuration differs in exactly one key; in
    other suites, the rows with the same quantizer, settings fingerprint and configuration."""
    rows = [(r["suite"], i, row) for r in reports for i, row in enumerate(r["rows"])]
    configs = {(s, i): row_configuration(row) for s, i, row in rows}
    links: Links = {(s, i): [] for s, i, _ in rows}
    for suite, i, row in rows:
        for other_suite, j, other in rows:
            if (suite, i) == (other_suite, j) or not _comparable(row, other):
                continue
            a, b = configs[(suite, i)], configs[(other_suite, j)]
            diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            if other_suite == suite and len(diff) == 1:
                key = diff[0]
                why = f"{key}: {a.get(key, 'unset')} → {b.get(key, 'unset')}"
            elif other_suite != suite and not diff:
                why = "same configuration"
            else:
                continue
            links[(suite, i)].append(Link(other_suite, j, other["label"], why))
    return links


def _comparable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["quantizer"] == b["quantizer"] and a.get("settings_fingerprint") == b.get(
        "settings_fingerprint"
    )


def _links_cell(suite: str, links: list[Link]) -> Cell:
    parts = []
    for link in links:
        href = f"#r{link.index}" if link.suite == suite else f"{link.suite}.html#r{link.index}"
        name = link.label if link.suite == suite else f"{link.suite}: {link.label}"
        parts.append(
            f'<a href="{html.escape(href)}">{html.escape(name)}</a> '
            f'<span class="why">({html.escape(link.why)})</span>'
        )
    return Cell(f"{len(links)} related", float(len(links)), html="<br>".join(parts))


# ---- tables -----------------------------------------------------------------------------------
@dataclass
class Table:
    block: int
    headers: list[tuple[str, bool]]  # (title, numeric)
    rows: list[tuple[int, list[Cell]]]  # (row index in the report, cells)


def metric_keys(rows: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(key, title, paper key) of the columns the rows have: the report's, then the probe's."""
    keys = [c for c in COLUMNS if any(c[0] in r["metrics"] for r in rows)]
    probed = [(k, t, None) for k, t in PROBE_COLUMNS if any(k in r["metrics"] for r in rows)]
    return keys + probed


def block_table(suite: str, block: int, indexed: list[tuple[int, dict]], links: Links) -> Table:
    """One block's table: method, quantizer, size, each metric with the paper's value in the
    next column where a row mirrors a paper table, the settings fingerprint and the links."""
    rows = [row for _, row in indexed]
    columns = metric_keys(rows)
    papered = {
        key
        for key, _, paper_key in columns
        if paper_key and any((r.get("paper") or {}).get(paper_key) is not None for r in rows)
    }
    out = []
    for index, row in indexed:
        label = row["label"] + (" (baseline)" if row.get("baseline") else "")
        seeds = row.get("seeds") or []
        cells = [Cell(label), Cell(row["quantizer"]), Cell(_params_text(row["params"]))]
        cells += [_size_cell(row), Cell(str(len(seeds)), float(len(seeds)), str(seeds))]
        for key, _, paper_key in columns:
            cells.append(metric_cell(row["metrics"].get(key), key, baseline_mark(row, key)))
            if key in papered:
                cells.append(paper_cell(row.get("paper"), paper_key))
        cells.append(Cell(str(row.get("settings_fingerprint", "-"))))
        cells.append(_links_cell(suite, links[(suite, index)]))
        out.append((index, cells))
    return Table(block, _headers(columns, papered), out)


def _headers(columns: list[tuple[str, str, str | None]], papered: set[str]) -> list:
    """(title, numeric) of `block_table`'s columns, in its cells' order."""
    headers = [("Method", False), ("Quantizer", False), ("Parameters", False)]
    headers += [("Codebook Size", True), ("Seeds", True)]
    for key, title, _ in columns:
        headers += [(title, True)] + ([(f"{title} (paper)", True)] if key in papered else [])
    return headers + [("Settings", False), ("Related", True)]


def suite_tables(report: dict[str, Any], links: Links) -> list[Table]:
    blocks = sorted({row.get("block", 0) for row in report["rows"]})
    return [
        block_table(
            report["suite"],
            block,
            [(i, r) for i, r in enumerate(report["rows"]) if r.get("block", 0) == block],
            links,
        )
        for block in blocks
    ]


# ---- rendering --------------------------------------------------------------------------------
def inline_markdown(text: str) -> str:
    """The markdown the reports' notes use: `code` and **bold**, everything else escaped."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _environment() -> jinja2.Environment:
    folder = resources.files("vqbench").joinpath("resources/site")
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: folder.joinpath(name).read_text()),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["md"] = lambda text: inline_markdown(str(text))  # escapes; then `|safe`
    return env


#: The style and the sorting script, one file each beside the pages (a relative link: no
#: network, and no copy of them in every page).
ASSETS = ("site.css", "sort.js")


def _fingerprints(report: dict[str, Any]) -> list[str]:
    return sorted({str(r.get("settings_fingerprint", "-")) for r in report["rows"]})


def _protocol_names(report: dict[str, Any]) -> list[str]:
    """`name vN` of each protocol a report's tables were measured under (`Protocol: name vN:
    ...` lines); reports written before protocols existed: `vqbench v1`, as their eval.json."""
    lines = report.get("protocols") or ["Protocol: vqbench v1: "]
    return sorted({line.removeprefix("Protocol: ").split(":", 1)[0] for line in lines})


def render_site(reports: list[dict[str, Any]]) -> dict[str, str]:
    """The site's HTML files by name: `index.html` and `<suite>.html` for each report."""
    env = _environment()
    links = row_links(reports)
    pages = {
        "index.html": env.get_template("index.html").render(
            reports=reports,
            fingerprints=_fingerprints,
            protocol_names=_protocol_names,
            generator=GENERATOR,
        )
    }
    for report in reports:
        pages[f"{report['suite']}.html"] = env.get_template("suite.html").render(
            report=report,
            tables=suite_tables(report, links),
            fingerprints=_fingerprints(report),
            generator=GENERATOR,
        )
    return pages


# ---- writing ----------------------------------------------------------------------------------
def _is_generated(out: Path) -> bool:
    index = out / "index.html"
    return index.is_file() and f'content="{GENERATOR}"' in index.read_text(errors="replace")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise VQBenchError(f"'{out}' is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not _is_generated(out):
        raise VQBenchError(
            f"'{out}' holds files that no `vqbench site` wrote; choose an empty or new --out "
            f"folder (the site replaces the whole folder)"
        )
    check_writable(out.parent, "site folder")


def build_site(results: Path, folder: Path) -> None:
    """Write the site into the existing empty `folder`: the pages and `img/` (the PNGs)."""
    reports = read_reports(results)
    for name, text in render_site(reports).items():
        (folder / name).write_text(text, encoding="utf-8")
    assets = resources.files("vqbench") / "resources" / "site"
    for name in ASSETS:
        (folder / name).write_text(assets.joinpath(name).read_text(), encoding="utf-8")
    (folder / "img").mkdir()
    for name in sorted({f for report in reports for f in report["figures"]}):
        shutil.copyfile(results / name, folder / "img" / name)


def write_site(results: str | Path, out: str | Path) -> Path:
    """Build the site from `results` into `out`, replacing an earlier site there in one
    rename: a failure leaves `out` as it was and no temporary folder behind."""
    results, out = Path(results), Path(out)
    _check_out(out)
    read_reports(results)  # a bad report fails before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        tmp.mkdir()
        build_site(results, tmp)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as err:
        raise VQBenchError(
            f"cannot write the site to '{out}' ({err.strerror or err}); choose a writable folder"
        ) from None
    finally:
        if old.exists() and not out.exists():  # the second rename failed: put the old back
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out
