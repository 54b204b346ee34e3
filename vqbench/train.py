"""Training: one run = one autoencoder + one quantizer + one dataset + one optimiser setting.

Readable top-down (`train` at the bottom): build the parts from the config, then one loop of
generator step, discriminator step, model EMA, logging and checkpoints. Distributed training
and mixed precision are set up once, from the device (vqbench/distributed.py); the quantizer
computes its distances and losses in float32 whatever the autocast.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import platform
import random
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

import vqbench
from vqbench import distributed
from vqbench.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vqbench.config import RunConfig
from vqbench.data import EpochBatches, build_split, train_loader
from vqbench.errors import VQBenchError
from vqbench.losses import AutoencoderLoss, PatchDiscriminator
from vqbench.metrics import CodebookUsage
from vqbench.models import Autoencoder, build_autoencoder
from vqbench.pretrained import WeightsUnavailable, load_lpips
from vqbench.registry import create_quantizer, load_plugin


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stops, keeping its last good checkpoint."""


# ---- run directory -----------------------------------------------------------------------
def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_status(run_dir: Path, **status: Any) -> None:
    tmp = run_dir / "status.json.tmp"
    tmp.write_text(json.dumps(status))
    tmp.replace(run_dir / "status.json")


def check_run_dir(config: RunConfig, run_dir: Path, *, resume: bool, force: bool) -> bool:
    """Decide what to do with `run_dir` before anything is written; True means resume."""
    if force or not run_dir.exists() or not any(run_dir.iterdir()):
        return False
    fingerprint_file = run_dir / "fingerprint"
    if not fingerprint_file.is_file():
        raise VQBenchError(
            f"output folder '{run_dir}' is not empty and holds no vqbench run; "
            f"choose another --out or pass --force to replace its contents"
        )
    theirs, ours = fingerprint_file.read_text().strip(), config.fingerprint()
    if theirs != ours:
        raise VQBenchError(
            f"output folder '{run_dir}' holds a different run (fingerprint "
            f"{theirs}, this config {ours}); choose another --out or pass "
            f"--force to replace it"
        )
    if resume:
        return True
    state = read_status(run_dir).get("state", "running")
    raise VQBenchError(
        f"output folder '{run_dir}' already holds this run ({state}); pass "
        f"--resume to continue it or --force to start over"
    )


def environment(world: distributed.World) -> dict[str, Any]:
    device = world.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "vqbench": vqbench.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": name or platform.machine(),
        "world_size": world.size,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def prepare_run_dir(
    config: RunConfig, run_dir: Path, world: distributed.World, *, resume: bool, force: bool
) -> bool:
    """Rank 0 checks and writes the run directory; every process learns the outcome."""
    outcome: tuple[str, Any] = ("ok", False)
    if world.is_main:
        try:
            resuming = check_run_dir(config, run_dir, resume=resume, force=force)
            if force and run_dir.exists() and not resuming:
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config.resolved(), sort_keys=False))
            (run_dir / "fingerprint").write_text(config.fingerprint() + "\n")
            (run_dir / "env.json").write_text(json.dumps(environment(world), indent=2))
            if not resuming:
                write_status(run_dir, state="running", step=0)
            outcome = ("ok", resuming)
        except VQBenchError as err:
            outcome = ("error", str(err))
    outcome = distributed.broadcast_object(outcome)
    if outcome[0] == "error":
        raise VQBenchError(outcome[1])
    return outcome[1]


