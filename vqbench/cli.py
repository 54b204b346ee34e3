"""Command line: `vqbench [--plugin MODULE]... COMMAND` (list, run, report, train, eval, probe,
fid-stats, site, export, tokenizer, data)."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from vqbench import distributed
from vqbench.errors import VQBenchError
from vqbench.estimator import get_estimator_class, list_estimators
from vqbench.quantizer import get_quantizer_class, list_quantizers
from vqbench.registry import load_plugin
from vqbench.version import __version__

# The commands import the engine when they run, so that `vqbench list` and `--help` start fast.


def _first_doc_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _parameter_summary(cls, skip=("estimator", "estimator_params")) -> str:
    fields = cls.Params.model_fields
    return ", ".join(
        f"{name}={field.default!r}" for name, field in fields.items() if name not in skip
    )


def quantizer_table() -> str:
    """The table `vqbench list` prints: name, kind, parameters with defaults, description."""
    rows = []
    for name in list_quantizers():
        cls = get_quantizer_class(name)
        rows.append([name, cls.codebook_kind(), _parameter_summary(cls), _first_doc_line(cls)])
    return tabulate(
        rows,
        headers=["name", "codebook", "parameters", "description"],
        tablefmt="github",
        maxcolwidths=[None, None, 60, 50],
    )


def estimator_table() -> str:
    """The estimators `vqbench list` prints; any explicit-codebook quantizer takes any of them
    as `estimator: NAME` with `estimator_params: {...}`."""
    rows = []
    for name in list_estimators():
        cls = get_estimator_class(name)
        rows.append([name, _parameter_summary(cls), _first_doc_line(cls)])
    return tabulate(
        rows,
        headers=["estimator", "parameters", "description"],
        tablefmt="github",
        maxcolwidths=[None, 50, 60],
    )


def cmd_list(args: argparse.Namespace) -> int:
    print(quantizer_table())
    print()
    print("Gradient estimators (quantizer parameter `estimator`; explicit codebooks only):")
    print()
    print(estimator_table())
    print()
    print("Evaluation protocols (eval.protocol, vqbench fid-stats --protocol):")
    print()
    print(protocol_table())
    print()
    print("Published-tokenizer adapters (vqbench eval --tokenizer NAME --checkpoint FILE):")
    print()
    print(adapter_table())
    return 0


def adapter_table() -> str:
    """The registered adapters of published tokenizers and the official code each follows."""
    from vqbench.published import get_adapter_class, list_adapters

    rows = [[name, get_adapter_class(name).source] for name in list_adapters()]
    return tabulate(rows, headers=["adapter", "official code it follows"], tablefmt="github")


def protocol_table() -> str:
    """The registered evaluation protocols and what each fixes."""
    from vqbench.protocols import get_protocol, protocol_names

    rows = [get_protocol(name).describe().split(": ", 1) for name in protocol_names()]
    return tabulate(rows, headers=["protocol", "what it fixes"], tablefmt="github")


def print_results(title: str, results: dict) -> None:
    rows = [
        [k, f"{v:.4f}" if isinstance(v, float) else v]
        for k, v in results.items()
        if not isinstance(v, list)
    ]
    print(title)
    print(tabulate(rows, headers=["metric", "value"], tablefmt="github"))


def cmd_train(args: argparse.Namespace) -> int:
    from vqbench.config import load_run_config
    from vqbench.evaluate import evaluate_run
    from vqbench.rundir import RunDir
    from vqbench.train import TrainingDiverged, TrainOptions, train

    config = load_run_config(args.config)
    run = RunDir(Path(args.out) if args.out else Path("runs") / config.name)
    try:
        options = TrainOptions(resume=args.resume, force=args.force, device=args.device)
        train(config, run.path, options)
        if not args.no_eval:
            out, results = evaluate_run(run.path, device=args.device)
            if distributed.is_main_process():
                print_results(f"{config.name}: {out}", results)
                run.set_status("finished", run.status().get("step"))
    except TrainingDiverged as err:
        print(f"vqbench: training stopped: {err}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()
    return 0


#: `vqbench eval` flags that belong to a published tokenizer's evaluation (`--tokenizer`).
PUBLISHED_FLAGS = (
    "checkpoint", "option", "trust_checkpoint", "config", "data", "train_data", "resolution",
    "out", "protocol", "force",
)  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    from vqbench.evaluate import evaluate_run, write_figures_only

    if args.tokenizer is not None:
        return cmd_eval_published(args)
    given = [f for f in PUBLISHED_FLAGS if getattr(args, f) not in (None, False, [])]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise VQBenchError(f"{flag} goes with --tokenizer NAME (a published tokenizer); drop it")
    if args.run is None:
        raise VQBenchError(
            "give a run directory, or a published tokenizer: --tokenizer NAME --checkpoint FILE "
            "--data DIR --out DIR"
        )
    if args.figures_only:
        if args.resample or args.extend or args.split != "val":
            raise VQBenchError(
                "--figures-only writes the trained codebook's figure data; drop --resample, "
                "--extend and --split"
            )
        print(f"vqbench: wrote {write_figures_only(args.run, device=args.device)}")
        return 0

    out, results = evaluate_run(
        args.run,
        split=args.split,
        resample=args.resample,
        extend=args.extend,
        device=args.device,
        seed=args.seed,
    )
    print_results(str(out), results)
    return 0


def cmd_eval_published(args: argparse.Namespace) -> int:
    """`vqbench eval --tokenizer NAME --checkpoint FILE ... --out DIR`."""
    from vqbench.evaluate import evaluate_published
    from vqbench.published_run import published_config

    for flag, wrong in (
        ("RUN", args.run is not None),
        ("--split", args.split != "val"),
        ("--resample", args.resample is not None),
        ("--extend", args.extend is not None),
        ("--figures-only", args.figures_only),
    ):
        if wrong:
            raise VQBenchError(f"{flag} is for trained runs; drop it with --tokenizer")
    for flag in ("checkpoint", "out"):
        if getattr(args, flag) is None:
            raise VQBenchError(f"--tokenizer needs --{flag} (e.g. --{flag} {flag.upper()})")
    config = published_config(
        args.tokenizer,
        args.checkpoint,
        options=args.option,
        trust=args.trust_checkpoint,
        config_file=args.config,
        data=args.data,
        train_data=args.train_data,
        resolution=args.resolution,
        protocol=args.protocol,
        name=Path(args.out).name,
    )
    out, results = evaluate_published(config, args.out, device=args.device, force=args.force)
    if distributed.is_main_process():
        print_results(str(out), {k: v for k, v in results.items() if k != "options"})
    return 0


def cmd_fid_stats(args: argparse.Namespace) -> int:
    from vqbench.evaluate import fid_statistics

    for name in ("resolution", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise VQBenchError(f"{flag} {getattr(args, name)} must be a positive integer")
    stats = fid_statistics(
        args.images,
        resolution=args.resolution,
        backend=args.backend,
        mode=args.mode,
        protocol=args.protocol,
        weights=args.weights,
        batch_size=args.batch_size,
        device=args.device or "cpu",
    )
    stats.save(args.out)
    print(f"vqbench: wrote {args.out} ({stats.count} images, {stats.stack}, {stats.protocol})")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from vqbench.config import read_yaml
    from vqbench.probe import default_probe_config, find_evaluated, parse_probe_config, probe_run

    run = find_evaluated(args.run)
    if args.config:
        probe, source = parse_probe_config(read_yaml(args.config), args.config), args.config
    else:
        probe, source = default_probe_config(run)
    changes = {k: getattr(args, k) for k in ("seeds", "steps", "samples")}
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        probe = parse_probe_config({**probe.model_dump(), **changes}, "command line")
    if distributed.is_main_process():
        print(f"probe settings from {source}: {probe.describe()}")
    try:
        out, results = probe_run(run.path, probe, device=args.device, force=args.force)
    finally:
        distributed.teardown()
    if distributed.is_main_process():
        print_probe(str(out), results)
    return 0


def print_probe(title: str, results: dict) -> None:
    keys = ("bits_per_token", "bits_per_image", "gfid", "sample_usage", "train_bits_per_token")
    rows = [
        [r["seed"]] + [f"{r[k]:.4f}" if isinstance(r[k], float) else r[k] for k in keys]
        for r in results.get("seeds", [])
    ]
    print(title)
    print(tabulate(rows, headers=["seed", *keys], tablefmt="github"))


def cmd_run(args: argparse.Namespace) -> int:
    from vqbench.runner import check_paths, check_tokenizer_paths, describe, run_suite
    from vqbench.suite import load_suite
    from vqbench.train import TrainingDiverged

    suite = load_suite(args.suite, seeds=args.seeds)
    if args.dry_run:
        print(f"{suite.source}: {len(suite.runs)} runs in {len(suite.blocks())} block(s)")
        print(
            tabulate(
                describe(suite),
                headers=[
                    "block",
                    "run",
                    "quantizer",
                    "post",
                    "fingerprint",
                    "settings",
                    "budget",
                    "batch",
                    "images",
                    "trainable",
                ],
                tablefmt="github",
            )
        )
        for t in suite.tokenizers:
            spec = t.config.tokenizer
            print(f"published: {t.name} ({spec.adapter}, {spec.checkpoint}, block {t.block})")
        if suite.probe is not None:
            print(f"then a probe of every run: {suite.probe.describe()}")
        check_paths(suite.runs)  # after the plan: a missing folder fails the dry run (exit 2)
        check_tokenizer_paths(suite.tokenizers)
        return 0
    try:
        run_suite(
            suite,
            root=Path(args.out),
            results=Path(args.results),
            only=args.only,
            device=args.device,
            force=args.force,
        )
    except TrainingDiverged as err:
        print(f"vqbench: training stopped: {err}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()
    if distributed.is_main_process():
        print(f"wrote {Path(args.results) / (suite.name + '.md')}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vqbench.runner import rebuild

    print(f"wrote {rebuild(args.runs, args.results, args.mixed_protocols)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vqbench.export import export_run

    print(f"vqbench: wrote {export_run(args.run, args.out, force=args.force)}")
    return 0


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from vqbench.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.tokenizer, device=args.device or "cpu")
    config = tok.export_config()
    trainable = sum(p.numel() for p in tok.parameters())
    rows = [
        ["quantizer", f"{config['quantizer']['name']} {config['quantizer']['params']}"],
        ["model", f"{config['model']['preset']} {config['model']['overrides']}"],
        ["resolution", config["resolution"]],
        ["downsampling", config["downsampling"]],
        ["index sizes", config["index_sizes"]],
        ["parameters", f"{trainable / 1e6:.2f}M"],
        ["plugin", config["plugin"]],
        ["weights", config.get("weights")],
        ["source", config.get("source")],
        ["device", tok.device],
    ]
    print(tabulate(rows, tablefmt="github", headers=["tokenizer", args.tokenizer]))
    return 0


def _command(sub, after: argparse.ArgumentParser, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that also takes the options of `after` (`--plugin`)."""
    return sub.add_parser(name, parents=[after], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqbench",
        description="Benchmark vector quantizers for image tokenizers under identical settings.",
    )
    parser.add_argument("--version", action="version", version=f"vqbench {__version__}")
    plugin_help = (
        "import MODULE (dotted name or .py file) to register more quantizers; repeatable; "
        "before or after the command"
    )
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", help=plugin_help)
    # The same option after the command (`vqbench run mine.yaml --plugin x.py`).
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument(
        "--plugin", action="append", default=[], dest="plugin_after", metavar="MODULE",
        help=plugin_help,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _command(
        sub, after, "list", help="list quantizers and gradient estimators with their parameters"
    ).set_defaults(func=cmd_list)
    _add_run_report_train(sub, after)
    _add_eval_probe(sub, after)
    _add_fid_stats(sub, after)
    _add_site(sub, after)
    _add_export(sub, after)
    _add_data(sub, after)
    return parser


def cmd_data_shards(args: argparse.Namespace) -> int:
    from vqbench.data import write_shards

    images, count = write_shards(args.folder, args.out, args.shard_size, prefix=args.prefix)
    print(f"vqbench: wrote {images} images in {count} shards to {args.out}")
    return 0


def cmd_data_index(args: argparse.Namespace) -> int:
    from vqbench.shards import index_shards

    for path in index_shards(args.urls):
        print(f"vqbench: wrote {path}")
    return 0


def _add_data(sub, after: argparse.ArgumentParser) -> None:
    """`data shards` and `data index`: WebDataset shards for `data.kind: webdataset`."""
    p = _command(sub, after, "data", help="write WebDataset shards of an image folder")
    data = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = _command(data, after, "shards", help="an image folder as tar shards plus their index")
    s.add_argument("folder", help="folder of images (class subfolders become labels)")
    s.add_argument("--out", required=True, metavar="DIR", help="new folder for the shards")
    s.add_argument("--shard-size", type=int, required=True, metavar="N", help="images a shard")
    s.add_argument("--prefix", default="train", help="shard names PREFIX-000000.tar (train)")
    s.set_defaults(func=cmd_data_shards)
    s = _command(data, after, "index", help="count local shards and write their index")
    s.add_argument("urls", help="shard pattern, e.g. 'shards/train-{000000..000146}.tar'")
    s.set_defaults(func=cmd_data_index)


def _add_fid_stats(sub, after: argparse.ArgumentParser) -> None:
    """`fid-stats`."""
    p = _command(
        sub,
        after,
        "fid-stats",
        help="FID statistics of a folder of images, for eval.fid_stats (computed once)",
    )
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="statistics file to write (.npz)")
    p.add_argument(
        "--protocol",
        default="vqbench",
        help="evaluation protocol whose images, resize and FID stack the statistics follow "
        "(default vqbench; see vqbench.protocols)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        help="resize and centre-crop, where the protocol leaves it free (default 256)",
    )
    p.add_argument(
        "--backend",
        choices=["torch-fidelity", "pytorch-fid", "clean-fid"],
        help="FID stack, where the protocol leaves it free (default torch-fidelity)",
    )
    p.add_argument("--mode", choices=["clean", "legacy_tensorflow"], help="clean-fid's mode")
    p.add_argument("--weights", help="the backend's Inception weights file (offline use)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device")
    p.set_defaults(func=cmd_fid_stats)


