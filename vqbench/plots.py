"""The report's figures (matplotlib, PNG), each named after the paper figure it mirrors.

Fig. 2/8: codebook usage per epoch, per method. Fig. 4: metrics against codebook size after
resampling or self-extension. Fig. 5: per-group code-norm mean/std and usage. Fig. 6/7/9:
cosine similarity of codes sampled per group, 2-D PCA of codes per group and of the biases.
Fig. 10: originals and reconstructions per method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if "train_usage" in r]


def usage_curves(records, out: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for rec in records:
        if rec["operation"] is not None or not rec["run_dirs"]:
            continue
        epochs = _epochs(Path(rec["run_dirs"][0]))
        if epochs:
            ax.plot(
                [e["epoch"] + 1 for e in epochs],
                [100 * e["train_usage"] for e in epochs],
                marker="o",
                label=rec["label"],
            )
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("codebook usage over the epoch (%)")
    ax.set_title("Codebook usage during training (seed 0)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def codebook_size_curves(records, out: Path) -> Path | None:
    series: dict[str, list[tuple[int, dict]]] = {}
    for rec in records:
        if rec["codebook_size"] and any(r["run"] == rec["run"] and r["operation"] for r in records):
            series.setdefault(rec["run"], []).append((rec["codebook_size"], rec))
    if not series:
        return None
    keys = [
        k
        for k in ("psnr", "rfid", "lpips", "ssim")
        if any(
            rec["metrics"].get(k, {}).get("mean") is not None
            for pts in series.values()
            for _, rec in pts
        )
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for run, points in series.items():
            points = sorted(
                (size, rec["metrics"][key]["mean"])
                for size, rec in points
                if rec["metrics"].get(key, {}).get("mean") is not None
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=run)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codebook size after resampling / extension")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Metrics against codebook size (Fig. 4)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _load_model(run_dir: Path):
    from vqbench.evaluate import find_run, load_trained_model

    run, checkpoint = find_run(run_dir)
    return load_trained_model(run, checkpoint, use_ema=True, device=torch.device("cpu"))


def group_figures(records, out_dir: Path, prefix: str) -> list[tuple[str, Path]]:
    """Fig. 5-7 and 9 for the first seed of every Group-VQ run."""
    figures = []
    for rec in records:
        if rec["quantizer"] != "group_vq" or rec["operation"] or not rec["results"]:
            continue
        _, model = _load_model(Path(rec["run_dirs"][0]))
        q = model.quantizer
        with torch.no_grad():
            codes = q.codebook().float()
            stats = q.group_statistics()
            group = q.group_of(torch.arange(codes.shape[0]))
        usage = rec["results"][0].get("group_usage")
        k = q.groups
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
        shown = list(range(min(k, 8)))
        sampled = torch.cat([codes[group == j][:16] for j in shown])
        sim = torch.nn.functional.normalize(sampled, dim=1)
        axes[1].imshow((sim @ sim.t()).numpy(), cmap="coolwarm", vmin=-1, vmax=1)
        axes[1].set_title(f"Cosine similarity, 16 codes of groups 0-{len(shown) - 1} (Fig. 6)")
        centred = codes - codes.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False)
        xy = centred @ v[:, :2]
        for j in shown:
            pts = xy[group == j][:256]
            axes[2].scatter(pts[:, 0], pts[:, 1], s=3, label=f"group {j}")
        axes[2].set_title("PCA of codes per group (Fig. 7)")
        axes[2].legend(fontsize=6, markerscale=3)
        bias = q.projector.bias
        if bias is not None and k >= 3:
            b = bias.detach().reshape(k, -1)
            b = b - b.mean(0)
            _, _, vb = torch.pca_lowrank(b, q=2, center=False)
            pb = b @ vb[:, :2]
            axes[3].scatter(pb[:, 0], pb[:, 1], s=12, c=range(k), cmap="viridis")
        axes[3].set_title("PCA of the group biases (Fig. 9)")
        fig.tight_layout()
        path = out_dir / f"{prefix}-groups-{rec['run']}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figures.append((f"Group-VQ per-group statistics: {rec['label']}", path))
    return figures


def reconstruction_strip(suite, records, out: Path, n: int = 6) -> Path | None:
    from vqbench.data import build_split

    rows = [r for r in records if r["operation"] is None and r["results"]]
    if not rows:
        return None
    c = suite.runs[0].config
    data = build_split(c.data, train=False, seed=c.seed)
    x = torch.stack([data[i] for i in range(min(n, len(data)))])
    strips = [("original", x)]
    for rec in rows:
        _, model = _load_model(Path(rec["run_dirs"][0]))
        with torch.no_grad():
            strips.append((rec["label"], model(x)[0].clamp(-1, 1)))
    fig, axes = plt.subplots(len(strips), 1, figsize=(1.4 * len(x), 1.5 * len(strips)))
    for ax, (label, images) in zip(axes, strips):
        row = torch.cat(list((images + 1) / 2), dim=2).permute(1, 2, 0).numpy()
        ax.imshow(row.clip(0, 1))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Validation images and reconstructions (Fig. 10)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_all(suite, records, runs_dir: Path, out_dir: Path) -> list[tuple[str, Path]]:
    name = suite.name
    figures = []
    for title, make in [
        ("Codebook usage per epoch", lambda: usage_curves(records, out_dir / f"{name}-usage.png")),
        (
            "Metrics against codebook size",
            lambda: codebook_size_curves(records, out_dir / f"{name}-codebook-size.png"),
        ),
        (
            "Reconstructions",
            lambda: reconstruction_strip(suite, records, out_dir / f"{name}-reconstructions.png"),
        ),
    ]:
        path = make()
        if path is not None:
            figures.append((title, path))
    figures += group_figures(records, out_dir, name)
    return figures
