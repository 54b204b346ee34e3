"""Command line: `vqbench [--plugin MODULE]... {list,run,train,eval}`."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence

from tabulate import tabulate

from vqbench import __version__
from vqbench.errors import VQBenchError
from vqbench.registry import (
    get_estimator_class,
    get_quantizer_class,
    list_estimators,
    list_quantizers,
    load_plugin,
)


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
        kind = "explicit" if cls.explicit_codebook else "implicit"
        rows.append([name, kind, _parameter_summary(cls), _first_doc_line(cls)])
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
    return 0


def cmd_not_implemented(args: argparse.Namespace) -> int:
    raise VQBenchError(f"'vqbench {args.command}' is not implemented yet in vqbench {__version__}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqbench",
        description="Benchmark vector quantizers for image tokenizers under identical settings.",
    )
    parser.add_argument("--version", action="version", version=f"vqbench {__version__}")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (dotted name or .py file) to register more quantizers; repeatable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "list", help="list quantizers and gradient estimators with their parameters"
    ).set_defaults(func=cmd_list)
    for name, text in [
        ("run", "run a suite of trainings and write the report"),
        ("train", "train one run from a config file"),
        ("eval", "evaluate a trained run"),
    ]:
        p = sub.add_parser(name, help=f"{text} (not implemented yet)")
        p.add_argument("args", nargs="*")
        p.set_defaults(func=cmd_not_implemented)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        for module in args.plugin:
            load_plugin(module)
        return args.func(args)
    except VQBenchError as err:
        print(f"vqbench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