def _add_export(sub, after: argparse.ArgumentParser) -> None:
    """`export` and `tokenizer`."""
    p = _command(sub, after, "export", help="write a trained run as a tokenizer folder")
    p.add_argument("run", help="run directory (or a step-* checkpoint folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="the tokenizer folder to write")
    p.add_argument("--force", action="store_true", help="replace what DIR holds")
    p.set_defaults(func=cmd_export)
    p = _command(
        sub,
        after,
        "tokenizer",
        help="load an exported tokenizer (folder or hub id) and describe it",
    )
    p.add_argument("tokenizer", help="folder written by vqbench export, or a Hub id user/name")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cpu)")
    p.set_defaults(func=cmd_tokenizer)


def _add_run_report_train(sub, after: argparse.ArgumentParser) -> None:
    """`run`, `report` and `train`."""
    p = _command(sub, after, "run", help="run a suite: train and evaluate every run, then report")
    p.add_argument("suite", help="suite file, e.g. suites/tiny.yaml")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and list the runs, fingerprints and cost; train nothing",
    )
    p.add_argument("--only", action="append", metavar="NAME", help="only this run (repeatable)")
    p.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 instead of the suite's")
    p.add_argument("--out", default="runs", help="root of the run folders (default: runs)")
    p.add_argument("--results", default="results", help="report folder (default: results)")
    p.add_argument("--device")
    p.add_argument("--force", action="store_true", help="retrain runs that exist")
    p.set_defaults(func=cmd_run)
    p = _command(sub, after, "report", help="rebuild a suite's report from its finished runs")
    p.add_argument("runs", help="the suite's run folder, e.g. runs/tiny")
    p.add_argument("--results", default="results")
    p.add_argument(
        "--mixed-protocols",
        action="store_true",
        help="allow rows of different evaluation protocols in one table (each row says which)",
    )
    p.set_defaults(func=cmd_report)
    p = _command(sub, after, "train", help="train one run from a config file, then evaluate it")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    start.add_argument("--force", action="store_true", help="replace what the folder holds")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA if present)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.set_defaults(func=cmd_train)


