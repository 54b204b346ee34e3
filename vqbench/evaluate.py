"""Evaluation of a trained run, or of a published tokenizer, on a validation split (SPEC
section 4), under a protocol.

The run's `eval.protocol` (`vqbench.protocols`) decides which images are measured and how they
are resized and cropped, and the metric settings it fixes; `eval.json` records its name and
version (`protocol`, `protocol_version`).

Codebook usage and perplexity (per group where the quantizer has groups), PSNR (per image, and
SimVQ's per-batch variant), SSIM, LPIPS and rFID, each accumulated over the whole split and
reduced across processes (`vqbench.metrics`). A metric whose pretrained weights are missing is
reported as `n/a (reason)`, with one line saying so. `evaluate_run` also applies post-training
codebook operations (`--resample N`, `--extend N`, Group-VQ's Algorithm 2) to quantizers that
can do them. Evaluating the trained codebook also writes what the report's figures need of the
weights (`write_figure_data`: `figures.json` and `reconstructions.png`), so that a report is
drawn from the run folders alone, without a model, weights or a torch device;
`vqbench eval RUN --figures-only` writes just these for runs evaluated before they existed.

Trained runs and published tokenizers (`evaluate_published`, any `ImageTokenizer`) go through
one metric loop, `evaluate_split`: all it asks of either is an `Evaluand` (reconstructions and
indices of a batch, the sizes of the index components).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vqbench import distributed
from vqbench.build import load_trained
from vqbench.config import RunConfig
from vqbench.data import build_split, eval_loader
from vqbench.errors import VQBenchError
from vqbench.files import atomic_write, atomic_write_json
from vqbench.metrics import FID, FIDStatistics, SampleFID, Unavailable
from vqbench.models import Autoencoder, check_resolution
from vqbench.protocols import (
    FolderData,
    Protocol,
    check_protocol_images,
    get_protocol,
    protocol_dataset,
    protocol_metrics,
)
from vqbench.published import ImageTokenizer
from vqbench.published_run import (
    PublishedConfig,
    check_out_folder,
    file_sha256,
    load_tokenizer,
    record,
    tokenizer_fingerprint,
)
from vqbench.quantizer import Quantizer, check_codebook_fits
from vqbench.rundir import RunDir

#: The figures' samples: validation images in the reconstruction strip; groups shown, codes
#: per group in the similarity matrix, and codes per group in the PCA scatter (Fig. 6, 7).
STRIP_IMAGES, GROUPS_SHOWN, SIMILARITY_CODES, SCATTER_CODES = 6, 8, 16, 256

_REPORTED: set[str] = set()


def _say_unavailable_once(results: dict[str, Any]) -> None:
    """One line per unavailable metric and reason, once per process."""
    for name, value in results.items():
        if isinstance(value, Unavailable) and distributed.is_main_process():
            line = f"vqbench: {name} unavailable: {value.reason}"
            if line not in _REPORTED:
                _REPORTED.add(line)
                print(line, flush=True)


@dataclass
class Evaluand:
    """What the metric loop asks of a tokenizer, trained or published: a module (for its
    train/eval mode), `reconstruct(images) -> (reconstructions, indices)`, and its codes."""

    module: torch.nn.Module
    reconstruct: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    index_sizes: list[int]
    codebook_size: int  # for several index components, the product of their sizes
    independent_groups: int | None  # None where the tokenizer does not say
    code_groups: torch.Tensor | None = None


def evaluand_of(model: Autoencoder | ImageTokenizer) -> Evaluand:
    """A trained autoencoder (its forward pass, its quantizer's codes) or an `ImageTokenizer`
    that is a torch module (a `PublishedTokenizer`, an exported `Tokenizer`): `decode(encode(x))`,
    codebook size the product of `index_sizes()`, `independent_groups()` where it has one."""
    if isinstance(model, Autoencoder):
        q = model.quantizer

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x_rec, out = model(x)
            return x_rec, out.indices

        return Evaluand(
            model, forward, q.index_sizes(), q.codebook_size, q.independent_groups(),
            q.code_groups(),
        )  # fmt: skip
    sizes = [int(s) for s in model.index_sizes()]

    def round_trip(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = model.encode(x)
        return model.decode(indices), indices

    groups = getattr(model, "independent_groups", None)
    return Evaluand(
        model, round_trip, sizes, math.prod(sizes), groups() if callable(groups) else None
    )


@torch.no_grad()
def evaluate_split(
    model: Autoencoder | ImageTokenizer, config: RunConfig, world: distributed.World,
    split: str = "val",
) -> dict[str, Any]:  # fmt: skip
    """Metrics of `model` (a trained autoencoder or any `ImageTokenizer`) over `split` (`val`
    or `train`) of the dataset `config.data` describes, as the run's protocol measures it (the
    whole split under the default protocol)."""
    c, dev = config.eval, world.device
    protocol = get_protocol(c.protocol)
    dataset = protocol_dataset(protocol, config.data, split, seed=config.seed)
    loader = eval_loader(
        dataset,
        batch_size=c.batch_size,
        world=world.size,
        rank=world.rank,
        workers=config.data.workers,
        device=dev,
    )
    evaluand = evaluand_of(model)
    metrics = protocol_metrics(
        c,
        codebook_size=evaluand.codebook_size,
        code_groups=evaluand.code_groups,
        index_sizes=evaluand.index_sizes,
        device=dev,
    )
    was_training = evaluand.module.training
    evaluand.module.eval()
    for x in loader:
        x = x.to(dev)
        x_rec, indices = evaluand.reconstruct(x)
        x_rec = x_rec.float().clamp(-1, 1)
        for metric in metrics:
            metric.update(x, x_rec, indices)
    evaluand.module.train(was_training)
    results: dict[str, Any] = {
        "images": len(dataset),
        "codebook_size": evaluand.codebook_size,
        "independent_groups": evaluand.independent_groups,
    }
    for metric in metrics:
        results.update(metric.compute())
        if isinstance(metric, FID) and metric.reference is not None:
            ref = metric.reference
            results["rfid_reference"] = f"{ref.source} ({ref.stack}, {ref.count} images)"
    results.update(protocol_fields(protocol))
    _say_unavailable_once(results)
    return {k: str(v) if isinstance(v, Unavailable) else v for k, v in results.items()}


def protocol_fields(protocol: Protocol) -> dict[str, Any]:
    """What `eval.json` records of the protocol it was measured under."""
    return {"protocol": protocol.name, "protocol_version": protocol.version}


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


# ---- what the figures need -----------------------------------------------------------------
def _pca_2d(x: torch.Tensor) -> torch.Tensor:
    """The rows of `x`, centred, on their first two principal directions (`pca_lowrank`'s
    random projection seeded apart from the global generator, which stays as it was)."""
    centred = x - x.mean(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False)
    return centred @ v[:, :2]


@torch.no_grad()
def group_figure_data(quantizer: Quantizer) -> dict[str, Any] | None:
    """Group-VQ Fig. 5-7 and 9 of a trained quantizer with a group layout, as plain data:
    per-group code-norm mean and std (and every code's norm, per group), the cosine similarity
    of codes sampled from the first groups, a 2-D PCA of codes per group and of the biases."""
    stats = quantizer.group_statistics()
    if stats is None:
        return None
    codes, group = quantizer.codebook().float().cpu(), quantizer.code_groups().cpu()
    k = int(group.max()) + 1
    shown = range(min(k, GROUPS_SHOWN))
    sampled = torch.nn.functional.normalize(
        torch.cat([codes[group == j][:SIMILARITY_CODES] for j in shown]), dim=1
    )
    xy = _pca_2d(codes)
    biases = quantizer.group_biases()
    return {
        "groups": k,
        "code_norm_mean": stats["code_norm_mean"].tolist(),
        "code_norm_std": stats["code_norm_std"].tolist(),
        "code_norms": [codes[group == j].norm(dim=1).tolist() for j in range(k)],
        "similarity": (sampled @ sampled.t()).tolist(),
        "pca_codes": [xy[group == j][:SCATTER_CODES].tolist() for j in shown],
        "pca_biases": _pca_2d(biases.float().cpu()).tolist()
        if biases is not None and k >= 3
        else None,
    }


@torch.no_grad()
def reconstruction_strip(
    model: Autoencoder | ImageTokenizer, config: RunConfig, device: torch.device
) -> np.ndarray:
    """The first validation images over their reconstructions, one uint8 RGB image."""
    data = build_split(config.data, train=False, seed=config.seed)
    x = torch.stack([data[i] for i in range(min(STRIP_IMAGES, len(data)))]).to(device)
    evaluand = evaluand_of(model)
    was_training = evaluand.module.training
    evaluand.module.eval()
    x_rec = evaluand.reconstruct(x)[0].float().clamp(-1, 1)
    evaluand.module.train(was_training)
    rows = [torch.cat(list(images), dim=2) for images in (x, x_rec)]  # (3, h, n * w) each
    strip = (torch.cat(rows, dim=1) + 1) / 2
    return (strip.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def write_figure_data(
    model: Autoencoder | ImageTokenizer,
    config: RunConfig,
    run: RunDir,
    checkpoint: Path,
    weights: str | None = None,
) -> None:
    """`figures.json` and `reconstructions.png` of the evaluated weights (rank 0 only);
    `weights` names them (default: the run's `model_ema` or `model`)."""
    device = next(model.parameters()).device
    strip = reconstruction_strip(model, config, device)
    quantizer = getattr(model, "quantizer", None) if isinstance(model, Autoencoder) else None
    data = {
        "checkpoint": checkpoint.name,
        "weights": weights or ("model_ema" if config.eval.use_ema else "model"),
        "strip_images": STRIP_IMAGES,
        "groups": group_figure_data(quantizer) if quantizer is not None else None,
    }
    with atomic_write(run.reconstructions_file) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    atomic_write_json(run.figure_data_file, data)


def write_figures_only(path: str | Path, device: str | None = None) -> Path:
    """`vqbench eval RUN --figures-only`: the figure data of a run evaluated before evaluation
    wrote it; its eval*.json files are not touched."""
    world = distributed.setup(device)
    config, model, run, checkpoint = load_trained(path, device=world.device)
    if world.is_main:
        write_figure_data(model, config, run, checkpoint)
    return run.figure_data_file


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
        if operation is None and split == "val":  # the trained codebook: what figures need
            write_figure_data(model, config, run, checkpoint)
        run.write_result(out, results)
    return out, results


def evaluate_published(
    config: PublishedConfig,
    out: str | Path,
    *,
    device: str | None = None,
    force: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate a published tokenizer (`config.tokenizer`) on the validation split of
    `config.data` and write `eval.json` (a trained run's keys, plus the tokenizer's name,
    checkpoint sha256, source and options), `figures.json` and `reconstructions.png` in `out`
    (`vqbench.published_run`). Everything is checked before anything is written."""
    world = distributed.setup(device)
    spec, out = config.tokenizer, Path(out)
    checkpoint = Path(spec.checkpoint)
    if not checkpoint.is_file():
        raise VQBenchError(
            f"checkpoint '{spec.checkpoint}' does not exist; give the released weights file"
        )
    sha256 = file_sha256(spec.checkpoint)
    check_out_folder(out, tokenizer_fingerprint(config, sha256), force)
    tokenizer = load_tokenizer(spec).to(world.device)
    protocol = get_protocol(config.eval.protocol)  # its size, where it fixes one
    check_resolution(protocol.resolution or config.data.resolution, tokenizer.downsampling)
    check_protocol_images(config.data, protocol.name)  # before anything is written
    results = evaluate_split(tokenizer, config, world)  # the folder is written after it
    run = record(out, config, sha256) if world.is_main else RunDir(out)
    results.update(
        {
            "checkpoint": checkpoint.name,
            "split": "val",
            "weights": "released",
            "operation": None,
            "tokenizer": spec.adapter,
            "checkpoint_sha256": sha256,
            "source": tokenizer.source,
            "options": spec.options,
        }
    )
    if world.is_main:
        write_figure_data(tokenizer, config, run, checkpoint, "released")
        run.write_result(run.eval_file(), results)
    return run.eval_file(), results


@torch.no_grad()
def fid_statistics(
    root: str | Path,
    *,
    resolution: int | None = None,
    backend: str | None = None,
    mode: str | None = None,
    protocol: str = "vqbench",
    weights: str | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> FIDStatistics:
    """Reference statistics of a folder of images, prepared and counted as `protocol`'s
    validation split (its resolution, resize, crop, image count and FID stack), for
    `eval.fid_stats`; the file records the protocol. `resolution`, `backend` and `mode` are
    for what the protocol leaves free (defaults 256, torch-fidelity); one that contradicts it
    is refused in one line."""
    chosen = get_protocol(protocol)
    asked = {"resolution": resolution, "backend": backend, "mode": mode}
    fixed = {
        "resolution": chosen.resolution,
        "backend": chosen.fid_backend,
        "mode": chosen.fid_mode,
    }
    for key, value in asked.items():
        if value is not None and fixed[key] is not None and value != fixed[key]:
            raise VQBenchError(
                f"--{key} {value} contradicts protocol {chosen.label}, which sets {fixed[key]}; "
                f"drop --{key} or choose another --protocol"
            )
    backend = fixed["backend"] or backend or "torch-fidelity"
    mode = fixed["mode"] or mode or ("clean" if backend == "clean-fid" else None)
    resolution = fixed["resolution"] or resolution or 256
    if not Path(root).is_dir():
        raise VQBenchError(f"image folder '{root}' does not exist; point it at your images")
    data = FolderData(str(root), resolution)
    dataset = protocol_dataset(chosen, data, "val")
    if len(dataset) < 2:
        raise VQBenchError(f"image folder '{root}' holds {len(dataset)} image(s); FID needs 2")
    try:
        fid = SampleFID(
            weights, device=device, backend=backend, mode=mode, protocol=chosen.label
        )  # its real side, alone
    except ValueError as err:
        raise VQBenchError(f"cannot compute FID statistics: {err}") from None
    if fid.unavailable is not None:
        raise VQBenchError(f"cannot compute FID statistics: {fid.unavailable.reason}")
    for x in eval_loader(dataset, batch_size=batch_size, device=torch.device(device)):
        fid.update(x.to(device), None)
    source = f"{Path(root).name} ({len(dataset)} images at {resolution}px)"
    return fid.saved_statistics(source)
