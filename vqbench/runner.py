"""Running suites: train and evaluate every run not finished yet, resume interrupted ones, probe
them when the suite has a `probe:` section, evaluate (and probe) its published tokenizers, then
write the report (markdown, JSON, figures).
`rebuild` writes the report again from the runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vqbench import distributed
from vqbench.build import trainable_parameters
from vqbench.data import build_split, check_held_out
from vqbench.errors import VQBenchError
from vqbench.evaluate import evaluate_published, evaluate_run
from vqbench.files import atomic_write_json, atomic_write_text, check_writable, write_error
from vqbench.plots import write_all
from vqbench.probe import probe_is_complete, probe_run
from vqbench.protocols import check_protocol_images
from vqbench.published_run import (
    file_sha256,
    is_published_folder,
    read_published,
    tokenizer_fingerprint,
)
from vqbench.report import collect, render_json, render_markdown
from vqbench.rundir import RunDir, SuiteDir, load_recorded_plugins, record_plugins
from vqbench.suite import ExpandedRun, ExpandedTokenizer, Suite, load_suite
from vqbench.train import TrainOptions, train


def run_dir_of(root: Path, suite: Suite, run: ExpandedRun | ExpandedTokenizer) -> RunDir:
    return SuiteDir.under(root, suite.name).run(run.run_id)


def run_is_complete(run: RunDir, expanded: ExpandedRun) -> bool:
    return (
        run.recorded_fingerprint() == expanded.config.fingerprint()
        and run.state() == "finished"
        and run.eval_file().is_file()
        and all(run.eval_file(f"{op}-{n}").is_file() for op, n in expanded.post)
    )


#: (config field, folder or file): every path a run reads, checked by `--dry-run` as well.
PATH_FIELDS = (
    ("data.root", "folder"),
    ("data.val_root", "folder"),
    ("data.file_list", "file"),
    ("data.val_file_list", "file"),
    ("loss.perceptual_weights", "file"),
    ("eval.lpips_weights", "file"),
    ("eval.inception_weights", "file"),
)


def check_paths(runs: list[ExpandedRun]) -> None:
    """Every folder and file a run's config names exists (plugins are loaded when the suite is
    parsed); one line naming the field, the run and the path."""
    for run in runs:
        resolved = run.config.resolved()
        for key, kind in PATH_FIELDS:
            section, name = key.split(".")
            value = resolved[section].get(name)
            if value is None:
                continue
            ok = Path(value).is_dir() if kind == "folder" else Path(value).is_file()
            if not ok:
                noun = "dataset folder" if kind == "folder" else "file"
                raise VQBenchError(
                    f"{noun} '{value}' does not exist ({key} of run '{run.name}'); fix the "
                    f"path in the suite"
                )


def check_data(runs: list[ExpandedRun]) -> None:
    """Every image folder (or set of shards) a run needs exists and holds readable, held-out
    images (and the images its protocol measures): each distinct `data` section is read
    (headers only; shards: their index) before
    anything is trained."""
    seen = set()
    for run in runs:
        data = run.config.data
        check_protocol_images(data, run.config.eval.protocol)
        if data.kind == "embedded" or data.model_dump_json() in seen:
            continue
        seen.add(data.model_dump_json())
        if data.kind == "webdataset":  # the shards exist, are sized, and are held out
            check_held_out(build_split(data, train=True), build_split(data, train=False))
            continue
        for key, folder in (("root", data.root), ("val_root", data.val_root)):
            if not Path(folder).is_dir():
                raise VQBenchError(
                    f"dataset folder '{folder}' does not exist (data.{key} of "
                    f"run '{run.name}'); point it at your copy of the images"
                )
        check_held_out(build_split(data, train=True), build_split(data, train=False))


def check_run_folders(root: Path, suite: Suite, runs: list[ExpandedRun], force: bool) -> None:
    """Refuse, before training anything, folders that hold a different run."""
    for expanded in runs:
        run = run_dir_of(root, suite, expanded)
        theirs = run.recorded_fingerprint()
        if not force and theirs is not None and theirs != expanded.config.fingerprint():
            raise VQBenchError(
                f"{run.path} holds a run with other settings (fingerprint {theirs}, suite "
                f"{expanded.config.fingerprint()}){run.difference(expanded.config)}; use "
                f"another --out or pass --force to retrain it"
            )
        run.status()  # a damaged status.json fails here, before anything runs


def check_output_folders(*folders: Path) -> None:
    for folder in folders:
        check_writable(folder, "output folder")


def record_suite(suite: Suite, folder: SuiteDir) -> None:
    """Keep the suite (with the seeds actually used) beside its runs, for `vqbench report`."""
    spec = suite.spec.model_dump(mode="json", exclude_defaults=True)
    spec["seeds"] = sorted({r.seed for r in suite.runs})
    folder.record(spec)
    record_plugins(folder.path)


def run_suite(
    suite: Suite,
    *,
    root: Path,
    results: Path,
    only: list[str] | None = None,
    device: str | None = None,
    force: bool = False,
    log: Callable[[str], Any] = print,
) -> list[Path]:
    """Train and evaluate every run not finished yet; resume interrupted ones; then report."""
    runs = [r for r in suite.runs if not only or r.name in only]
    tokenizers = [t for t in suite.tokenizers if not only or t.name in only]
    if only and not runs and not tokenizers:
        names = sorted({r.name for r in suite.runs} | {t.name for t in suite.tokenizers})
        raise VQBenchError(
            f"--only {only} matches no run of {suite.source}; runs: {', '.join(names)}"
        )
    distributed.pick_device(device)
    check_output_folders(root, results)
    check_paths(runs)
    check_tokenizer_paths(tokenizers)
    check_data(runs)
    check_run_folders(root, suite, runs, force)
    record_suite(suite, SuiteDir.under(root, suite.name))
    done = []
    for i, expanded in enumerate(runs, 1):
        run = run_dir_of(root, suite, expanded)
        if run_is_complete(run, expanded) and not force:
            log(f"[{i}/{len(runs)}] {expanded.run_id}: finished earlier, skipped")
            probe_if_asked(suite, run, f"[{i}/{len(runs)}] {expanded.run_id}", device, force, log)
            done.append(run.path)
            continue
        state = run.state()
        # Resume whatever this run left (also a folder a kill left before its first status);
        # a diverged run is the user's to decide (--force, or another lr).
        resume = not force and state != "diverged" and run.recorded_fingerprint() is not None
        log(f"[{i}/{len(runs)}] {expanded.run_id}: {'resuming' if resume else 'training'}")
        if state != "trained" or force:
            options = TrainOptions(resume=resume, force=force, device=device)
            train(expanded.config, run.path, options)
        evaluate_run(run.path, device=device)
        for op, size in expanded.post:
            evaluate_run(run.path, device=device, **{op: size})
        if distributed.is_main_process():
            run.set_status("finished", run.status().get("step"))
        probe_if_asked(suite, run, f"[{i}/{len(runs)}] {expanded.run_id}", device, force, log)
        done.append(run.path)
    for expanded in tokenizers:
        done.append(evaluate_tokenizer(suite, root, expanded, device, force, log))
    if distributed.is_main_process():
        write_report(suite, SuiteDir.under(root, suite.name).path, results)
    return done


def check_tokenizer_paths(tokenizers: list[ExpandedTokenizer]) -> None:
    """Every published tokenizer's checkpoint file exists (`--dry-run` too)."""
    for expanded in tokenizers:
        file = expanded.config.tokenizer.checkpoint
        if not Path(file).is_file():
            raise VQBenchError(
                f"checkpoint '{file}' does not exist (tokenizer '{expanded.name}'); fix the path "
                f"in the suite's tokenizers: section"
            )


