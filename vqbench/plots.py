"""The report's figures (matplotlib, PNG), each named after the paper figure it mirrors.

Fig. 2/8: codebook usage per epoch, per method. Fig. 4: metrics against codebook size after
resampling or self-extension. Fig. 5: per-group code-norm mean/std and usage. Fig. 6/7/9:
cosine similarity of codes sampled per group, 2-D PCA of codes per group and of the biases.
Fig. 10: originals and reconstructions per method. Probe: decoded samples of the downstream
probe's prior per method (`probe-samples.png` of each run's first seed). Every figure is
drawn from the report's `Row`s and from what evaluation wrote into the run folders
(`figures.json`, `reconstructions.png`: `vqbench.evaluate.write_figure_data`), never from a
model or its weights, and written atomically. A run evaluated before evaluation wrote these
is left out of the two figures, with one line naming the command that writes them.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vqbench.files import atomic_write  # noqa: E402
from vqbench.report import Row  # noqa: E402
from vqbench.rundir import RunDir  # noqa: E402
from vqbench.suite import Suite  # noqa: E402


def save_figure(fig, out: Path, dpi: int) -> Path:
    """Write `fig` as PNG; the canvas grows to hold every label (a long row label is never
    cut off at the left edge)."""
    fig.tight_layout()
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return out


def paper_figure(suite: Suite, number: str) -> str:
    """` (Fig. 10)` where the suite mirrors a paper table; nothing in a suite of one's own."""
    return f" (Fig. {number})" if any(block.paper for block in suite.blocks()) else ""


def usage_series(run_dirs: list[str]) -> tuple[list[int], list[float], list[float], int]:
    """Epochs, mean and sample std (over seeds, in %) of the per-epoch training usage, over the
    epochs every seed's log reached, and how many seeds."""
    per_seed = [
        {e["epoch"] + 1: 100 * e["train_usage"] for e in RunDir(d).epoch_records()}
        for d in run_dirs
    ]
    per_seed = [s for s in per_seed if s]
    if not per_seed:
        return [], [], [], 0
    epochs = sorted(set.intersection(*(set(s) for s in per_seed)))
    columns = [[s[e] for s in per_seed] for e in epochs]
    mean = [statistics.fmean(c) for c in columns]
    std = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
    return epochs, mean, std, len(per_seed)


def usage_curves(rows: list[Row], out: Path) -> Path | None:
    """Training usage per epoch: the mean over the seeds, with a band of ± one std."""
    fig, ax = plt.subplots(figsize=(6, 4))
    seeds = 0
    for row in rows:
        if row.operation is not None or not row.run_dirs:
            continue
        epochs, mean, std, n = usage_series(row.run_dirs)
        if not epochs:
            continue
        (line,) = ax.plot(epochs, mean, marker="o", label=row.label)
        if n > 1:
            low = [m - s for m, s in zip(mean, std)]
            high = [m + s for m, s in zip(mean, std)]
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
        seeds = max(seeds, n)
    if not seeds:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("codebook usage over the epoch (%)")
    spread = f"mean over {seeds} seeds, band ± 1 std" if seeds > 1 else "one seed"
    ax.set_title(f"Codebook usage during training ({spread})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out, 110)


def codebook_size_curves(rows: list[Row], out: Path, fig_ref: str = " (Fig. 4)") -> Path | None:
    resized = {r.run for r in rows if r.operation}
    series: dict[str, list[Row]] = {}
    for row in rows:
        if row.codebook_size and row.run in resized:
            series.setdefault(row.run, []).append(row)
    if not series:
        return None

    def mean(row: Row, key: str) -> float | None:
        return row.metrics.get(key, {}).get("mean")

    keys = [
        k
        for k in ("psnr", "rfid", "lpips", "ssim")
        if any(mean(row, k) is not None for points in series.values() for row in points)
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run, points in series.items():
            xy = sorted((r.codebook_size, mean(r, key)) for r in points if mean(r, key) is not None)
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=run)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codebook size after resampling / extension")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Metrics against codebook size{fig_ref}")
    return save_figure(fig, out, 110)


def _missing(run_dir: Path, what: str) -> None:
    print(
        f"vqbench: {run_dir} has no {what} (evaluated by an earlier version); "
        f"`vqbench eval {run_dir} --figures-only` writes it",
        flush=True,
    )


