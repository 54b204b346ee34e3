"""The downstream probe: how well a small autoregressive prior models a tokenizer's tokens.

Reconstruction metrics track generation poorly (XQ-GAN; GigaTok ranks tokenizers by "AR
probing" instead). `probe_run` encodes a trained run's training and validation splits with its
evaluated weights (`load_trained`: the model EMA when `eval.use_ema`), trains the same small
causal transformer (`vqbench.prior.TokenPrior`, raster order, a class token where the data has
labels) on the training tokens with the size, steps, optimiser and seeds of a `ProbeConfig`,
and reports per seed of the prior:

* `bits_per_token`: validation negative log-likelihood per token position, in bits (all the
  digits or stages of a position together), and `bits_per_image`, its sum over an image's
  positions, the number comparable across codebook sizes and token counts;
* `gfid`: FID of `samples` decoded samples against the validation images (torch-fidelity's
  Inception, as rFID; `n/a (reason)` without its weights);
* `sample_usage` / `sample_perplexity`: codebook usage of the sampled tokens (beside
  `data_usage`, the usage of the validation tokens themselves).

Results go to `probe.json` in the run directory, written after each seed, so that a killed
probe keeps its finished seeds and a finished one is skipped. Training uses the engine's
machinery: `vqbench.distributed` (DDP, collectives, precision) and `EpochBatches` (the same
global batches on any number of processes).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vqbench import distributed
from vqbench.bounded import check_fits
from vqbench.build import find_run, load_trained, run_config
from vqbench.config import ProbeConfig, RunConfig, parse_probe_config, read_yaml
from vqbench.data import EpochBatches, build_split, class_names, eval_loader, shard_indices
from vqbench.errors import VQBenchError
from vqbench.files import atomic_write, read_json
from vqbench.metrics import FIDStatistics, SampleFID, Unavailable, usage_from_counts
from vqbench.models import Autoencoder, preset_downsampling
from vqbench.pretrained import WeightsUnavailable, describe_missing, weights_file
from vqbench.prior import DigitLayout, TokenPrior
from vqbench.published import ImageTokenizer
from vqbench.published_run import (
    file_sha256,
    is_published_folder,
    load_tokenizer,
    read_published,
    recorded_sha256,
)
from vqbench.rundir import RunDir, SuiteDir

LN2 = math.log(2.0)


def check_probe_sizes(
    probe: ProbeConfig, config: RunConfig, device: Any = None, downsampling: int | None = None
) -> None:
    """The prior's batches fit the memory of `device` before anything is allocated.

    A floor on each: the prior's residual stream (`layers x width` floats per token) for a
    training batch, plus the decoded float32 images for a batch of samples. The sample count
    itself costs time, not memory (samples are drawn in batches, gFID keeps running sums).
    `downsampling` defaults to the run's model preset's (a published tokenizer gives its own)."""
    if downsampling is None:
        downsampling = preset_downsampling(config.model.preset, **config.model.overrides)
    grid = config.data.resolution // downsampling
    per_grid = 4 * grid * grid * probe.layers * probe.width
    image = 4 * 3 * config.data.resolution**2
    fix = "lower it (or the batch size)"
    check_fits(f"probe.batch_size={probe.batch_size}", probe.batch_size * per_grid, fix, device)
    n = min(probe.samples, probe.eval_batch_size)
    what = f"probe.samples={probe.samples} (in batches of probe.eval_batch_size={n})"
    check_fits(what, n * (per_grid + image), fix, device)


def default_probe_config(run: RunDir) -> tuple[ProbeConfig, str]:
    """The probe section of the suite the run belongs to (its `suite.yaml`), else the defaults."""
    suite_file = SuiteDir.holding(run).suite_file
    if suite_file.is_file():
        data = read_yaml(suite_file)
        if isinstance(data.get("probe"), dict):
            return parse_probe_config(data["probe"], str(suite_file)), str(suite_file)
    return ProbeConfig(), "defaults"


# ---- tokens ------------------------------------------------------------------------------------
@dataclass
class TokenSet:
    """Every image of a split as the digits of its token grid, in raster order."""

    digits: torch.Tensor  # (N, L, m) int32, on the CPU
    grid: tuple[int, int]  # (H, W) of the token grid
    labels: list[str] | None  # class of each image (image folders with class subfolders)

    @property
    def positions(self) -> int:
        return self.grid[0] * self.grid[1]


def folder_classes(dataset) -> list[str] | None:
    """Class of each image: its folder under the root (shards: their `cls` field); None when
    the data has no labels."""
    return class_names(dataset)


def tokens_of(model: Autoencoder | ImageTokenizer, x: torch.Tensor) -> torch.Tensor:
    """The token grid of images: a trained run's quantizer indices, a tokenizer's `encode`."""
    if isinstance(model, Autoencoder):
        return model.quantizer(model.encoder(x)).indices
    return model.encode(x)


def index_sizes_of(model: Autoencoder | ImageTokenizer) -> list[int]:
    sizes = model.quantizer.index_sizes() if isinstance(model, Autoencoder) else None
    return list(sizes if sizes is not None else model.index_sizes())


@torch.no_grad()
def encode_split(
    model: Autoencoder | ImageTokenizer,
    config: RunConfig,
    layout: DigitLayout,
    world,
    *,
    train: bool,
) -> TokenSet:
    """Encode a split with `model` (each process a shard, gathered on every process)."""
    torch.manual_seed(config.seed)  # the training split's random crops, reproducibly
    dataset = build_split(config.data, train=train, seed=config.seed)
    loader = eval_loader(
        dataset,
        batch_size=config.eval.batch_size,
        world=world.size,
        rank=world.rank,
        workers=config.data.workers,
        device=world.device,
    )
    model.eval()
    parts, grid = [], None
    for x in loader:
        indices = tokens_of(model, x.to(world.device))
        if indices.ndim == 3:
            indices = indices.unsqueeze(-1)
        grid = tuple(indices.shape[1:3])
        parts.append(layout.to_digits(indices.flatten(1, 2)).to(torch.int32).cpu())
    local = torch.cat(parts) if parts else None
    shards = distributed.gather_objects((local, grid))
    grid = next(g for _, g in shards if g is not None)
    digits = torch.empty(len(dataset), grid[0] * grid[1], len(layout.radices), dtype=torch.int32)
    for rank, (part, _) in enumerate(shards):
        if part is not None:
            digits[shard_indices(len(dataset), world.size, rank)] = part
    return TokenSet(digits, grid, folder_classes(dataset))


def class_indices(train: TokenSet, val: TokenSet, wanted: bool):
    """Class ids of the train and val images and a description, or (None, None, why not)."""
    if not wanted:
        return None, None, "unconditional (probe.class_conditional is off)"
    if train.labels is None or val.labels is None:
        return None, None, "unconditional (the data has no class labels)"
    names = sorted(set(train.labels))
    if len(names) < 2:
        return None, None, "unconditional (one class folder)"
    missing = sorted(set(val.labels) - set(names))
    if missing:
        return None, None, f"unconditional (validation classes not in training: {missing[:3]})"
    ids = {n: i for i, n in enumerate(names)}
    to_ids = [torch.tensor([ids[n] for n in s.labels]) for s in (train, val)]
    return to_ids[0], to_ids[1], f"class-conditional ({len(names)} classes)"


# ---- the prior ---------------------------------------------------------------------------------
def build_prior(layout: DigitLayout, positions: int, classes: int, probe: ProbeConfig):
    return TokenPrior(
        layout,
        positions,
        classes=classes,
        width=probe.width,
        layers=probe.layers,
        heads=probe.heads,
        dropout=probe.dropout,
    )


def optimizer_and_schedule(prior: torch.nn.Module, probe: ProbeConfig):
    """AdamW (weight decay on matrices and embeddings only); warm-up, then cosine to zero."""
    trained = [p for p in prior.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    rest = [p for p in trained if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": probe.weight_decay},
            {"params": rest, "weight_decay": 0},
        ],
        lr=probe.lr,
        betas=probe.betas,
    )

    def factor(step: int) -> float:
        if step < probe.warmup_steps:
            return (step + 1) / probe.warmup_steps
        span = max(1, probe.steps - probe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - probe.warmup_steps) / span)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_prior(
    prior: TokenPrior,
    digits: torch.Tensor,
    labels: torch.Tensor | None,
    probe: ProbeConfig,
    world: distributed.World,
    seed: int,
) -> float:
    """Train `prior` on token grids `(N, L, m)`; returns the training bits per token over the
    last tenth of the steps (mean over processes)."""
    dev, n = world.device, digits.shape[0]
    if probe.batch_size % world.size:
        raise VQBenchError(
            f"probe.batch_size={probe.batch_size} is not a multiple of the {world.size} processes"
        )
    if n < probe.batch_size:
        raise VQBenchError(
            f"probe.batch_size={probe.batch_size} exceeds the {n} training images; lower it"
        )
    prior.train()
    trained = distributed.wrap(prior, world)
    opt, schedule = optimizer_and_schedule(prior, probe)
    precision = distributed.pick_precision(probe.precision, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision.scaled)
    steps_per_epoch = n // probe.batch_size
    window = max(1, probe.steps // 10)
    tail = torch.zeros((), device=dev)
    step = 0
    while step < probe.steps:
        epoch = step // steps_per_epoch
        sampler = EpochBatches(
            n, micro=probe.batch_size // world.size, accumulation=1, world=world.size,
            rank=world.rank, seed=seed, epoch=epoch,
        )  # fmt: skip
        for batch in sampler:
            if step >= probe.steps:
                break
            x = digits[batch].to(dev).long()
            y = labels[batch].to(dev) if labels is not None else None
            with precision.autocast(dev):
                loss = trained(x, y).float().mean()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            schedule.step()
            if step >= probe.steps - window:
                tail = tail + loss.detach()
            step += 1
    prior.eval()
    mean = distributed.mean_over_ranks({"nats": float(tail) / window}, dev)["nats"]
    if not math.isfinite(mean):
        raise VQBenchError("the probe's prior diverged (non-finite loss); lower probe.lr")
    return mean / LN2


@torch.no_grad()
def validation_nll(
    prior: TokenPrior,
    digits: torch.Tensor,
    labels: torch.Tensor | None,
    probe: ProbeConfig,
    world: distributed.World,
) -> dict[str, float]:
    """Bits per token and per image (the sum over its positions), over the whole split."""
    dev = world.device
    precision = distributed.pick_precision(probe.precision, dev)
    mine = torch.tensor(shard_indices(digits.shape[0], world.size, world.rank), dtype=torch.long)
    totals = torch.zeros(2, dtype=torch.float64, device=dev)  # nats, images
    for chunk in mine.split(probe.eval_batch_size):
        x = digits[chunk].to(dev).long()
        y = labels[chunk].to(dev) if labels is not None else None
        with precision.autocast(dev):
            nll = prior(x, y).double()
        totals += torch.stack([nll.sum(), torch.tensor(float(len(chunk)), device=dev).double()])
    distributed.all_reduce_sum(totals)
    nats, images = totals.tolist()
    positions = digits.shape[1]
    return {
        "bits_per_token": nats / (images * positions) / LN2,
        "bits_per_image": nats / images / LN2,
    }


# ---- generation --------------------------------------------------------------------------------
def real_side(config: RunConfig, probe: ProbeConfig, world) -> SampleFID | Unavailable:
    """Inception statistics of the validation images, or why gFID is unavailable."""
    if not probe.gfid:
        return Unavailable("probe.gfid is off")
    try:  # found (or fetched) before torch-fidelity is imported: seconds saved when missing
        weights_file("inception", config.eval.inception_weights)
    except WeightsUnavailable as err:
        return Unavailable(describe_missing(err))
    stats = config.eval.fid_stats
    reference = FIDStatistics.load(stats) if stats else None
    fid = SampleFID(config.eval.inception_weights, device=world.device, reference=reference)
    if not fid.available:
        return fid.unavailable
    if reference is not None:  # the real side comes from the statistics file
        return fid
    dataset = build_split(config.data, train=False, seed=config.seed)
    for x in eval_loader(
        dataset, batch_size=config.eval.batch_size, world=world.size, rank=world.rank,
        device=world.device,
    ):  # fmt: skip
        fid.update(x.to(world.device), None)
    return fid


def decode(
    model: Autoencoder | ImageTokenizer, layout: DigitLayout, digits: torch.Tensor, grid
) -> torch.Tensor:
    """Sampled digits `(n, L, m)` to images in [-1, 1] through the tokenizer's decoder."""
    indices = layout.from_digits(digits).reshape(digits.shape[0], *grid, layout.components)
    if layout.components == 1:
        indices = indices.squeeze(-1)
    with torch.no_grad():
        decoded = (
            model.decode_indices(indices)
            if isinstance(model, Autoencoder)
            else model.decode(indices)
        )
        return decoded.float().clamp(-1, 1)


