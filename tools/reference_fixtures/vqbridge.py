"""Fixtures for `vqbridge` from the official FVQ code (yfChang-cv/FVQ).

Run from the repository root::

    python -m tools.reference_fixtures.vqbridge --checkout /tmp/ref/FVQ

`tokenizer/tokenizer_image/vq_model_qbridge_release.py` `VectorQuantizer` with the ViT bridge
of `qbridge_ViT.py` and the training script's defaults (`commit_loss_beta` 0.25,
`entropy_loss_ratio` 0, `codebook_weight` 1: the loss is `vq + commit + entropy`). Two cases,
each one training forward and the backward of `loss + <z_q, upstream>`, recording the input,
every weight, the indices, `z_q`, every loss term and the gradients w.r.t. the input and every
parameter:

* `xs`: QBridge-XS/2 over 64 codes of 8 channels, every weight redrawn (the reference's init
  zeroes the recover layer, so its codebook starts at zero);
* `p4`: the same quantizer with the reference's `VQBridge` of 4 x 4 patches (XS widths, `P4`)
  in its own init under seed 0, the recover layer redrawn.

`init<seed>.<parameter>`: a fingerprint (sum, sum of squares, first 16 entries) of every
weight of `VectorQuantizer(256, 16, ..., 'QBridge-L/4')` (the release's 16,384-code projector)
built after `torch.manual_seed(seed)`, seeds 0 and 1: vqbench builds in the same order, so
a seed gives the same weights.

`schedule`: the learning-rate factor of `combined_lr_lambda` in
`vq_train_qbridge_lr_release.py` (extracted from `main` and run as written) with the settings
of `scripts/recon/FVQ-262144.sh` (`--sche_type lin`, `--warmup_ep 4`, 40 epochs; `--lrT`'s
default 0.3), at 25 steps per epoch.
"""

from __future__ import annotations

import ast
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from tools.reference_fixtures.common import (
    fail,
    load_module,
    parse_args,
    surrogate_backward,
    write_fixture,
)

REPOSITORY = "yfChang-cv/FVQ"
FOLDER = "tokenizer/tokenizer_image"
FILES = [f"{FOLDER}/qbridge_ViT.py", f"{FOLDER}/vq_model_qbridge_release.py"]
TRAIN = f"{FOLDER}/vq_train_qbridge_lr_release.py"
SCRIPT = "scripts/recon/FVQ-262144.sh"
CASES = {"xs": (64, 8, "QBridge-XS/2", (2, 8, 3, 3)), "p4": (64, 8, "QBridge-XS/2", (2, 8, 4, 4))}
#: Case `p4` swaps in the reference's `VQBridge` with 4 x 4 patches, XS widths.
P4 = {"patch_size": 4, "head_hidden_size": 8, "depth": 2, "num_heads": 4}
#: The release projector for 16,384 codes, whose initial weights are fingerprinted.
INIT = (256, 16, "QBridge-L/4")
INIT_SEEDS = (0, 1)
#: Steps per epoch of the schedule fixture (ImageNet's are thousands; the factor depends on
#: the fraction of training done).
STEPS_PER_EPOCH = 25


def release_schedule(checkout: Path) -> dict:
    """`--sche_type`, `--warmup_ep`, `--epochs` from the release script, `--lrT`'s default from
    the training script's argument parser."""
    script = (checkout / SCRIPT).read_text()
    train = (checkout / TRAIN).read_text()
    found = {
        "sche_type": re.search(r"--sche_type '(\w+)'", script),
        "warmup_ep": re.search(r"^warmup_ep=(\d+)", script, re.M),
        "epochs": re.search(r"^EPOCHS=(\d+)", script, re.M),
        "lrT": re.search(r'"--lrT", default=([0-9.]+)', train),
    }
    missing = [name for name, match in found.items() if match is None]
    if missing:
        fail(f"{SCRIPT} or {TRAIN} does not set {missing}; give a checkout of {REPOSITORY}")
    s = {name: match.group(1) for name, match in found.items()}
    return {
        "sche_type": s["sche_type"],
        "warmup_ep": int(s["warmup_ep"]),
        "epochs": int(s["epochs"]),
        "lrT": float(s["lrT"]),
        "steps_per_epoch": STEPS_PER_EPOCH,
    }