def tokenizer_is_complete(run: RunDir, expanded: ExpandedTokenizer) -> bool:
    """The folder holds this tokenizer's evaluation, under the same settings."""
    if not (run.eval_file().is_file() and is_published_folder(run.path)):
        return False
    sha256 = file_sha256(expanded.config.tokenizer.checkpoint)
    return (
        run.recorded_fingerprint() == tokenizer_fingerprint(expanded.config, sha256)
        and read_published(run.path) == expanded.config
    )


def evaluate_tokenizer(
    suite: Suite, root: Path, expanded: ExpandedTokenizer, device, force: bool, log
) -> Path:
    """Evaluate a published tokenizer of the suite (unless it was, with these settings), then
    probe it when the suite probes; its folder is the suite's, replaced when stale."""
    run = run_dir_of(root, suite, expanded)
    tag = f"{expanded.name} (published, {expanded.config.tokenizer.adapter})"
    if tokenizer_is_complete(run, expanded) and not force:
        log(f"{tag}: evaluated earlier, skipped")
    else:
        log(f"{tag}: evaluating")
        evaluate_published(expanded.config, run.path, device=device, force=True)
    probe_if_asked(suite, run, tag, device, force, log)
    return run.path


def probe_if_asked(suite: Suite, run: RunDir, tag: str, device, force: bool, log) -> None:
    """The suite's downstream probe of a finished run, unless it finished earlier."""
    if suite.probe is None:
        return
    if probe_is_complete(run, suite.probe) and not force:
        log(f"{tag}: probed earlier, skipped")
        return
    log(f"{tag}: probing")
    probe_run(run.path, suite.probe, device=device, force=force, log=log)