def truncate_log(run_dir: Path, step: int) -> None:
    """On resume, drop the log records written after the checkpoint (they will be redone)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


# ---- the parts ---------------------------------------------------------------------------
def build_model(config: RunConfig) -> Autoencoder:
    for module in config.plugins:
        load_plugin(module)
    quantizer = create_quantizer(config.quantizer.name, **config.quantizer.params)
    return build_autoencoder(
        config.model.preset, quantizer, config.data.resolution, **config.model.overrides
    )


def load_perceptual(config: RunConfig, device: torch.device) -> nn.Module | None:
    """LPIPS for the loss, or a one-line error saying how to provide its weights."""
    c = config.loss
    if c.perceptual_weight == 0:
        return None
    try:
        return load_lpips(c.perceptual_net, c.perceptual_weights).to(device)
    except WeightsUnavailable as err:
        raise VQBenchError(
            f"loss.perceptual_weight={c.perceptual_weight} needs LPIPS: "
            f"{err}; or set loss.perceptual_weight: 0"
        ) from None


def build_loss(
    config: RunConfig, perceptual: nn.Module | None, device: torch.device
) -> AutoencoderLoss:
    c = config.loss
    discriminator = PatchDiscriminator().to(device) if c.gan_weight > 0 else None
    return AutoencoderLoss(
        perceptual=perceptual,
        discriminator=discriminator,
        perceptual_weight=c.perceptual_weight,
        gan_weight=c.gan_weight,
        adaptive_gan_weight=c.adaptive_gan_weight,
        disc_start=c.disc_start,
        quantizer_weight=c.quantizer_weight,
    )


class ModelEMA:
    """Exponential moving average of the weights (decay 0.999); buffers are copied as they are
    (SimVQ's LitEma). Evaluation uses these weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, live in zip(self.model.parameters(), model.parameters()):
            ema.lerp_(live.detach(), 1 - self.decay)
        for ema, live in zip(self.model.buffers(), model.buffers()):
            ema.copy_(live)


@dataclass
class Precision:
    dtype: torch.dtype | None  # None: float32, no autocast
    scaled: bool

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


def pick_precision(choice: str, device: torch.device) -> Precision:
    if choice == "auto":
        choice = "bf16" if device.type == "cuda" else "fp32"
    return {
        "fp32": Precision(None, False),
        "bf16": Precision(torch.bfloat16, False),
        "fp16": Precision(torch.float16, True),
    }[choice]


def batch_plan(config: RunConfig, world: distributed.World) -> tuple[int, int]:
    """(micro-batch per process, accumulation steps) that make up the global batch."""
    batch = config.train.batch_size
    micro = config.train.micro_batch_size or max(1, batch // world.size)
    if batch % (micro * world.size):
        raise VQBenchError(
            f"train.batch_size={batch} is not a multiple of micro_batch_size "
            f"{micro} x {world.size} processes; adjust train.micro_batch_size"
        )
    return micro, batch // (micro * world.size)


def initialise_quantizer(model: Autoencoder, dataset, micro: int) -> dict | None:
    """The quantizer's `init_from_data` hook (VQGAN-LC's k-means), on the first images in order."""
    hook = getattr(model.quantizer, "init_from_data", None)
    if hook is None:
        return None
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(micro, 64), shuffle=False)
    return hook(images for images in loader)


def capture_rng() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _mean_over_ranks(values: dict[str, float], world: distributed.World) -> dict[str, float]:
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=world.device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist())}