def build(ref, codebook_size: int, dim: int, bridge: str):
    """beta 0.25, entropy 0, no l2 norm, trained base codes; `show_usage` off (a logging
    window whose in-place update fails under this torch: it is a buffer made a Parameter)."""
    return ref.VectorQuantizer(codebook_size, dim, 0.25, 0.0, False, False, bridge, False)


def redraw(module: torch.nn.Module, names: tuple[str, ...] | None, seed: int) -> None:
    """Replace the named parameters (every one when None) with N(0, 0.3^2) draws."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if names is None or name in names:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def run(ref, case: str) -> dict[str, torch.Tensor]:
    k, d, bridge, shape = CASES[case]
    torch.manual_seed(0)
    quantizer = build(ref, k, d, bridge).train()
    if case == "p4":
        quantizer.qbridge = sys.modules["qbridge_ViT"].VQBridge(
            input_size=quantizer.h_, in_channels=d, **P4
        )
    recover = ("qbridge.final_layer.linear.weight", "qbridge.final_layer.linear.bias")
    redraw(quantizer, None if case == "xs" else recover, seed=1)
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(shape, generator=generator) * 0.5
    upstream = torch.randn(shape, generator=generator) * 0.01
    weights = {f"w.{n}": p.detach().clone() for n, p in quantizer.named_parameters()}
    z.requires_grad_(True)
    z_q, (vq, commit, entropy, _), (_, _, indices) = quantizer(z)
    loss = vq + commit + entropy  # VQLoss with codebook_weight 1
    surrogate_backward(z_q, loss, upstream)
    grads = {f"g.{n}": p.grad for n, p in quantizer.named_parameters()}
    return {
        **weights,
        **grads,
        "z": z.detach(),
        "upstream": upstream,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "codebook": vq.detach(),
        "commitment": (commit / 0.25).detach(),
        "entropy": entropy.detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
    }


def weight_fingerprint(weight: torch.Tensor) -> torch.Tensor:
    """Sum, sum of squares and the first 16 entries of a weight, in float64."""
    flat = weight.detach().double().flatten()
    return torch.cat([flat.sum()[None], flat.pow(2).sum()[None], flat[:16]])


def init_states(ref) -> dict[str, torch.Tensor]:
    out = {}
    for seed in INIT_SEEDS:
        torch.manual_seed(seed)
        for name, value in build(ref, *INIT).state_dict().items():
            out[f"init{seed}.{name}"] = weight_fingerprint(value)
    return out


def schedule_factors(checkout: Path, s: dict) -> torch.Tensor:
    """`combined_lr_lambda` from the training script's `main`, run over every step."""
    tree = ast.parse((checkout / TRAIN).read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    found = [n for n in ast.walk(main) if getattr(n, "name", "") == "combined_lr_lambda"]
    if not found:
        fail(f"{TRAIN} has no combined_lr_lambda in main; give a checkout of {REPOSITORY}")
    scope = {
        "math": math,
        "args": SimpleNamespace(**{k: s[k] for k in ("sche_type", "warmup_ep", "epochs", "lrT")}),
        "loader": range(s["steps_per_epoch"]),
    }
    exec(compile(ast.Module(body=found, type_ignores=[]), TRAIN, "exec"), scope)
    total = s["epochs"] * s["steps_per_epoch"]
    factors = [scope["combined_lr_lambda"](step) for step in range(total)]
    return torch.tensor(factors, dtype=torch.float64)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    load_module(args.checkout, FILES[0], "qbridge_ViT")  # imported by name by the release
    ref = load_module(args.checkout, FILES[1], "reference_vq_model_qbridge_release")
    schedule = release_schedule(args.checkout)
    tensors = {f"{case}.{key}": value for case in CASES for key, value in run(ref, case).items()}
    settings = {
        "class": "VectorQuantizer",
        "beta": 0.25,
        "entropy_loss_ratio": 0.0,
        "codebook_weight": 1.0,
        "cases": {c: {"n_e": k, "e_dim": d, "QB_type": b} for c, (k, d, b, _) in CASES.items()},
        "p4_bridge": P4,
        "init": {"n_e": INIT[0], "e_dim": INIT[1], "QB_type": INIT[2], "seeds": list(INIT_SEEDS)},
        "schedule": schedule,
    }
    write_fixture(
        "vqbridge",
        {**tensors, **init_states(ref), "schedule": schedule_factors(args.checkout, schedule)},
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[*FILES, TRAIN, SCRIPT],
        settings=settings,
        out=args.out,
    )


if __name__ == "__main__":
    main()
