"""Write benchmarks/RESULTS.md (tables and a plot) from a pytest-benchmark JSON file.

python benchmarks/write_results.py benchmarks/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tabulate import tabulate  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_results import GPU_SPEEDUP_TARGETS, engine_section, gpu_sections  # noqa: E402

#: Rows of one quantizer forward+backward (test_quantizers.py).
QUANTIZER_IMPLS = ("vqbench", "vqtorch", "floor")
SPEEDUP_TARGETS = {"ema": 5.0, "simvq": 2.0, "vanilla": 2.0, "lfq": 50.0}
EXPLICIT = ("vanilla", "ema", "simvq", "fc", "group_vq")


def load(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    rows = []
    for bench in data["benchmarks"]:
        info = dict(bench["extra_info"])
        info["seconds"] = bench["stats"]["median"]
        info["rounds"] = bench["stats"]["rounds"]
        info["source"] = path.name
        rows.append(info)
    return data["machine_info"], rows


#: Issue 24's quantizers: a file that holds them gets a section of its own (with the baselines
#: timed in the same run), and stays out of the 65,536-code tables of the main run.
METHODS_2025 = ("leech", "fsp", "vqbridge", "nsvq", "transvq", "sf_diveq")


def is_2025(row) -> bool:
    return row["method"] in METHODS_2025 or row["params"].get("implicit_codebook") == "mlp"


def families_2025_section(rows) -> list[str]:
    """Every case of the files that time issue 24's quantizers, with the library's beside."""
    sources = sorted({r["source"] for r in rows if is_2025(r)})
    sizes = {(r["source"], r["codebook_size"]) for r in rows if is_2025(r)}
    found = [
        r
        for r in rows
        if r["impl"] == "vqbench"
        and (is_2025(r) or (r["method"] == "vanilla" and not r["params"]))
        and (r["source"], r["codebook_size"]) in sizes
    ]
    if not found:
        return []
    by_key = {key(r): r for r in rows if r["source"] in sources}
    out = []
    for r in sorted(found, key=lambda r: (r["codebook_size"], is_2025(r), label(r))):
        ref = by_key.get(("vqtorch", *key(r)[1:]))
        out.append(
            [
                label(r),
                "196,560" if r["method"] == "leech" else f"{r['codebook_size']:,}",
                f"{r['seconds']:.2f}",
                f"{r['peak_extra_mib']:.0f}",
                f"{ref['seconds']:.2f}" if ref else "-",
                f"{ref['peak_extra_mib']:.0f}" if ref else "-",
                f"{ref['seconds'] / r['seconds']:.1f}x" if ref else "-",
            ]
        )
    headers = ["quantizer", "codes", "vqbench s", "vqbench MiB", "v-q-p s", "v-q-p MiB", "speed-up"]
    return [
        "",
        "## The 2025-26 quantizers (issue 24), fp32",
        "",
        f"From {', '.join(f'`{s}`' for s in sources)}: one forward+backward at 8,192 tokens x "
        "dim 128 at each paper's codebook size (Leech: one 24-channel group of its 196,560 "
        "codes; FSP: FSQ's levels; the implicit residual: 2 stages of 256 codes), with vanilla "
        "VQ at the same sizes timed in the same run as the baseline. "
        "vector-quantize-pytorch has VQBridge (`vq_bridge`, run at 16,384 codes: its distance "
        "matrix needs about 12 GiB at 65,536) and implicit neural codebooks (its implicit "
        "ResidualVQ builds every candidate code for every token, about 17 GiB at 8,192 tokens, "
        "so it is not run here).",
        "",
        tabulate(out, headers=headers, tablefmt="github", disable_numparse=True),
    ]


def estimator_alone_table(rows) -> str:
    alone = {r["method"]: r for r in rows if r["impl"] == "estimator"}
    if not alone:
        return ""
    base = alone.get("ste")
    out = [
        [
            name,
            f"{1000 * r['seconds']:.2f}",
            f"{1000 * (r['seconds'] - base['seconds']):+.2f}" if base else "-",
        ]
        for name, r in sorted(alone.items())
    ]
    return tabulate(
        out, headers=["estimator", "ms per forward+backward", "ms over ste"], tablefmt="github"
    )


def key(row) -> tuple:
    return (
        row["impl"],
        row["method"],
        row["codebook_size"],
        json.dumps(row["params"]),
        row["precision"],
    )


def label(row) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in row["params"].items())
    return f"{row['method']} ({extra})" if extra else row["method"]


def plain(row) -> bool:
    """A row with the default (straight-through) estimator."""
    return "estimator" not in row["params"]


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main_table(rows, precision, targets=None, unit="s") -> str:
    """The 65,536-code table; `unit` "ms" for GPU rows (`targets`: the speed-up targets)."""
    targets = SPEEDUP_TARGETS if targets is None else targets
    scale = 1000.0 if unit == "ms" else 1.0
    digits = 2 if unit == "ms" else 3
    by_key = {key(r): r for r in rows}
    floor = by_key.get(("floor", "matmul", 65536, "{}", precision))
    out = []
    for r in rows:
        if (
            r["impl"] != "vqbench"
            or r["codebook_size"] != 65536
            or r["precision"] != precision
            or not plain(r)
        ):
            continue
        # The library's case with the same parameters (the families pair their parameters).
        ref = by_key.get(("vqtorch", r["method"], 65536, json.dumps(r["params"]), precision))
        speedup = ref["seconds"] / r["seconds"] if ref else None
        target = targets.get(r["method"]) if ref else None
        to_floor = r["seconds"] / floor["seconds"] if floor and r["method"] in EXPLICIT else None
        out.append(
            [
                label(r),
                f"{scale * r['seconds']:.{digits}f}",
                f"{r['peak_extra_mib']:.0f}",
                f"{scale * ref['seconds']:.{digits}f}" if ref else "-",
                f"{ref['peak_extra_mib']:.0f}" if ref else "-",
                f"{speedup:.1f}x" if speedup else "-",
                f"{target:g}x: {mark(speedup >= target)}" if target else "-",
                f"{to_floor:.2f}: {mark(to_floor <= 1.3)}" if to_floor else "-",
                mark(r["peak_extra_mib"] < 1024),
            ]
        )
    headers = [
        "quantizer",
        f"vqbench {unit}",
        "vqbench MiB",
        f"v-q-p {unit}",
        "v-q-p MiB",
        "speed-up",
        "speed-up target met",
        "time / floor (<= 1.3)",
        "memory < 1 GiB",
    ]
    floor_line = (
        f"Floor (one {rows[0]['tokens']} x {rows[0]['dim']} x 65,536 {precision} matmul "
        f"alone): {scale * floor['seconds']:.{digits}f} {unit}, "
        f"{floor['peak_extra_mib']:.0f} MiB."
        if floor
        else ""
    )
    table = tabulate(out, headers=headers, tablefmt="github", disable_numparse=unit == "ms")
    return table + "\n\n" + floor_line


def seconds_in(seconds: float, unit: str) -> str:
    """`1.234` in seconds, or `1234.00` in milliseconds (GPU rows)."""
    return f"{1000 * seconds:.2f}" if unit == "ms" else f"{seconds:.3f}"


def groups_table(rows, precision, unit="s") -> str:
    group_rows = sorted(
        (
            r
            for r in rows
            if r["method"] == "group_vq"
            and r["codebook_size"] == 65536
            and r["precision"] == precision
            and plain(r)
        ),
        key=lambda r: r["params"]["groups"],
    )
    if not group_rows:
        return ""
    base = next((r for r in group_rows if r["params"]["groups"] == 1), group_rows[0])
    out = [
        [
            r["params"]["groups"],
            seconds_in(r["seconds"], unit),
            f"{r['seconds'] / base['seconds']:.2f}",
            f"{r['peak_extra_mib']:.0f}",
        ]
        for r in group_rows
    ]
    worst = max(r["seconds"] for r in group_rows) / base["seconds"]
    return (
        tabulate(
            out,
            headers=["groups", "seconds" if unit == "s" else unit, "ratio to k=1", "MiB"],
            tablefmt="github",
            disable_numparse=unit == "ms",
        )
        + f"\n\nLargest ratio to k = 1: {worst:.2f} (target <= 1.2: {mark(worst <= 1.2)})."
    )


def scaling_table(rows, precision, unit="s") -> tuple[str, dict]:
    series = defaultdict(dict)
    for r in rows:
        if (
            r["impl"] in ("vqbench", "floor")
            and r["precision"] == precision
            and plain(r)
            and (r["method"] != "group_vq" or r["params"].get("groups") == 64)
        ):
            if r["method"] in EXPLICIT or r["impl"] == "floor":
                series[label(r) if r["impl"] == "vqbench" else "floor (matmul)"][
                    r["codebook_size"]
                ] = r
    sizes = sorted({s for v in series.values() for s in v})
    out = []
    for name, points in sorted(series.items()):
        times = [seconds_in(points[s]["seconds"], unit) if s in points else "-" for s in sizes]
        row = [name, *times]
        if 8192 in points and 262144 in points:
            per_code = [points[s]["seconds"] / s for s in (8192, 262144)]
            row.append(f"{per_code[1] / per_code[0]:.2f}")
        else:
            row.append("-")
        out.append(row)
    headers = (
        ["quantizer"]
        + [f"{s:,} codes ({unit})" for s in sizes]
        + ["time per code, 262,144 vs 8,192 (1.0 = linear)"]
    )
    table = tabulate(out, headers=headers, tablefmt="github", disable_numparse=unit == "ms")
    return table, series


def estimator_table(rows, precision, unit="s") -> str:
    by_key = {key(r): r for r in rows}
    out = []
    for r in rows:
        if r["precision"] != precision or plain(r) or r["impl"] != "vqbench":
            continue
        base_params = {k: v for k, v in r["params"].items() if not k.startswith("estimator")}
        base = by_key.get(
            ("vqbench", r["method"], r["codebook_size"], json.dumps(base_params), precision)
        )
        if base is None:
            continue
        overhead = r["seconds"] / base["seconds"] - 1
        name = r["params"]["estimator"] + "".join(
            f" {v}" for v in r["params"].get("estimator_params", {}).values()
        )
        target = f"{mark(overhead < 0.10)}" if r["params"]["estimator"] == "rotation" else "-"
        ref = by_key.get(("vqtorch", r["method"], r["codebook_size"], key(r)[3], precision))
        out.append(
            [
                r["method"],
                name,
                seconds_in(base["seconds"], unit),
                seconds_in(r["seconds"], unit),
                f"{100 * overhead:+.1f}%",
                target,
                f"{r['peak_extra_mib']:.0f}",
                f"{ref['seconds']:.3f} s, {ref['peak_extra_mib']:.0f} MiB" if ref else "-",
            ]
        )
    return tabulate(
        out,
        headers=[
            "quantizer",
            "estimator",
            f"ste {unit}",
            f"estimator {unit}",
            "overhead",
            "rotation < 10%",
            "MiB",
            "v-q-p",
        ],
        tablefmt="github",
        disable_numparse=unit == "ms",
    )


def plot(series, path: Path) -> None:
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in sorted(series.items()):
        sizes = sorted(points)
        ax_t.plot(sizes, [points[s]["seconds"] for s in sizes], marker="o", label=name)
        ax_m.plot(sizes, [points[s]["peak_extra_mib"] for s in sizes], marker="o", label=name)
    for ax, ylabel in ((ax_t, "seconds per forward+backward"), (ax_m, "peak extra MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("codebook size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle("8,192 tokens x dim 128")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def quantizer_sections(rows, precision, plot_dir: Path, prefix="", unit="s", targets=None):
    """The 65,536-code table, groups, estimators and scaling of one precision context."""
    scaling, series = scaling_table(rows, precision, unit)
    plot_name = f"RESULTS-{prefix}{precision}.png"
    plot(series, plot_dir / plot_name)
    return [
        "",
        f"## 65,536 codes, {precision}",
        "",
        main_table(rows, precision, targets, unit),
        "",
        "### Group-VQ against the number of groups",
        "",
        groups_table(rows, precision, unit),
        "",
        "### Gradient estimators against the straight-through estimator",
        "",
        estimator_table(rows, precision, unit),
        "",
        "### Cost against codebook size",
        "",
        scaling,
        "",
        f"![time and memory against codebook size]({plot_name})",
    ]


def _ratios(seconds: dict, load: str) -> list[float]:
    """v-q-p / vqbench per round (each round times both back to back)."""
    return [lib / ours for ours, lib in zip(seconds[f"vqbench_{load}"], seconds[f"vqtorch_{load}"])]


def under_load_table(rows) -> str:
    found = [r for r in rows if r.get("impl") == "under-load"]
    out = []
    for r in sorted(found, key=lambda r: (EXPLICIT.index(r["method"]), "label" in r)):
        sec, med = r["round_seconds"], r["median"]
        quiet, loaded = _ratios(sec, "quiet"), _ratios(sec, "loaded")
        out.append(
            [
                r.get("label", r["method"]),  # a label marks a comparison run (older code)
                f"{med['vqbench_quiet']:.2f}",
                f"{med['vqtorch_quiet']:.2f}",
                f"{statistics.median(quiet):.1f}x ({min(quiet):.1f}-{max(quiet):.1f})",
                f"{med['vqbench_loaded']:.2f}",
                f"{med['vqtorch_loaded']:.2f}",
                f"{statistics.median(loaded):.1f}x ({min(loaded):.1f}-{max(loaded):.1f})",
                f"{med['vqbench_loaded'] / med['vqbench_quiet']:.1f}x",
                f"{med['vqtorch_loaded'] / med['vqtorch_quiet']:.1f}x",
                mark(min(loaded) > 1.0),
            ]
        )
    headers = [
        "quantizer", "quiet: vqbench s", "v-q-p s", "speed-up (range)", "loaded: vqbench s",
        "v-q-p s", "speed-up (range)", "vqbench loaded/quiet", "v-q-p loaded/quiet",
        "ahead in every loaded round",
    ]  # fmt: skip
    return tabulate(out, headers=headers, tablefmt="github", disable_numparse=True) if out else ""


def under_load_section(rows) -> list[str]:
    table = under_load_table(rows)
    if not table:
        return []
    r = next(r for r in rows if r.get("impl") == "under-load")
    loads = [a for x in rows if x.get("impl") == "under-load" for a in x.get("loadavg", [])]
    return [
        "",
        f"## Under load: {r['codebook_size']:,} codes, fp32, beside a competing process",
        "",
        f"`benchmarks/test_under_load.py`: one forward+backward at {r['tokens']:,} tokens x dim "
        f"{r['dim']} ({r['threads']} torch threads), ours and vector-quantize-pytorch's timed "
        f"back to back in each of {len(r['round_seconds']['vqbench_quiet'])} rounds, first "
        f"quiet, then beside a CPU-bound process running float32 matmuls on "
        f"{r['competitor_threads']} threads (another training run). Seconds are medians over "
        "the rounds; the speed-up is the median of the per-round ratios v-q-p / vqbench, with "
        "their range, which says how noisy the machine was."
        + (
            f" The machine's 1-minute load average before the rounds: "
            f"{min(loads):.1f} to {max(loads):.1f} on {r['threads']} threads' worth of cores."
            if loads
            else ""
        ),
        "",
        table,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="pytest-benchmark JSON file(s)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    machine, all_rows = {}, []
    for path in args.results:
        found_machine, found = load(path)
        all_rows += found
        if any(r.get("device") == "cpu" and r["impl"] in QUANTIZER_IMPLS for r in found):
            machine = found_machine  # the CPU heading describes the CPU run's machine
        machine = machine or found_machine
    # A file of its own for issue 24's cases stays out of the main run's tables (other load);
    # `tox -e bench` writes every case into the first file, whose tables hold them all.
    new_sources = {r["source"] for r in all_rows if r["impl"] in QUANTIZER_IMPLS and is_2025(r)} - {
        args.results[0].name
    }
    quantizer_rows = [
        r for r in all_rows if r["impl"] in QUANTIZER_IMPLS and r["source"] not in new_sources
    ]
    rows = [r for r in quantizer_rows if r["device"] == "cpu"]
    gpu_rows = [r for r in all_rows if r.get("device") == "cuda"]
    lines = ["# Quantizer benchmarks"]
    if rows:
        cpu = machine.get("cpu", {}).get("brand_raw") or platform.processor() or "unknown CPU"
        lines += [
            "",
            f"Written by `benchmarks/write_results.py` from "
            f"{', '.join(f'`{p.name}`' for p in args.results)}. Machine: {cpu}, "
            f"{rows[0]['threads']} torch threads, device `cpu`, Python "
            f"{machine.get('python_version')}. One forward+backward at {rows[0]['tokens']:,} "
            f"tokens x dim {rows[0]['dim']} (median of the rounds; vector-quantize-pytorch "
            "(v-q-p) cases on CPU run one round after a warm-up). Peak extra memory: the peak "
            "resident memory of a fresh process over its level just before the first step "
            "(CPU), or `max_memory_allocated` over the allocation before the step (CUDA). On "
            "this shared 2-core machine two runs of the same case differ by up to about 15%, "
            "so smaller differences between cases are noise.",
        ]
        for precision in sorted({r["precision"] for r in rows}):
            lines += quantizer_sections(rows, precision, args.out.parent)
    alone = estimator_alone_table(all_rows)
    if alone:
        lines += [
            "",
            "## Gradient estimators alone (8,192 tokens x dim 128, forward+backward)",
            "",
            "Their share of a quantizer step is below the step's noise, so they are "
            "also timed on their own (median of 20 rounds):",
            "",
            alone,
        ]
    lines += families_2025_section([r for r in all_rows if r["impl"] in QUANTIZER_IMPLS])
    lines += under_load_section(all_rows)
    lines += engine_section([r for r in all_rows if r.get("device") == "cpu"])

    def gpu_quantizer_sections(gpu, precision):
        found = [r for r in gpu if r["impl"] in QUANTIZER_IMPLS]
        if not found:
            return []
        return quantizer_sections(
            found, precision, args.out.parent, "gpu-", "ms", GPU_SPEEDUP_TARGETS
        )

    lines += gpu_sections(gpu_rows, gpu_quantizer_sections)
    lines += engine_section(gpu_rows)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
