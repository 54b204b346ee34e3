"""Train the official TransVQ module inside vqbench's engine, beside our `transvq` (issue #22).

Is the `transvq` row's collapse in suites/families2-small.yaml the method or our code? This
file is both a plugin quantizer, `transvq_reference` (never registered as a built-in: a suite
loads it through its `plugins:` list), and the script that runs the comparison::

    git clone /work/.mirror/CAIR-LAB-WFUSM+NS-VQ-TransVQ/repo /tmp/ref/NS-VQ-TransVQ
    OMP_NUM_THREADS=1 python tools/transvq_reference.py --checkout /tmp/ref/NS-VQ-TransVQ \
        --out /tmp/transvq-reference [--compare /path/to/families2-small/transvq-s0] \
        [--seed 1] [--only transvq-reference]

It writes a suite of the families2-small row's settings (seed 0 by default, no probe) with
three rows and runs it with `python -m vqbench run`, then prints per-epoch train usage,
validation usage and PSNR of each (and of every `--compare` run folder):

- `transvq`: ours, as in the suite;
- `transvq-reference`: the reference `SimVQ(codebook_transform=CodebookTransformer(...))` of
  `NS_Trans_VQ_ImageNet/ldm/modules/transVQ.py`, built as `configs/vqvae/vq-f4_transvq.yaml`
  builds it (the transformer's settings and the loss module's `codebook_weight` are read from
  the config), its frozen codebook drawn from the global RNG as the reference draws it;
- `transvq-reference-seeded`: the same, its frozen codebook drawn from `core_seed` without
  touching the global RNG, as ours draws it: the whole model then starts from our weights.

The wrapper calls the reference's own `forward` (its `cdist` lookup, its loss, its straight
through) on the tokens as one sequence and returns what it returns; the engine (one Adam over
the autoencoder and the quantizer, as the reference's `VQModel.configure_optimizers`) is the
same for every row. Run folders that exist are not retrained (`vqbench run` skips them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # loaded by path as a plugin: the tools package lives here
    sys.path.insert(0, str(ROOT))

from tools.reference_fixtures.transvq import FILE, import_reference, recipe  # noqa: E402
from vqbench.quantizer import (  # noqa: E402
    Quantizer,
    QuantizerOutput,
    QuantizerParams,
    register_quantizer,
)

NAME = "transvq_reference"


class TransVQReferenceParams(QuantizerParams):
    codebook_size: pydantic.PositiveInt = 8192
    dim: pydantic.PositiveInt = 128
    checkout: str = "/tmp/ref/NS-VQ-TransVQ"
    core: Literal["reference", "seeded"] = "reference"
    core_seed: pydantic.NonNegativeInt = 0

    @pydantic.field_validator("checkout")
    @classmethod
    def _is_checkout(cls, checkout: str) -> str:
        if not (Path(checkout) / FILE).is_file():
            raise ValueError(
                f"{FILE} is not in {checkout}; clone CAIR-LAB-WFUSM/NS-VQ-TransVQ there"
            )
        return checkout


@register_quantizer(NAME)
class TransVQReference(Quantizer):
    """The official TransVQ module behind vqbench's `Quantizer` interface (test-only)."""

    Params = TransVQReferenceParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        ref, settings = import_reference(Path(p.checkout)), recipe(Path(p.checkout))
        transform = ref.CodebookTransformer(  # global RNG, in the order ours draws it
            frozen_codebook_dim=p.dim, out_dim=p.dim, codebook_size=p.codebook_size,
            **settings["transform"],
        )  # fmt: skip
        with torch.random.fork_rng(devices=[], enabled=p.core == "seeded"):
            if p.core == "seeded":  # randn under manual_seed(s) == our seeded_normal(s)
                torch.manual_seed(p.core_seed)
            self.ref = ref.SimVQ(
                dim=p.dim,
                codebook_size=p.codebook_size,
                codebook_transform=transform,
                channel_first=False,
                rotation_trick=settings["rotation_trick"],
            )
        self.loss_weight = settings["codebook_weight"]  # the loss module's weight on it

    def codebook(self) -> torch.Tensor:
        return self.ref.codebook

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        quantized, loss, (_, _, indices) = self.ref(z.unsqueeze(0))  # one sequence (1, N, d)
        quantized, indices = quantized.squeeze(0), indices.squeeze(0)
        term = F.mse_loss(quantized.detach(), z.detach())  # both terms' value (for the log)
        stats = {"codebook": term, "commitment": term}
        return QuantizerOutput(quantized, indices, self.loss_weight * loss, stats)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        # The codebook's rows, as `forward` returns them (the reference's `indices_to_codes`
        # runs the transformer over the selected codes only, which is another map).
        return F.embedding(indices, self.ref.codebook)

    def independent_groups(self) -> int:
        return 1