def group_figure(row: Row, out: Path) -> Path | None:
    """Fig. 5-7 and 9 for the first seed of a run whose quantizer has a group layout."""
    run = RunDir(row.run_dirs[0])
    data = run.figure_data()
    if data is None:
        _missing(run.path, run.figure_data_file.name)
        return None
    stats = data["groups"]
    if stats is None:
        return None
    k = stats["groups"]
    usage = row.results[0].get("group_usage")
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    ax = axes[0]
    ax.errorbar(
        range(k),
        stats["code_norm_mean"],
        yerr=stats["code_norm_std"],
        fmt="o",
        ms=3,
        label="code norm mean ± std",
    )
    if usage:
        ax2 = ax.twinx()
        ax2.bar(range(k), [100 * u for u in usage], alpha=0.25, color="C1")
        ax2.set_ylabel("usage per group (%)")
    ax.set_xlabel("group")
    ax.set_title("Per-group code norms and usage (Fig. 5)")
    shown = len(stats["pca_codes"])
    axes[1].imshow(np.array(stats["similarity"]), cmap="coolwarm", vmin=-1, vmax=1)
    axes[1].set_title(f"Cosine similarity, 16 codes of groups 0-{shown - 1} (Fig. 6)")
    for j, points in enumerate(stats["pca_codes"]):
        pts = np.array(points).reshape(-1, 2)
        axes[2].scatter(pts[:, 0], pts[:, 1], s=3, label=f"group {j}")
    axes[2].set_title("PCA of codes per group (Fig. 7)")
    axes[2].legend(fontsize=6, markerscale=3)
    if stats["pca_biases"] is not None:
        pb = np.array(stats["pca_biases"])
        axes[3].scatter(pb[:, 0], pb[:, 1], s=12, c=range(k), cmap="viridis")
    axes[3].set_title("PCA of the group biases (Fig. 9)")
    return save_figure(fig, out, 100)


def group_figures(rows: list[Row], out_dir: Path, prefix: str) -> list[tuple[str, Path]]:
    """Fig. 5-7 and 9 for every run whose evaluation reported per-group usage."""
    figures = []
    for row in rows:
        if row.operation or not row.results or "group_usage" not in row.results[0]:
            continue
        path = group_figure(row, out_dir / f"{prefix}-groups-{row.run}.png")
        if path is not None:
            figures.append((f"Group-VQ per-group statistics: {row.label}", path))
    return figures


def reconstruction_strip(rows: list[Row], out: Path, fig_ref: str = "") -> Path | None:
    """The validation images (from the first run) over each method's reconstructions."""
    strips = []
    for row in rows:
        if row.operation is not None or not row.results or not row.run_dirs:
            continue
        run = RunDir(row.run_dirs[0])
        if not run.reconstructions_file.is_file():
            _missing(run.path, run.reconstructions_file.name)
            continue
        image = plt.imread(run.reconstructions_file)  # originals over reconstructions
        half = image.shape[0] // 2
        if not strips:
            strips.append(("original", image[:half]))
        strips.append((row.label, image[half:]))
    if not strips:
        return None
    n = strips[0][1].shape[1] // strips[0][1].shape[0]
    fig, axes = plt.subplots(len(strips), 1, figsize=(1.4 * n, 1.5 * len(strips)), squeeze=False)
    for ax, (label, image) in zip(axes[:, 0], strips):
        ax.imshow(image.clip(0, 1))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Validation images and reconstructions{fig_ref}", fontsize=9)
    return save_figure(fig, out, 110)


def probe_samples(rows: list[Row], out: Path) -> Path | None:
    """The downstream probe's decoded samples, one strip per method (the runs' first seed)."""
    shown = []
    for row in rows:
        if row.operation is None and row.probes and row.run_dirs:
            path = RunDir(row.run_dirs[0]).probe_samples_file
            if path.is_file():
                shown.append((row.label, plt.imread(path)))
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 1.3 * len(shown)), squeeze=False)
    for ax, (label, image) in zip(axes[:, 0], shown):
        ax.imshow(image)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Samples of the probe's prior, decoded by each tokenizer", fontsize=9)
    return save_figure(fig, out, 110)


def write_all(suite: Suite, rows: list[Row], out_dir: Path) -> list[tuple[str, Path]]:
    name = suite.name
    figures = []
    for title, path in [
        ("Codebook usage per epoch", usage_curves(rows, out_dir / f"{name}-usage.png")),
        (
            "Metrics against codebook size",
            codebook_size_curves(
                rows, out_dir / f"{name}-codebook-size.png", paper_figure(suite, "4")
            ),
        ),
        (
            "Reconstructions",
            reconstruction_strip(
                rows, out_dir / f"{name}-reconstructions.png", paper_figure(suite, "10")
            ),
        ),
        ("Probe samples", probe_samples(rows, out_dir / f"{name}-probe-samples.png")),
    ]:
        if path is not None:
            figures.append((title, path))
    return figures + group_figures(rows, out_dir, name)
