"""Training: one run = one autoencoder + one quantizer + one dataset + one optimiser setting.

Readable top-down: `train` finds everything that can be wrong before a byte is written (the
output folder, the config and data in `plan_run`, the model, the checkpoint to resume or the
quantizer's initialisation from data in `Trainer.start`), then prepares the run directory and
hands the loop to the `Trainer`. The trainer is built once (`Trainer.build`) and owns
everything a step touches: the model and its EMA, the losses, the optimisers with their
learning-rate schedules, the loss scalers and the world. `Trainer.train_step(batches)` is the
one training step, run by the loop, the tests and the benchmarks alike: generator step,
discriminator step, model EMA, learning-rate schedules. Distributed training and mixed
precision are set up once (`vqbench.distributed`); the quantizer computes its distances and
losses in float32 whatever the autocast. Loss terms stay on the device between log steps, so a
step waits on the host only when it logs, saves or ends an epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from vqbench import distributed
from vqbench.build import (
    ModelEMA,
    build_loss,
    build_model,
    build_optimizers,
    build_schedules,
    load_perceptual,
)
from vqbench.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_error_detail,
    newest_good_checkpoint,
    seed_everything,
)
from vqbench.config import RunConfig
from vqbench.data import (
    EpochBatches,
    build_split,
    check_held_out,
    data_digest,
    init_batches,
    train_loader,
)
from vqbench.errors import VQBenchError
from vqbench.evaluate import evaluate_split
from vqbench.losses import AutoencoderLoss
from vqbench.metrics import CodebookUsage
from vqbench.models import Autoencoder
from vqbench.protocols import check_protocol_images
from vqbench.rundir import RunDir
from vqbench.timing import QuantizerTimer


class TrainingDiverged(RuntimeError):
    """A non-finite loss: the run stops, keeping its last good checkpoint."""


@dataclass(frozen=True)
class TrainOptions:
    """How `train` treats the output folder and where it runs (nothing here changes weights)."""

    resume: bool = False
    force: bool = False
    device: str | None = None
    show_progress: bool = True


@dataclass(frozen=True)
class Plan:
    """The batch layout and budget of a run, decided before anything is written."""

    dataset: Dataset
    micro: int  # images per process and forward pass
    accumulation: int  # forward passes per optimiser step
    steps_per_epoch: int
    total_steps: int


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


def plan_run(config: RunConfig, world: distributed.World) -> Plan:
    c = config.train
    micro, accumulation = batch_plan(config, world)
    dataset = build_split(config.data, train=True, seed=config.seed)
    steps_per_epoch = len(dataset) // c.batch_size
    if steps_per_epoch == 0:
        raise VQBenchError(
            f"train.batch_size={c.batch_size} exceeds the {len(dataset)} "
            f"training images; lower it or add data"
        )
    if config.data.kind in ("imagefolder", "webdataset"):  # the validation split too
        check_held_out(dataset, build_split(config.data, train=False))
    check_protocol_images(config.data, config.eval.protocol)
    total = c.steps if c.steps is not None else c.epochs * steps_per_epoch
    return Plan(dataset, micro, accumulation, steps_per_epoch, total)


# ---- logging ---------------------------------------------------------------------------------
class StepMeter:
    """Loss terms of the steps since the last log, summed on the device.

    Also remembers, on the device, the first step whose terms were not finite and those
    terms, so that divergence is detected at the next host synchronisation (a log step, a
    checkpoint, an epoch end) and reported with the step it happened at.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.start = 0, time.perf_counter()
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_terms: dict[str, torch.Tensor] = {}

    def add_step(self, step: int, terms: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.float() for v in terms.values()])
        newly_bad = ~torch.isfinite(values).all() & (self.bad_step < 0)
        self.bad_step = torch.where(newly_bad, step, self.bad_step)
        for key, v in zip(terms, values):
            self.bad_terms[key] = torch.where(newly_bad, v, self.bad_terms.get(key, v))
            self.sums[key] = self.sums.get(key, 0.0) + v
        self.steps += 1

    def check_finite(self) -> None:
        """Raise `TrainingDiverged` if any process saw a non-finite loss (one host sync)."""
        if distributed.all_finite(self.bad_step < 0):
            return
        step = int(self.bad_step)
        detail = ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(self.bad_terms.items()))
        raise TrainingDiverged(f"non-finite loss at step {step} ({detail})")

    def state_dict(self) -> dict[str, Any]:
        """The open window (sums since the last log), kept in checkpoints."""
        return {
            "sums": {k: v.detach().cpu() for k, v in self.sums.items()},
            "steps": self.steps,
            "elapsed": time.perf_counter() - self.start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.steps = int(state["steps"])
        self.start = time.perf_counter() - float(state["elapsed"])

    def means(self) -> dict[str, float]:
        """Mean of each term over the window and over processes; starts a new window."""
        local = {k: float(v) / self.steps for k, v in self.sums.items()}
        means = distributed.mean_over_ranks(local, self.device)
        self.sums, self.steps, self.start = {}, 0, time.perf_counter()
        return means


class RunLog:
    """Rank-0 records: `metrics.jsonl` always, TensorBoard when `train.tensorboard` is on."""

    def __init__(self, run: RunDir, world: distributed.World, tensorboard: bool) -> None:
        self.run, self.main, self.writer = run, world.is_main, None
        self.tensorboard = tensorboard and self.main  # opened at the first record

    def record(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        self.run.log(record)
        if self.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run.tensorboard))
        if self.writer is not None:
            prefix = "epoch" if "train_usage" in record else "train"
            for key, value in _scalars(record):
                self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
            self.writer.flush()

    def info(self, message: str) -> None:
        if self.main:
            tqdm.write(f"vqbench: {message}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _scalars(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and key not in ("step", "epoch"):
            yield prefix + key, value


# ---- batches -----------------------------------------------------------------------------------
def micro_batches(
    loader_iter: Iterator[torch.Tensor], plan: Plan, config: RunConfig, dev: torch.device
) -> list[torch.Tensor]:
    """The `plan.accumulation` micro-batches of one global batch, on the device."""
    batches = []
    for _ in range(plan.accumulation):
        x = next(loader_iter).to(dev, non_blocking=True)
        if config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batches.append(x)
    return batches


def epoch_loader(
    plan: Plan, config: RunConfig, world: distributed.World, step: int
) -> Iterator[torch.Tensor]:
    """This process's micro-batches from global step `step` to the end of its epoch."""
    epoch, first = divmod(step, plan.steps_per_epoch)
    sampler = EpochBatches(
        len(plan.dataset),
        micro=plan.micro,
        accumulation=plan.accumulation,
        world=world.size,
        rank=world.rank,
        seed=config.seed,
        epoch=epoch,
        start_step=first,
    )
    return iter(
        train_loader(plan.dataset, sampler, workers=config.data.workers, device=world.device)
    )


# ---- the trainer -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parts:
    """Parts a caller brings instead of building them from the config (benchmarks, tests)."""

    model: Autoencoder | None = None
    perceptual: nn.Module | None = None


@dataclass
class StepOutput:
    """What one training step leaves: (images, reconstructions) pairs and mean loss terms."""

    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    terms: dict[str, torch.Tensor]


class Trainer:
    """Owns one run's training: state (model, EMA, optimisers, schedules, scalers), losses,
    precision, world, and the per-epoch usage and loss window the log reports."""

    def __init__(
        self,
        config: RunConfig,
        world: distributed.World,
        state: TrainState,
        loss_fn: AutoencoderLoss,
    ) -> None:
        self.config, self.world, self.state, self.loss_fn = config, world, state, loss_fn
        dev = world.device
        self.precision = distributed.pick_precision(config.train.precision, dev)
        self.trained: nn.Module = state.model  # DDP-wrapped / compiled by `distribute`
        self.disc: nn.Module | None = state.discriminator
        q = state.model.quantizer  # per-epoch usage (per index for a composite)
        self.usage = CodebookUsage(q.codebook_size, index_sizes=q.index_sizes(), product=False)
        self.usage = self.usage.to(dev)
        self.meter = StepMeter(dev)
        self.timer: QuantizerTimer | None = None

    @classmethod
    def build(
        cls, config: RunConfig, world: distributed.World, total_steps: int, parts: Parts = Parts()
    ) -> Trainer:
        """Model, EMA, loss, optimisers with their schedules and loss scalers, seeded."""
        dev = world.device
        perceptual = parts.perceptual
        if perceptual is None:  # loaded before seeding: building LPIPS draws random numbers
            perceptual = load_perceptual(config, dev)
        seed_everything(config.seed)
        model = (parts.model if parts.model is not None else build_model(config)).to(dev)
        loss_fn = build_loss(config, perceptual, dev)
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt_g, opt_d = build_optimizers(config, model, loss_fn.discriminator)
        scaled = distributed.pick_precision(config.train.precision, dev).scaled
        scaler_g = torch.amp.GradScaler(dev.type, enabled=scaled)
        # With the leak, gradients of both losses meet in D: one loss scale (Lightning's one
        # scaler).
        leak = config.loss.disc_receives_generator_grad
        scaler_d = scaler_g if leak else torch.amp.GradScaler(dev.type, enabled=scaled)
        state = TrainState(
            model=model,
            ema=ModelEMA(model, config.train.ema_decay),
            discriminator=loss_fn.discriminator,
            opt_g=opt_g,
            opt_d=opt_d,
            scaler_g=scaler_g,
            scaler_d=scaler_d,
            schedules=build_schedules(config.optim.schedule, (opt_g, opt_d), total_steps),
        )
        return cls(config, world, state, loss_fn)

    # ---- the starting point ------------------------------------------------------------------
    def start(self, plan: Plan, run: RunDir, resuming: bool, log: RunLog) -> None:
        """Resume from the newest good checkpoint, or initialise the quantizer from data.

        Writes nothing, so that whatever fails here (a checkpoint of another model, too few
        images for a data-initialised codebook) fails before the first byte is written.
        """
        found = None
        if resuming:
            fingerprint = self.config.fingerprint()
            found = newest_good_checkpoint(run.checkpoints, fingerprint, warn=log.info)
        if found is not None:
            self._resume(found, run, log)
            return
        if resuming:
            log.info("no usable checkpoint: starting again from step 0")
        quantizer = self.state.model.quantizer
        if quantizer.initialises_from_data:  # a seeded, class-balanced random sample
            seed = self.config.seed
            batch = max(plan.micro, 64)
            batches = init_batches(plan.dataset, seed, batch, self.config.data.workers)
            info = quantizer.init_from_data(batches)
            log.info(f"quantizer initialised from data: {info}")
            self.state.ema.reset(self.state.model)  # the EMA starts from the initialised model

    def _resume(self, found: tuple[Path, dict, dict], run: RunDir, log: RunLog) -> None:
        path, weights, saved = found
        try:
            self.state.resume(weights, saved, self.world)
        except Exception as err:  # shapes or optimiser groups of another model
            raise VQBenchError(
                f"checkpoint '{path}' does not fit this run's model ({load_error_detail(err)}); "
                f"it was written by other code or settings: use another --out, or --force to "
                f"start over"
            ) from None
        if self.state.progress:  # a resumed run continues the epoch's counts and loss window
            self.usage.load_state_dict(self.state.progress["usage"])
            self.meter.load_state_dict(self.state.progress["meter"])
        if path != latest_checkpoint(run.checkpoints):
            log.info(f"the newest checkpoint could not be used; resuming from {path.name}")
        log.info(f"resumed from {path.name} at step {self.state.step}")

    def distribute(self) -> None:
        """DDP-wrap (and compile) what is trained; after `start`, so that every process
        begins from the same resumed or initialised weights."""
        state, c = self.state, self.config.train
        self.trained = distributed.wrap(state.model, self.world, broadcast_buffers=False)
        if state.discriminator is not None:
            self.disc = distributed.wrap(state.discriminator, self.world)
        if c.compile:
            self.trained = torch.compile(self.trained)
        if c.time_quantizer:
            self.timer = QuantizerTimer(state.model.quantizer, self.world.device)

    # ---- one step ------------------------------------------------------------------------------
    def train_step(self, batches: list[torch.Tensor]) -> StepOutput:
        """One optimiser step on the micro-batches of one global batch: generator, then the
        discriminator when the GAN term is on, the model EMA and the learning-rate schedules."""
        state = self.state
        out = self.generator_step(batches)
        if self.loss_fn.gan_active(state.step):
            out.terms["disc"] = self.discriminator_step(out.pairs)
        state.ema.update(state.model)
        if state.model.quantizer.codebook_replaced():
            state.ema.reset_quantizer(state.model)
        for schedule in state.schedules:
            schedule.step()
        self.meter.add_step(state.step, out.terms)
        state.step += 1
        return out

    def generator_step(self, batches: list[torch.Tensor]) -> StepOutput:
        """Forward, loss and backward over the micro-batches of one global batch, then the
        optimiser step."""
        state, dev = self.state, self.world.device
        model, accumulation = state.model, len(batches)
        pairs, terms_sum = [], {}
        for a, x in enumerate(batches):
            with distributed.no_sync(self.trained, sync=a == accumulation - 1):
                with self.precision.autocast(dev):
                    x_rec, q_out = self.trained(x)
                    loss, terms = self.loss_fn.generator_loss(
                        x, x_rec, q_out.loss, state.step, last_layer=model.last_layer()
                    )
                state.scaler_g.scale(loss / accumulation).backward()
            self.usage.update(x, x_rec, q_out.indices.detach())
            pairs.append((x, x_rec.detach()))
            for k, v in {**terms, **q_out.stats}.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v.detach().float() / accumulation
        state.scaler_g.step(state.opt_g)
        state.scaler_g.update()
        state.opt_g.zero_grad(set_to_none=True)
        model.quantizer.after_optimizer_step()  # e.g. EMA statistics of the whole global batch
        return StepOutput(pairs, terms_sum)

    def discriminator_step(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Hinge loss on the same reconstructions, then the discriminator's optimiser step.

        Gradients are zeroed after the step, so that with `leak_generator_grad` the generator
        loss's gradient (accumulated in D during the generator step) joins this step's, as in
        SimVQ's trainer; without it, D has no gradient from the generator step to begin with.
        """
        state, total = self.state, 0.0
        for x, x_rec in pairs:
            with self.precision.autocast(self.world.device):
                loss, terms = self.loss_fn.discriminator_loss(
                    x, x_rec, state.step, discriminator=self.disc
                )
            state.scaler_d.scale(loss / len(pairs)).backward()
            total = total + terms["disc"].float() / len(pairs)
        state.scaler_d.step(state.opt_d)
        state.scaler_d.update()
        state.opt_d.zero_grad(set_to_none=True)
        return total

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self, plan: Plan, run: RunDir, log: RunLog, show_progress: bool = True) -> None:
        """Train to `plan.total_steps`, logging, validating and checkpointing on the way."""
        c, dev, state = self.config.train, self.world.device, self.state
        log.info(
            f"parameters: {state.model.parameter_counts()}; global batch {c.batch_size} = "
            f"{plan.micro} x {plan.accumulation} accumulation x {self.world.size} processes; "
            f"{plan.total_steps} steps on {dev}"
        )
        self.distribute()
        first_step = state.step
        progress = progress_bar(self.config, plan, state.step, self.world.is_main and show_progress)
        try:
            while state.step < plan.total_steps:
                self._epoch(plan, run, log, progress)
        except TrainingDiverged as err:
            self._diverged(err, run)
        finally:
            progress.close()
        if state.step > first_step or latest_checkpoint(run.checkpoints) is None:
            self.save(run)  # (a finished run resumed again keeps its final checkpoint as it is)
        if self.world.is_main:
            run.set_status("trained", state.step)

    def _epoch(self, plan: Plan, run: RunDir, log: RunLog, progress: tqdm) -> None:
        """The steps from the current one to the end of its epoch (or of the budget)."""
        c, state = self.config.train, self.state
        epoch, first = divmod(state.step, plan.steps_per_epoch)
        loader = epoch_loader(plan, self.config, self.world, state.step)
        last = min(plan.steps_per_epoch, first + plan.total_steps - state.step)
        for _ in range(first, last):
            self.train_step(micro_batches(loader, plan, self.config, self.world.device))
            if state.step % c.log_every == 0 or state.step == plan.total_steps:
                self.meter.check_finite()
                self._log_step(epoch, log, progress)
            if state.step % plan.steps_per_epoch == 0 or state.step == plan.total_steps:
                self.meter.check_finite()
                self._end_epoch(epoch, log)
            # After the epoch's record, so that a checkpoint never precedes a record of its
            # own step: a resumed run neither loses nor repeats a record.
            if state.step % c.checkpoint_every == 0 and state.step < plan.total_steps:
                self.save(run)
            progress.update(1)

    def save(self, run: RunDir) -> None:
        """A checkpoint of the state and the open log windows (never of a diverged state)."""
        self.meter.check_finite()
        state = self.state
        state.progress = {"usage": self.usage.state_dict(), "meter": self.meter.state_dict()}
        c = self.config.train
        state.save(run.checkpoints, self.world, self.config.fingerprint(), c.keep_checkpoints)
        if self.world.is_main:
            run.set_status("running", state.step)

    def _diverged(self, err: TrainingDiverged, run: RunDir) -> None:
        last = latest_checkpoint(run.checkpoints)
        if self.world.is_main:
            run.set_status("diverged", int(self.meter.bad_step))
        raise TrainingDiverged(
            f"{err}; last good checkpoint: {last.name if last else 'none'}; lower optim.lr or "
            f"use train.precision fp32"
        ) from None

    def _log_step(self, epoch: int, log: RunLog, progress: tqdm) -> None:
        """The loss window's means, the learning rate and the throughput (and, with
        `train.time_quantizer`, the quantizer's share of the step)."""
        meter = self.meter
        elapsed, steps = time.perf_counter() - meter.start, meter.steps
        means = meter.means()
        record = {
            "step": self.state.step,
            "epoch": epoch,
            **means,
            "lr": self.state.opt_g.param_groups[0]["lr"],
            "images_per_s": steps * self.config.train.batch_size / max(elapsed, 1e-9),
        }
        if self.timer is not None:
            step_ms, quantizer_ms = 1000 * elapsed / steps, self.timer.take() / steps
            record.update(step_ms=step_ms, quantizer_ms=quantizer_ms)
            record["quantizer_share"] = quantizer_ms / step_ms
        log.record(record)
        img_s = f"{record['images_per_s']:.0f}"
        progress.set_postfix(loss=f"{means.get('total', 0):.4f}", img_s=img_s)
        if getattr(progress, "lines", False):  # no terminal: a line per log step
            total = f"{means.get('total', 0):.4f}"
            print(
                f"vqbench: {self.config.name} step {self.state.step}/{progress.total}: "
                f"loss {total}, {img_s} images/s",
                file=sys.stderr,
                flush=True,
            )

    def _end_epoch(self, epoch: int, log: RunLog) -> None:
        """The epoch's codebook usage over training tokens, and optionally validation metrics."""
        counts = self.usage.compute()
        record = {
            "epoch": epoch,
            "step": self.state.step,
            "train_usage": counts["usage"],
            "train_perplexity": counts["perplexity"],
        }
        if self.config.train.val_every_epoch:
            state = self.state
            model = state.ema.model if self.config.eval.use_ema else state.model
            record["val"] = evaluate_split(model, self.config, self.world)
        log.record(record)
        self.usage.reset()


# ---- a run -------------------------------------------------------------------------------------
def train(config: RunConfig, run_dir: str | Path, options: TrainOptions = TrainOptions()) -> Path:
    """Train one run into `run_dir` and return `run_dir` (evaluation is separate).

    Everything that can be wrong is found before the first byte is written: the output folder
    (`RunDir.decide`), the config and the data (`plan_run`), the model and its optimisers, and
    the starting point (the checkpoint to resume, or the quantizer's initialisation from data).
    """
    world = distributed.setup(options.device)
    run = RunDir(run_dir)
    resuming = run.decide(config, world, resume=options.resume, force=options.force)
    plan = plan_run(config, world)
    data = data_digest(plan.dataset)
    if resuming:
        run.check_same_data(data)
    trainer = Trainer.build(config, world, plan.total_steps)
    log = RunLog(run, world, config.train.tensorboard)
    trainer.start(plan, run, resuming, log)
    step = trainer.state.step
    run.prepare(config, world, resume=resuming, force=options.force, step=step, data=data)
    try:
        trainer.fit(plan, run, log, options.show_progress)
    finally:
        log.close()
        run.release_lock()
    return run.path


def progress_bar(config: RunConfig, plan: Plan, step: int, show: bool) -> tqdm:
    """A progress bar on a terminal. Redirected to a file or a pipe there is none (its
    carriage-return updates would pile up): `Trainer._log_step` prints a line per log step."""
    terminal = sys.stderr.isatty()
    bar = tqdm(
        total=plan.total_steps,
        initial=step,
        disable=not (show and terminal),
        desc=config.name,
        unit="step",
        dynamic_ncols=True,
    )
    bar.lines = show and not terminal
    return bar
