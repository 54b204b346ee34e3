"""Evaluation of a trained run on its validation split (SPEC section 4).

Codebook usage and perplexity (per group for Group-VQ), PSNR (per image, and SimVQ's per-batch
variant), SSIM, LPIPS and rFID, each accumulated over the whole split and reduced across
processes. A metric whose pretrained weights are missing is reported as `n/a (reason)`.
`evaluate_run` also applies Group-VQ's post-training codebook sampling (`--resample N`,
`--extend N`, Algorithm 2) before evaluating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vqbench import distributed
from vqbench.checkpoint import latest_checkpoint, load_checkpoint
from vqbench.config import RunConfig, parse_run_config, read_yaml
from vqbench.data import build_split, eval_loader
from vqbench.errors import VQBenchError
from vqbench.metrics import FID, LPIPS, CodebookUsage, ImageQuality, Unavailable
from vqbench.models import Autoencoder


def _as_result(value: Any) -> Any:
    return str(value) if isinstance(value, Unavailable) else value


@torch.no_grad()
def evaluate_split(
    model: Autoencoder, config: RunConfig, world: distributed.World, split: str = "val"
) -> dict[str, Any]:
    """Metrics of `model` over the whole `split` (`val` or `train`) of the run's dataset."""
    c, dev = config.eval, world.device
    train = split == "train"
    dataset = build_split(config.data, train=train, seed=config.seed)
    loader = eval_loader(
        dataset,
        batch_size=c.batch_size,
        world=world.size,
        rank=world.rank,
        workers=config.data.workers,
        device=dev,
    )
    quantizer = model.quantizer
    groups = getattr(quantizer, "groups", None)
    usage = CodebookUsage(quantizer.codebook_size, getattr(quantizer, "group_of", None), groups).to(
        dev
    )
    image = ImageQuality() if {"psnr", "ssim"} & set(c.metrics) else None
    lpips = LPIPS(c.lpips_net, device=dev) if "lpips" in c.metrics else None
    fid = FID(c.inception_weights, device=dev) if "fid" in c.metrics else None
    was_training = model.training
    model.eval()
    for x in loader:
        x = x.to(dev)
        x_rec, out = model(x)
        x_rec = x_rec.float().clamp(-1, 1)
        usage.update(out.indices)
        for metric in (image, lpips, fid):
            if metric is not None:
                metric.update(x, x_rec)
    model.train(was_training)
    results: dict[str, Any] = {"images": len(dataset), "codebook_size": quantizer.codebook_size}
    results.update(usage.compute())
    if image is not None:
        results.update(image.compute())
    if lpips is not None:
        results[f"lpips_{c.lpips_net}"] = _as_result(lpips.compute())
    if fid is not None:
        results["rfid"] = _as_result(fid.compute())
    return results


def find_run(path: str | Path) -> tuple[Path, Path]:
    """(run directory, checkpoint folder) from a run directory or a `step-*` checkpoint."""
    path = Path(path)
    if not path.exists():
        raise VQBenchError(f"'{path}' does not exist; give a run directory or a checkpoint")
    if (path / "state.pt").exists() or path.name.startswith("step-"):
        return path.parent.parent, path
    checkpoint = latest_checkpoint(path / "checkpoints")
    if not (path / "config.yaml").is_file() or checkpoint is None:
        raise VQBenchError(
            f"'{path}' is not a vqbench run directory with a checkpoint "
            f"(config.yaml and checkpoints/latest); train it first"
        )
    return path, checkpoint


def load_trained_model(
    run_dir: Path, checkpoint: Path, *, use_ema: bool, device: torch.device
) -> tuple[RunConfig, Autoencoder]:
    from vqbench.train import build_model

    config = parse_run_config(read_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    weights, _ = load_checkpoint(checkpoint)
    model = build_model(config)
    key = "ema" if use_ema and "ema" in weights else "model"
    try:
        model.load_state_dict(weights[key])
    except RuntimeError as err:
        raise VQBenchError(
            f"checkpoint '{checkpoint}' does not match the run's config "
            f"({str(err).splitlines()[0]})"
        ) from None
    return config, model.to(device)


def apply_codebook_operation(
    model: Autoencoder, resample: int | None, extend: int | None, seed: int = 1
) -> str | None:
    """Group-VQ's Algorithm 2 on the trained quantizer; a clear error where it does not apply."""
    if resample is None and extend is None:
        return None
    if resample is not None and extend is not None:
        raise VQBenchError("give --resample or --extend, not both")
    op, size = ("resample", resample) if resample is not None else ("extend", extend)
    method = getattr(model.quantizer, op, None)
    if method is None:
        raise VQBenchError(
            f"quantizer '{model.quantizer.name}' cannot {op} its codebook: only "
            f"quantizers that generate codes from a sampled core (group_vq) can"
        )
    if op == "extend" and size <= model.quantizer.codebook_size:
        raise VQBenchError(
            f"--extend {size} must exceed the trained codebook size {model.quantizer.codebook_size}"
        )
    model.quantizer = method(size, seed=seed)
    return f"{op}-{size}"


def evaluate_run(
    path: str | Path,
    *,
    split: str = "val",
    resample: int | None = None,
    extend: int | None = None,
    device: str | None = None,
    seed: int = 1,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate a run (or one of its checkpoints) and write `eval[-op].json` in the run dir."""
    world = distributed.setup(device)
    run_dir, checkpoint = find_run(path)
    config = parse_run_config(read_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    _, model = load_trained_model(
        run_dir, checkpoint, use_ema=config.eval.use_ema, device=world.device
    )
    operation = apply_codebook_operation(model, resample, extend, seed)
    results = evaluate_split(model, config, world, split)
    results.update(
        {
            "checkpoint": checkpoint.name,
            "split": split,
            "weights": "ema" if config.eval.use_ema else "model",
            "operation": operation,
        }
    )
    out = run_dir / (f"eval-{operation}.json" if operation else "eval.json")
    if split != "val":
        out = out.with_name(out.stem + f"-{split}.json")
    if world.is_main:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(out)
    return out, results