# ---- the comparison ---------------------------------------------------------------------------
def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def comparison_suite(suite: Path, row: str, seed: int, checkout: str) -> dict[str, Any]:
    """The suite's shared settings with its `row` and the two reference rows, no probe."""
    spec = yaml.safe_load(suite.read_text())
    runs = [r for r in spec.get("runs", []) if r["name"] == row]
    if not runs:
        fail(f"{suite} has no run named '{row}'; give --row a run of that suite")
    ours = runs[0]
    sizes = {k: ours["quantizer"]["params"][k] for k in ("codebook_size", "dim")}
    rows = [ours] + [
        {
            "name": f"transvq-reference{suffix}",
            "label": f"official TransVQ module ({core} frozen codebook)",
            "quantizer": {"name": NAME, "params": {**sizes, "checkout": checkout, "core": core}},
        }
        for suffix, core in (("", "reference"), ("-seeded", "seeded"))
    ]
    return {
        "suite": "transvq-reference",
        "title": f"{row} of {suite.name} beside the official TransVQ module",
        "plugins": [str(Path(__file__).resolve())],
        "seeds": [seed],
        "shared": spec["shared"],
        "runs": rows,
    }


def summary(folder: Path) -> dict[str, Any]:
    """Per-epoch train usage, validation usage and PSNR of one run folder."""
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x]
    train = [round(100 * m["train_usage"], 2) for m in lines if "train_usage" in m]
    ev = json.loads((folder / "eval.json").read_text())
    return {"train_usage_%": train, "val_usage_%": round(100 * ev["usage"], 2),
            "val_codes": ev["used_codes"], "psnr": round(ev["psnr"], 3)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", default="/tmp/ref/NS-VQ-TransVQ")
    parser.add_argument("--out", type=Path, default=Path("/tmp/transvq-reference"))
    parser.add_argument("--suite", type=Path, default=ROOT / "suites" / "families2-small.yaml")
    parser.add_argument("--row", default="transvq")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", type=Path, action="append", default=[])
    parser.add_argument("--only", action="append", default=[], help="train only this row")
    args = parser.parse_args(argv)
    if not (Path(args.checkout) / FILE).is_file():
        fail(f"{FILE} is not in {args.checkout}; clone CAIR-LAB-WFUSM/NS-VQ-TransVQ there")
    if not args.suite.is_file():
        fail(f"suite {args.suite} does not exist; give --suite a suite file")
    missing = [str(c) for c in args.compare if not (c / "eval.json").is_file()]
    if missing:
        fail(f"--compare {missing[0]} has no eval.json; give a finished run folder")
    spec = comparison_suite(args.suite, args.row, args.seed, args.checkout)
    names = [r["name"] for r in spec["runs"]]
    if any(name not in names for name in args.only):
        fail(f"--only takes one of {', '.join(names)}")
    args.out.mkdir(parents=True, exist_ok=True)
    suite_file = args.out / "transvq-reference.yaml"
    suite_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    command = [sys.executable, "-m", "vqbench", "run", str(suite_file), "--out",
               str(args.out / "runs"), "--results", str(args.out / "results")]  # fmt: skip
    command += [arg for name in args.only for arg in ("--only", name)]
    # The trajectory hangs on the order of float sums, so on the thread count: one thread,
    # as the suite's recorded runs, unless the caller chose.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(command, cwd=ROOT, check=True, env=env)
    run_folder = args.out / "runs" / spec["suite"]
    folders = [run_folder / f"{name}-s{args.seed}" for name in args.only or names]
    for folder in [*args.compare, *folders]:
        print(json.dumps({"run": str(folder), **summary(folder)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
