"""Factories: a run config in, the parts of a run out (model, loss, optimisers with their
learning-rate schedules, model EMA), and a trained model back from a run directory
(`load_trained`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from vqbench.checkpoint import (
    is_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_error_detail,
)
from vqbench.config import RunConfig, ScheduleConfig, parse_run_config, read_yaml
from vqbench.errors import VQBenchError
from vqbench.losses import AutoencoderLoss, PatchDiscriminator
from vqbench.models import Autoencoder, build_autoencoder
from vqbench.pretrained import WeightsUnavailable, load_lpips
from vqbench.quantizer import create_quantizer
from vqbench.registry import load_plugin
from vqbench.rundir import RunDir, load_recorded_plugins


def build_model(config: RunConfig) -> Autoencoder:
    for module in config.plugins:
        load_plugin(module)
    quantizer = create_quantizer(config.quantizer.name, **config.quantizer.params)
    return build_autoencoder(
        config.model.preset, quantizer, config.data.resolution, **config.model.overrides
    )


def trainable_parameters(config: RunConfig) -> int:
    """How many parameters training updates, counted on a model built on the meta device:
    no memory, no initialisation, no pretrained weights (`vqbench run --dry-run` downloads
    nothing). A quantizer whose construction needs real tensors is built on the CPU instead."""
    try:
        with torch.device("meta"):
            model = build_model(config)
    except VQBenchError:
        raise
    except Exception:  # e.g. a construction that reads values (`.item()`) from a tensor
        model = build_model(config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
        leak_generator_grad=c.disc_receives_generator_grad,
    )


def build_optimizers(
    config: RunConfig, model: nn.Module, discriminator: nn.Module | None
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """Adam for the autoencoder (quantizer included) and for the discriminator.

    On CUDA the fused Adam kernel: one launch per step, and it takes the fp16 loss scaler's
    inf check on the device (`GradScaler.step` then never waits on the host)."""
    o = config.optim
    generator_params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(generator_params) and generator_params[0].device.type == "cuda"
    opt_g = torch.optim.Adam(generator_params, lr=o.lr, betas=o.betas, fused=fused or None)
    opt_d = None
    if discriminator is not None:
        opt_d = torch.optim.Adam(
            discriminator.parameters(), lr=o.disc_lr or o.lr, betas=o.betas, fused=fused or None
        )
    return opt_g, opt_d


def schedule_factor(schedule: ScheduleConfig, total_steps: int) -> Callable[[int], float]:
    """The learning rate's factor at each step (0-based), applied to every base rate.

    `constant`: 1. `linear_warmup`: (step + 1) / warmup_steps up to 1, then 1. `cosine`: the
    same warmup, then min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2 with t going from 0
    at the end of the warmup to 1 at the last step (SGDR's annealing, Loshchilov & Hutter
    2017, eq. 5, without restarts). `hold_linear`: FVQ's annealing (`hold_linear_factor`)."""
    warmup, floor = schedule.warmup_steps, schedule.min_lr_ratio
    span = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if schedule.kind == "constant":
            return 1.0
        if schedule.kind == "hold_linear":
            return hold_linear_factor(step, warmup, total_steps, floor)
        if step < warmup:
            return (step + 1) / warmup
        if schedule.kind == "linear_warmup":
            return 1.0
        t = min(1.0, (step - warmup) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


#: FVQ's annealing constants (`vq_train_qbridge_lr_release.py`): the warmup starts at
#: `wp0 = 0.005` of the rate, which holds for the first `lrT = 0.3` of the steps after it.
HOLD_LINEAR_START, HOLD_LINEAR_HOLD = 0.005, 0.3


def hold_linear_factor(step: int, warmup: int, total_steps: int, floor: float) -> float:
    """FVQ's `combined_lr_lambda` with `sche_type: lin` (yfChang-cv/FVQ, the VQBridge training
    script): `wp0 + (1 - wp0) step / warmup` during the warmup; then, with `t` the fraction of
    the remaining steps done (1 at the last step), 1 while `t < lrT` and `floor + (1 - floor)
    (1 - t) / (1 - lrT)` after, down to `floor` (its `wpe`, 0.01) at the last step and held
    there (the trainer steps the schedule once more after the last step)."""
    if step < warmup:
        return HOLD_LINEAR_START + (1 - HOLD_LINEAR_START) * step / max(1, warmup)
    t = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))  # held after the end
    if t < HOLD_LINEAR_HOLD:
        return 1.0
    return floor + (1 - floor) * (1 - t) / (1 - HOLD_LINEAR_HOLD)


