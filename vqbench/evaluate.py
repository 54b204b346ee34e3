"""Evaluation of a trained run on its validation split (SPEC section 4).

Codebook usage and perplexity (per group where the quantizer has groups), PSNR (per image, and
SimVQ's per-batch variant), SSIM, LPIPS and rFID, each accumulated over the whole split and
reduced across processes (`vqbench.metrics`). A metric whose pretrained weights are missing is
reported as `n/a (reason)`, with one line saying so. `evaluate_run` also applies post-training
codebook operations (`--resample N`, `--extend N`, Group-VQ's Algorithm 2) to quantizers that
can do them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqbench import distributed
from vqbench.build import load_trained
from vqbench.config import RunConfig
from vqbench.data import build_split, eval_loader
from vqbench.errors import VQBenchError
from vqbench.metrics import Unavailable, build_metrics
from vqbench.models import Autoencoder
from vqbench.quantizer import check_codebook_fits

_REPORTED: set[str] = set()


def _say_unavailable_once(results: dict[str, Any]) -> None:
    """One line per unavailable metric and reason, once per process."""
    for name, value in results.items():
        if isinstance(value, Unavailable) and distributed.is_main_process():
            line = f"vqbench: {name} unavailable: {value.reason}"
            if line not in _REPORTED:
                _REPORTED.add(line)
                print(line, flush=True)


@torch.no_grad()
def evaluate_split(
    model: Autoencoder, config: RunConfig, world: distributed.World, split: str = "val"
) -> dict[str, Any]:
    """Metrics of `model` over the whole `split` (`val` or `train`) of the run's dataset."""
    c, dev = config.eval, world.device
    dataset = build_split(config.data, train=split == "train", seed=config.seed)
    loader = eval_loader(
        dataset,
        batch_size=c.batch_size,
        world=world.size,
        rank=world.rank,
        workers=config.data.workers,
        device=dev,
    )
    quantizer = model.quantizer
    metrics = build_metrics(
        c.metrics,
        codebook_size=quantizer.codebook_size,
        code_groups=quantizer.code_groups(),
        index_sizes=quantizer.index_sizes(),
        lpips_net=c.lpips_net,
        lpips_weights=c.lpips_weights,
        inception_weights=c.inception_weights,
        fid_backend=c.fid_backend,
        paper_batch=c.paper_batch_size,
        device=dev,
    )
    was_training = model.training
    model.eval()
    for x in loader:
        x = x.to(dev)
        x_rec, out = model(x)
        x_rec = x_rec.float().clamp(-1, 1)
        for metric in metrics:
            metric.update(x, x_rec, out.indices)
    model.train(was_training)
    results: dict[str, Any] = {
        "images": len(dataset),
        "codebook_size": quantizer.codebook_size,
        "independent_groups": quantizer.independent_groups(),
    }
    for metric in metrics:
        results.update(metric.compute())
    _say_unavailable_once(results)
    return {k: str(v) if isinstance(v, Unavailable) else v for k, v in results.items()}


def apply_codebook_operation(
    model: Autoencoder, resample: int | None, extend: int | None, seed: int = 1
) -> str | None:
    """Resample or extend the trained codebook; a clear error where it does not apply."""
    if resample is None and extend is None:
        return None
    if resample is not None and extend is not None:
        raise VQBenchError("give --resample or --extend, not both")
    op, size = ("resample", resample) if resample is not None else ("extend", extend)
    quantizer = model.quantizer
    if quantizer.resamplable and op == "extend" and size <= quantizer.codebook_size:
        raise VQBenchError(
            f"--extend {size} must exceed the trained codebook size {quantizer.codebook_size}"
        )
    if quantizer.resamplable:  # the new codebook is checked before it is allocated
        resized = quantizer.params.model_copy(update={"codebook_size": size})
        device = next(iter(quantizer.buffers()), torch.empty(0)).device
        check_codebook_fits(quantizer.name, resized, f"--{op} {size}", device)
    model.quantizer = getattr(quantizer, op)(size, seed=seed)  # "cannot" unless resamplable
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
    config, model, run, checkpoint = load_trained(path, device=world.device)
    operation = apply_codebook_operation(model, resample, extend, seed)
    results = evaluate_split(model, config, world, split)
    results.update(
        {
            "checkpoint": checkpoint.name,
            "split": split,
            "weights": "model_ema" if config.eval.use_ema else "model",
            "operation": operation,
        }
    )
    out = run.eval_file(operation, split)
    if world.is_main:
        run.write_result(out, results)
    return out, results