def _add_eval_probe(sub, after: argparse.ArgumentParser) -> None:
    """`eval` and `probe`."""
    p = _command(
        sub,
        after,
        "eval",
        help="evaluate a trained run on its validation split, or a published tokenizer "
        "(--tokenizer NAME --checkpoint FILE)",
    )
    p.add_argument("run", nargs="?", help="run directory or checkpoint folder")
    p.add_argument("--split", choices=["val", "train"], default="val")
    ops = p.add_mutually_exclusive_group()
    ops.add_argument(
        "--resample",
        type=int,
        metavar="N",
        help="Group-VQ: draw a new codebook of N codes (Algorithm 2)",
    )
    ops.add_argument(
        "--extend",
        type=int,
        metavar="N",
        help="Group-VQ: keep the trained codes and extend to N (Algorithm 2)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the codes drawn")
    p.add_argument(
        "--figures-only",
        action="store_true",
        help="write only what the report's figures need (figures.json, reconstructions.png), "
        "e.g. for runs evaluated by an earlier version; eval.json is left as it is",
    )
    p.add_argument("--device")
    _add_published_eval(p)
    p.set_defaults(func=cmd_eval)
    p = _command(
        sub,
        after,
        "probe",
        help="train a small autoregressive prior on a run's tokens; bits/token, gFID",
    )
    p.add_argument(
        "run", help="run directory (or checkpoint folder), or a folder of vqbench eval --tokenizer"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="probe settings (YAML; a suite file's probe: section works); default: the run's "
        "suite's probe: section, else the defaults",
    )
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds of the prior")
    p.add_argument("--steps", type=int, metavar="N", help="training steps of the prior")
    p.add_argument("--samples", type=int, metavar="N", help="sampled token grids (gFID)")
    p.add_argument("--device")
    p.add_argument("--force", action="store_true", help="redo seeds that finished earlier")
    p.set_defaults(func=cmd_probe)