def build_schedules(
    schedule: ScheduleConfig,
    optimizers: Sequence[torch.optim.Optimizer | None],
    total_steps: int,
) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """One scheduler per optimiser (the same factor of each one's own rate), stepped once per
    training step by the trainer and kept in checkpoints."""
    factor = schedule_factor(schedule, total_steps)
    return [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers if opt is not None]


class ModelEMA:
    """Exponential moving average of the weights (decay 0.999); buffers are copied as they are
    (SimVQ's LitEma). Evaluation uses these weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.reset(model)

    def reset(self, model: nn.Module) -> None:
        """Start again from a copy of `model` (after the quantizer's initialisation from data)."""
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def reset_quantizer(self, model: nn.Module) -> None:
        """The quantizer's weights from `model` (after it replaced its codebook mid-training)."""
        self.model.quantizer.load_state_dict(model.quantizer.state_dict())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema, live in zip(self.model.parameters(), model.parameters()):
            ema.lerp_(live.detach(), 1 - self.decay)
        for ema, live in zip(self.model.buffers(), model.buffers()):
            ema.copy_(live)


# ---- a trained run back ------------------------------------------------------------------------
def find_run(path: str | Path) -> tuple[RunDir, Path]:
    """(run directory, checkpoint folder) from a run directory or a `step-*` checkpoint."""
    path = Path(path)
    if not path.exists():
        raise VQBenchError(f"'{path}' does not exist; give a run directory or a checkpoint")
    if is_checkpoint(path):
        run = RunDir.owning(path)
        load_recorded_plugins(run.path)
        return run, path
    run = RunDir(path)
    checkpoint = latest_checkpoint(run.checkpoints)
    if not run.config_file.is_file() or checkpoint is None:
        raise VQBenchError(
            f"'{path}' is not a vqbench run directory with a checkpoint "
            f"(config.yaml and checkpoints/latest); train it first"
        )
    load_recorded_plugins(run.path)
    return run, checkpoint


def run_config(run: RunDir) -> RunConfig:
    return parse_run_config(read_yaml(run.config_file), str(run.config_file))


def evaluated_weights(
    checkpoint: Path, config: RunConfig, use_ema: bool | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """The autoencoder's weights in `checkpoint` and which they are (`ema` or `model`):
    `use_ema` defaults to the run's `eval.use_ema`, i.e. the weights its evaluation measured
    (the model EMA where the checkpoint holds one)."""
    weights, _ = load_checkpoint(checkpoint)
    use_ema = config.eval.use_ema if use_ema is None else use_ema
    key = "ema" if use_ema and "ema" in weights else "model"
    return weights[key], key


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """`model.load_state_dict(state)` (strict), a mismatch one line naming `source`."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise VQBenchError(
            f"'{source}' does not match the model its config describes ({load_error_detail(err)})"
        ) from None


def load_trained(
    path: str | Path, *, use_ema: bool | None = None, device: torch.device | str = "cpu"
) -> tuple[RunConfig, Autoencoder, RunDir, Path]:
    """The trained model of a run (its latest checkpoint, or the `step-*` folder given).

    `use_ema` defaults to the run's `eval.use_ema` (the evaluated weights).
    """
    run, checkpoint = find_run(path)
    config = run_config(run)
    state, _ = evaluated_weights(checkpoint, config, use_ema)
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise VQBenchError(
            f"checkpoint '{checkpoint}' does not match the run's config ({load_error_detail(err)})"
        ) from None
    return config, model.to(device), run, checkpoint