def sample_and_measure(
    prior: TokenPrior,
    model: Autoencoder,
    tokens: TokenSet,
    val_classes: torch.Tensor | None,
    fid: SampleFID | Unavailable,
    probe: ProbeConfig,
    world,
    seed: int,
) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Sample `probe.samples` token grids; their usage, gFID and the figure's images.

    Batch `b` is drawn on process `b % world` from a generator seeded by `(seed, b)`, so the
    samples do not depend on the number of processes.
    """
    layout, dev = prior.layout, world.device
    counts = [torch.zeros(s, dtype=torch.long, device=dev) for s in layout.index_sizes]
    figure = None
    if isinstance(fid, SampleFID):
        fid.reset()
    starts = range(0, probe.samples, probe.eval_batch_size)
    for b, start in enumerate(starts):
        if b % world.size != world.rank:
            continue
        n = min(probe.eval_batch_size, probe.samples - start)
        generator = torch.Generator(device=dev).manual_seed(seed * 1_000_003 + b)
        classes = None
        if val_classes is not None:
            classes = val_classes[(start + torch.arange(n)) % len(val_classes)].to(dev)
        digits = prior.sample(
            n, classes=classes, generator=generator, temperature=probe.temperature
        )
        indices = layout.from_digits(digits)
        for c, count in enumerate(counts):
            flat = indices[..., c].reshape(-1)
            count.index_add_(0, flat, torch.ones_like(flat))
        wants_figure = b == 0 and probe.figure_samples > 0
        if isinstance(fid, SampleFID) or wants_figure:
            images = decode(model, layout, digits, tokens.grid)
            if isinstance(fid, SampleFID):
                fid.update(None, images)
            if wants_figure:
                figure = images[: probe.figure_samples].cpu()
    distributed.all_reduce_sum(*counts)
    results = usage_of(counts, "sample")
    gfid = fid.compute()["gfid"] if isinstance(fid, SampleFID) else fid
    results["gfid"] = str(gfid) if isinstance(gfid, Unavailable) else gfid
    return results, figure


def usage_of(counts: list[torch.Tensor], prefix: str) -> dict[str, Any]:
    """Usage and perplexity of code histograms (the mean over the components of a composite)."""
    per = [usage_from_counts(c.cpu()) for c in counts]
    results: dict[str, Any] = {
        f"{prefix}_usage": sum(p["usage"] for p in per) / len(per),
        f"{prefix}_perplexity": sum(p["perplexity"] for p in per) / len(per),
    }
    if len(per) > 1:
        results[f"{prefix}_usage_per_component"] = [p["usage"] for p in per]
    return results


def data_usage(tokens: TokenSet, layout: DigitLayout) -> dict[str, Any]:
    indices = layout.from_digits(tokens.digits)
    counts = [
        torch.bincount(indices[..., c].reshape(-1), minlength=s)
        for c, s in enumerate(layout.index_sizes)
    ]
    return usage_of(counts, "data")


def save_sample_grid(images: torch.Tensor, out: Path, title: str = "") -> Path:
    """A labelled PNG grid of decoded samples (8 per row), each drawn at least 96 pixels wide
    (nearest neighbour: the pixels are the decoder's), written atomically."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    from vqbench.data import to_uint8

    grid = to_uint8(make_grid(images, nrow=min(8, len(images)), padding=2, pad_value=1.0))
    dpi, scale = 100, max(1.0, 96 / images.shape[-1])
    grid_w, grid_h = grid.shape[2] * scale / dpi, grid.shape[1] * scale / dpi  # inches
    width = max(grid_w, 4.0)
    lines = textwrap.wrap(title or f"{len(images)} decoded samples of the probe's prior",
                          int(width * dpi / 7.5))  # fmt: skip
    title_h = 0.1 + 0.2 * len(lines)
    fig = plt.figure(figsize=(width, grid_h + title_h))
    ax = fig.add_axes((0, 0, 1, grid_h / (grid_h + title_h)))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    fig.text(0.5, 1 - 0.05 / (grid_h + title_h), "\n".join(lines), ha="center", va="top",
             fontsize=9)  # fmt: skip
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out


# ---- the procedure -----------------------------------------------------------------------------
def probe_fingerprint(probe: ProbeConfig, run: RunDir, checkpoint: Path, config: RunConfig) -> str:
    """What a probe's results depend on: its settings, the run, its checkpoint and weights."""
    key = [probe.fingerprint(), run.recorded_fingerprint(), checkpoint.name, config.eval.use_ema]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def finished_seeds(run: RunDir, fingerprint: str) -> dict[int, dict[str, Any]]:
    """Seeds an earlier probe with the same fingerprint finished (kept, not redone)."""
    previous = read_json(run.probe_file)
    if not previous or previous.get("probe_fingerprint") != fingerprint:
        return {}
    return {int(r["seed"]): r for r in previous.get("seeds", [])}


def probe_is_complete(run: RunDir, probe: ProbeConfig) -> bool:
    """True when `probe.json` holds every seed of `probe` for the run's current checkpoint."""
    if not run.probe_file.is_file():
        return False
    if is_published_folder(run.path):
        config = read_published(run.path)
        checkpoint = Path(config.tokenizer.checkpoint)
    else:
        _, checkpoint = find_run(run.path)
        config = run_config(run)
    fingerprint = probe_fingerprint(probe, run, checkpoint, config)
    return set(probe.seeds) <= set(finished_seeds(run, fingerprint))


@dataclass
class ProbeInputs:
    """What every seed of a probe shares: the tokenizer, the tokens of both splits, their class
    ids and the real side of gFID (`prepare`)."""

    model: Autoencoder
    layout: DigitLayout
    train: TokenSet
    val: TokenSet
    train_ids: torch.Tensor | None  # class of each training image, None when unconditional
    val_ids: torch.Tensor | None
    classes: int  # number of classes (0: unconditional)
    conditioning: str  # what the prior is conditioned on, in words
    fid: SampleFID | Unavailable


def probe_seed(inputs: ProbeInputs, probe: ProbeConfig, world, seed: int):
    """Train one prior (seeded) and measure it: NLL, samples' usage and gFID."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    train, val, layout = inputs.train, inputs.val, inputs.layout
    prior = build_prior(layout, train.positions, inputs.classes, probe).to(world.device)
    train_bits = train_prior(prior, train.digits, inputs.train_ids, probe, world, seed)
    trained_s = time.perf_counter() - start
    nll = validation_nll(prior, val.digits, inputs.val_ids, probe, world)
    generated, figure = sample_and_measure(
        prior, inputs.model, val, inputs.val_ids, inputs.fid, probe, world, seed
    )
    return {
        "seed": seed,
        **nll,
        "train_bits_per_token": train_bits,
        **generated,
        "seconds": {"train": trained_s, "total": time.perf_counter() - start},
    }, figure


def prepare(model, config: RunConfig, probe: ProbeConfig, world) -> ProbeInputs:
    """Tokens of both splits, class ids and the real side of gFID: shared by every seed."""
    layout = DigitLayout(index_sizes_of(model), probe.softmax_limit)
    train = encode_split(model, config, layout, world, train=True)
    val = encode_split(model, config, layout, world, train=False)
    train_ids, val_ids, conditioning = class_indices(train, val, probe.class_conditional)
    classes = int(train_ids.max()) + 1 if train_ids is not None else 0
    return ProbeInputs(
        model=model,
        layout=layout,
        train=train,
        val=val,
        train_ids=train_ids,
        val_ids=val_ids,
        classes=classes,
        conditioning=conditioning,
        fid=real_side(config, probe, world),
    )


def weights_of(model, config) -> str:
    """Which weights a probe used: a run's evaluated ones, or a tokenizer's released ones."""
    if not isinstance(model, Autoencoder):
        return "released"
    return "model_ema" if config.eval.use_ema else "model"


def probe_header(
    inputs: ProbeInputs, probe, fingerprint, run, checkpoint, config
) -> dict[str, Any]:
    layout, val = inputs.layout, inputs.val
    return {
        "probe_fingerprint": fingerprint,
        "settings_fingerprint": probe.fingerprint(),
        "run_fingerprint": run.recorded_fingerprint(),
        "checkpoint": checkpoint.name,
        "weights": weights_of(inputs.model, config),
        "settings": probe.model_dump(mode="json"),
        "index_sizes": layout.index_sizes,
        "digits": layout.radices,
        "token_grid": list(val.grid),
        "tokens_per_image": val.positions,
        "uniform_bits_per_token": layout.bits_per_position,
        "conditioning": inputs.conditioning,
        "train_images": inputs.train.digits.shape[0],
        "val_images": val.digits.shape[0],
        **data_usage(val, layout),
    }


def find_evaluated(path: str | Path) -> RunDir:
    """The folder of a trained run (or of one of its checkpoints) or of a published
    tokenizer's evaluation (`vqbench eval --tokenizer`)."""
    if is_published_folder(path):
        return RunDir(path)
    return find_run(path)[0]


def load_evaluated(path: str | Path, device: Any = "cpu"):
    """`load_trained`, or for a published tokenizer's folder its settings and tokenizer (the
    checkpoint it was evaluated with, checked by its sha256), and a training split of its own:
    (config, tokenizer, folder, checkpoint file)."""
    if not is_published_folder(path):
        return load_trained(path, device=device)
    config = read_published(path)
    spec = config.tokenizer
    if recorded_sha256(path) != file_sha256(spec.checkpoint):
        raise VQBenchError(
            f"checkpoint '{spec.checkpoint}' is not the file '{path}' was evaluated with (its "
            f"sha256 differs); evaluate it again (vqbench eval --tokenizer ... --force)"
        )
    data = config.data
    if data.kind == "imagefolder" and (data.root, data.file_list) == (
        data.val_root, data.val_file_list,
    ):  # fmt: skip
        raise VQBenchError(
            f"'{path}' was evaluated without training images ({data.root} is its validation "
            f"data); the probe trains its prior on training images: evaluate it with "
            f"--train-data DIR (or a --config whose data.root differs from data.val_root)"
        )
    return config, load_tokenizer(spec).to(device), RunDir(path), Path(spec.checkpoint)


def probe_run(
    path: str | Path,
    probe: ProbeConfig | None = None,
    *,
    device: str | None = None,
    force: bool = False,
    log: Callable[[str], Any] = print,
) -> tuple[Path, dict[str, Any]]:
    """Probe a trained run (its evaluated weights), or a published tokenizer's evaluation
    folder, and write `probe.json` in its folder.

    `probe` defaults to the `probe:` section of the run's suite, else `ProbeConfig()`. Seeds a
    probe with the same settings finished earlier are kept (all of them: nothing is redone
    unless `force`).
    """
    world = distributed.setup(device)
    config, model, run, checkpoint = load_evaluated(path, device=world.device)
    model.requires_grad_(False)
    if probe is None:
        probe, _ = default_probe_config(run)
    check_probe_sizes(probe, config, world.device, getattr(model, "downsampling", None))
    fingerprint = probe_fingerprint(probe, run, checkpoint, config)
    done = {} if force else finished_seeds(run, fingerprint)
    if all(s in done for s in probe.seeds):
        if world.is_main:
            log(f"{run.path}: probed earlier with these settings; --force redoes it")
        return run.probe_file, read_json(run.probe_file) or {}
    begun = time.perf_counter()
    inputs = prepare(model, config, probe, world)
    header = probe_header(inputs, probe, fingerprint, run, checkpoint, config)
    header["seconds_prepare"] = time.perf_counter() - begun
    results: dict[str, Any] = {}
    for seed in probe.seeds:
        if seed in done:
            continue
        done[seed], figure = probe_seed(inputs, probe, world, seed)
        results = {**header, "seeds": [done[s] for s in probe.seeds if s in done]}
        if world.is_main:
            r = done[seed]
            log(
                f"probe {config.name} seed {seed}: {r['bits_per_token']:.4f} bits/token, "
                f"{r['bits_per_image']:.1f} bits/image, gFID {r['gfid']}, "
                f"{r['seconds']['total']:.0f} s"
            )
            if figure is not None and seed == probe.seeds[0]:
                title = (
                    f"{config.name}: {len(figure)} samples of the probe's prior (seed {seed}), "
                    f"decoded by the tokenizer"
                )
                save_sample_grid(figure, run.probe_samples_file, title)
            run.write_result(run.probe_file, results)
    return run.probe_file, results