def _add_published_eval(p: argparse.ArgumentParser) -> None:
    """`eval --tokenizer NAME --checkpoint FILE ...`: a published tokenizer, no run folder."""
    g = p.add_argument_group("a published tokenizer (instead of RUN)")
    g.add_argument("--tokenizer", metavar="NAME", help="adapter name (vqbench.tokenizers)")
    g.add_argument("--checkpoint", metavar="FILE", help="the released weights file")
    g.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an adapter option (value read as YAML); repeatable",
    )
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint holding pickled Python objects (it runs code when loaded)",
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        help="data and eval settings: a run config, or a suite file (its shared: section)",
    )
    g.add_argument(
        "--data", metavar="DIR", help="validation images (a folder), or 'embedded' (the photos)"
    )
    g.add_argument("--train-data", metavar="DIR", help="training images (for a later probe)")
    g.add_argument(
        "--resolution", type=int, metavar="N", help="image size (default: the tokenizer's)"
    )
    g.add_argument("--out", metavar="DIR", help="folder for eval.json and the figures' data")
    g.add_argument("--protocol", metavar="NAME", help="a named evaluation protocol (eval.protocol)")
    g.add_argument("--force", action="store_true", help="replace another tokenizer's results")


def cmd_site(args: argparse.Namespace) -> int:
    from vqbench.site import write_site

    print(f"wrote {write_site(args.results, args.out) / 'index.html'}")
    return 0


def _add_site(sub, after: argparse.ArgumentParser) -> None:
    """`site`: the static results site."""
    p = _command(
        sub,
        after,
        "site",
        help="write a static results site (HTML, no server or network) from a results folder",
    )
    p.add_argument("results", help="folder of the suites' reports, e.g. results/")
    p.add_argument(
        "--out",
        default="site",
        help="the site's folder (default: site/); an earlier site there is replaced",
    )
    p.set_defaults(func=cmd_site)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        for module in args.plugin + getattr(args, "plugin_after", []):
            load_plugin(module)
        return args.func(args)
    except VQBenchError as err:
        print(f"vqbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "vqbench: interrupted; every file written so far is complete, and a run continues "
            "from its last checkpoint (vqbench train --resume, or vqbench run again)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