# ---- the loop ----------------------------------------------------------------------------
def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    show_progress: bool = True,
) -> Path:
    """Train one run into `run_dir`, evaluate it, and return `run_dir`."""
    run_dir = Path(run_dir)
    world = distributed.setup(device)
    # Everything that can be wrong with the input is checked before the run dir is touched.
    c, dev = config.train, world.device
    micro, accumulation = batch_plan(config, world)
    dataset = build_split(config.data, train=True, seed=config.seed)
    steps_per_epoch = len(dataset) // c.batch_size
    if steps_per_epoch == 0:
        raise VQBenchError(
            f"train.batch_size={c.batch_size} exceeds the {len(dataset)} "
            f"training images; lower it or add data"
        )
    total_steps = c.steps if c.steps is not None else c.epochs * steps_per_epoch
    if config.data.kind == "imagefolder":  # the validation folder too, before writing
        build_split(config.data, train=False)
    perceptual = load_perceptual(config, dev)
    resuming = prepare_run_dir(config, run_dir, world, resume=resume, force=force)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)

    model = build_model(config).to(dev)
    loss_fn = build_loss(config, perceptual, dev)
    precision = pick_precision(c.precision, dev)
    if c.channels_last:
        model = model.to(memory_format=torch.channels_last)
    generator_params = [p for p in model.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(generator_params, lr=config.optim.lr, betas=config.optim.betas)
    disc = loss_fn.discriminator
    opt_d = (
        torch.optim.Adam(
            disc.parameters(), lr=config.optim.disc_lr or config.optim.lr, betas=config.optim.betas
        )
        if disc is not None
        else None
    )
    scaler_g = torch.amp.GradScaler(dev.type, enabled=precision.scaled)
    scaler_d = torch.amp.GradScaler(dev.type, enabled=precision.scaled)
    log = _Logger(run_dir, world)
    log.info(
        f"parameters: {model.parameter_counts()}; global batch {c.batch_size} = "
        f"{micro} x {accumulation} accumulation x {world.size} processes; "
        f"{total_steps} steps on {dev}"
    )

    step = 0
    if resuming and (ckpt := latest_checkpoint(run_dir / "checkpoints")) is not None:
        weights, state = load_checkpoint(ckpt)
        model.load_state_dict(weights["model"])
        ema = ModelEMA(model, c.ema_decay)
        ema.model.load_state_dict(weights["ema"])
        if disc is not None:
            disc.load_state_dict(weights["discriminator"])
            opt_d.load_state_dict(state["opt_d"])
        opt_g.load_state_dict(state["opt_g"])
        scaler_g.load_state_dict(state["scaler_g"])
        scaler_d.load_state_dict(state["scaler_d"])
        restore_rng(state["rng"][world.rank] if world.rank < len(state["rng"]) else state["rng"][0])
        step = int(state["step"])
        if world.is_main:
            truncate_log(run_dir, step)
        log.info(f"resumed from {ckpt.name} at step {step}")
    else:
        info = initialise_quantizer(model, dataset, micro)
        if info:
            log.info(f"quantizer initialised from data: {info}")
        ema = ModelEMA(model, c.ema_decay)

    trained = model
    if world.distributed:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False
        )
        if disc is not None:
            disc = nn.parallel.DistributedDataParallel(
                disc, device_ids=[dev.index] if dev.type == "cuda" else None
            )
    if c.compile:
        trained = torch.compile(trained)

    def save(at_step: int) -> Path | None:
        path, rngs = None, _gather_rng(world)
        if world.is_main:
            weights = {"model": model.state_dict(), "ema": ema.model.state_dict()}
            if disc is not None:
                weights["discriminator"] = _unwrap(disc).state_dict()
            state = {
                "step": at_step,
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict() if opt_d else {},
                "scaler_g": scaler_g.state_dict(),
                "scaler_d": scaler_d.state_dict(),
                "rng": rngs,
                "fingerprint": config.fingerprint(),
            }
            path = save_checkpoint(
                run_dir / "checkpoints", at_step, weights, state, keep=c.keep_checkpoints
            )
            write_status(run_dir, state="running", step=at_step)
        distributed.barrier()
        return path

    usage = CodebookUsage(model.quantizer.codebook_size).to(dev)
    window: dict[str, float] = {}
    window_steps, window_start = 0, time.perf_counter()
    progress = tqdm(
        total=total_steps,
        initial=step,
        disable=not (world.is_main and show_progress),
        desc=config.name,
        unit="step",
        dynamic_ncols=True,
    )
    try:
        while step < total_steps:
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            sampler = EpochBatches(
                len(dataset),
                micro=micro,
                accumulation=accumulation,
                world=world.size,
                rank=world.rank,
                seed=config.seed,
                epoch=epoch,
                start_step=step_in_epoch,
            )
            batches = iter(train_loader(dataset, sampler, workers=config.data.workers, device=dev))
            for _ in range(step_in_epoch, min(steps_per_epoch, step_in_epoch + total_steps - step)):
                # -- generator (autoencoder + quantizer) step, with gradient accumulation
                micro_batches, terms_sum = [], {}
                for a in range(accumulation):
                    x = next(batches).to(dev, non_blocking=True)
                    if c.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    sync = a == accumulation - 1 or not world.distributed
                    with contextlib.nullcontext() if sync else trained.no_sync():
                        with precision.autocast(dev):
                            x_rec, q_out = trained(x)
                            loss_g, terms = loss_fn.generator_loss(
                                x, x_rec, q_out.loss, step, last_layer=model.last_layer()
                            )
                        if torch.isfinite(loss_g):
                            scaler_g.scale(loss_g / accumulation).backward()
                    usage.update(q_out.indices.detach())
                    micro_batches.append((x, x_rec.detach()))
                    for k, v in {**terms, **q_out.stats}.items():
                        terms_sum[k] = terms_sum.get(k, 0.0) + float(v) / accumulation
                finite = torch.tensor(
                    float(all(math.isfinite(v) for v in terms_sum.values())), device=dev
                )
                if world.distributed:
                    torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
                if finite.item() < 1:
                    last = latest_checkpoint(run_dir / "checkpoints")
                    if world.is_main:
                        write_status(run_dir, state="diverged", step=step)
                    detail = ", ".join(f"{k}={v:.4g}" for k, v in sorted(terms_sum.items()))
                    raise TrainingDiverged(
                        f"non-finite loss at step {step} ({detail}); last good checkpoint: "
                        f"{last.name if last else 'none'}; lower optim.lr or use train.precision "
                        f"fp32"
                    )
                scaler_g.step(opt_g)
                scaler_g.update()
                opt_g.zero_grad(set_to_none=True)
                # -- discriminator step on the same reconstructions
                if loss_fn.gan_active(step):
                    opt_d.zero_grad(set_to_none=True)
                    for x, x_rec in micro_batches:
                        with precision.autocast(dev):
                            loss_d, d_terms = loss_fn.discriminator_loss(
                                x, x_rec, step, discriminator=disc
                            )
                        scaler_d.scale(loss_d / accumulation).backward()
                        terms_sum["disc"] = (
                            terms_sum.get("disc", 0.0) + d_terms["disc"].item() / accumulation
                        )
                    scaler_d.step(opt_d)
                    scaler_d.update()
                ema.update(model)
                step += 1
                # -- logging and checkpoints
                for k, v in terms_sum.items():
                    window[k] = window.get(k, 0.0) + v
                window_steps += 1
                if step % c.log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    means = _mean_over_ranks(
                        {k: v / window_steps for k, v in window.items()}, world
                    )
                    record = {
                        "step": step,
                        "epoch": epoch,
                        **means,
                        "lr": config.optim.lr,
                        "images_per_s": window_steps * c.batch_size / max(elapsed, 1e-9),
                    }
                    log.jsonl(record)
                    progress.set_postfix(
                        loss=f"{means.get('total', 0):.4f}", img_s=f"{record['images_per_s']:.0f}"
                    )
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if step % c.checkpoint_every == 0 and step < total_steps:
                    save(step)
                progress.update(1)
            if step % steps_per_epoch == 0 or step == total_steps:
                epoch_usage = usage.compute()
                record = {
                    "epoch": epoch,
                    "step": step,
                    "train_usage": epoch_usage["usage"],
                    "train_perplexity": epoch_usage["perplexity"],
                }
                if c.val_every_epoch:
                    from vqbench.evaluate import evaluate_split

                    record["val"] = evaluate_split(
                        ema.model if config.eval.use_ema else model, config, world
                    )
                log.jsonl(record)
                usage.reset()
    finally:
        progress.close()
    save(step)
    if world.is_main:
        write_status(run_dir, state="trained", step=step)
    return run_dir


def _gather_rng(world: distributed.World) -> list[dict[str, Any]]:
    """Every process's RNG state (rank order), so that a resumed run continues each stream."""
    state = capture_rng()
    if not world.distributed:
        return [state]
    gathered: list[Any] = [None] * world.size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


class _Logger:
    """Rank-0 logging: `metrics.jsonl` (one complete JSON line per record) and messages."""

    def __init__(self, run_dir: Path, world: distributed.World) -> None:
        self.path, self.main = run_dir / "metrics.jsonl", world.is_main

    def jsonl(self, record: dict[str, Any]) -> None:
        if self.main:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def info(self, message: str) -> None:
        if self.main:
            tqdm.write(f"vqbench: {message}")