def write_report(
    suite: Suite, runs_dir: Path, results_dir: Path, mixed_protocols: bool = False
) -> Path:
    """`results/<suite>.md`, `.json` and the figures, each written atomically; tables whose
    rows were measured under different protocols are refused unless `mixed_protocols`."""
    check_writable(results_dir, "results folder")
    # reads (and checks) every result before a folder is made
    rows = collect(suite, runs_dir, mixed_protocols)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(results_dir, err) from None
    figures = [(title, path.name) for title, path in write_all(suite, rows, results_dir)]
    out = results_dir / f"{suite.name}.md"
    atomic_write_text(out, render_markdown(suite, rows, runs_dir, figures))
    atomic_write_json(results_dir / f"{suite.name}.json", render_json(suite, rows, figures))
    return out


def rebuild(
    runs_dir: str | Path, results_dir: str | Path = "results", mixed_protocols: bool = False
) -> Path:
    """`vqbench report RUNS_DIR`: rebuild the report of the suite whose runs are in RUNS_DIR."""
    folder = SuiteDir(runs_dir)
    marker = folder.suite_file
    if not marker.is_file():
        raise VQBenchError(
            f"'{runs_dir}' holds no suite.yaml; give a folder made by 'vqbench run' (runs/<suite>)"
        )
    load_recorded_plugins(folder.path)
    return write_report(load_suite(marker), folder.path, Path(results_dir), mixed_protocols)


def describe(suite: Suite) -> list[list[Any]]:
    """Rows of `vqbench run --dry-run`: what would run, its fingerprints and its cost."""
    rows = []
    for run in suite.runs:
        c = run.config
        steps = c.train.steps
        budget = f"{steps} steps" if steps else f"{c.train.epochs} epochs"
        try:
            trainable = f"{trainable_parameters(c) / 1e6:.2f}M"
        except VQBenchError as err:  # e.g. a feature extractor whose weights are not here
            trainable = f"n/a ({str(err)[:60]}...)"
        params = ", ".join(f"{k}={v}" for k, v in c.quantizer.params.items())
        images = f"{steps * c.train.batch_size:,}" if steps else "epochs x dataset"
        rows.append(
            [
                run.block,
                run.run_id,
                f"{c.quantizer.name}({params})",
                " ".join(f"{op} {n}" for op, n in run.post) or "-",
                c.fingerprint(),
                run.settings_fingerprint,
                budget,
                c.train.batch_size,
                images,
                trainable,
            ]
        )
    return rows
