"""Fixtures for `transvq` from CAIR-LAB-WFUSM/NS-VQ-TransVQ (TransVQ, arXiv 2602.18896).

Run from the repository root::

    python -m tools.reference_fixtures.transvq --checkout /tmp/ref/NS-VQ-TransVQ

`NS_Trans_VQ_ImageNet/ldm/modules/transVQ.py`: `SimVQ` with `codebook_transform` a
`CodebookTransformer`, as `configs/vqvae/vq-f4_transvq.yaml` builds it (the transformer's
depth, width, heads, MLP ratio, dropout and positions, and SimVQ's `rotation_trick`, are read
from the config; the loss module's `codebook_weight` multiplies the quantizer's loss;
SimVQ's loss weights, which the config leaves unset, are read from its signature). Each case
runs one training forward on a small codebook and records the frozen codebook, every
weight of the transformer (`w.<name>`), the indices, `z_q`, the loss and the gradients of
`loss + <z_q, upstream>` with respect to the input and every weight (`g.<name>`); the layer
norms' weights are moved off their (1, 0) start so that they matter. Case
`transvq_deep` uses 2 blocks of 2 heads and a narrower width (so that the fixture stays
small), `transvq_sinusoidal` the fixed positions. `transvq_init` holds statistics of the
initial live codebook of the config's transformer, and of the frozen one, over seeds 0-3 (a
fresh module per seed). `transvq_train` trains the module on its own for `TRAIN_STEPS` steps
with the reference's optimiser (`VQModel.configure_optimizers`: Adam over
`quantize.parameters()`, betas (0.5, 0.9)) on fixed inputs and records the start, the indices
and loss of every step and the trained weights (`f.<name>`): what training moves and what it
leaves frozen.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import torch
import yaml

from tools.reference_fixtures.common import (
    init_statistics,
    parse_args,
    require,
    surrogate_backward,
    write_fixture,
)

REPOSITORY = "CAIR-LAB-WFUSM/NS-VQ-TransVQ"
ROOT = "NS_Trans_VQ_ImageNet"
FILE = f"{ROOT}/ldm/modules/transVQ.py"
CONFIG = f"{ROOT}/configs/vqvae/vq-f4_transvq.yaml"
K, D, SHAPE = 16, 4, (2, 4, 3, 3)
#: (name, changes to the config's transformer).
CASES = [
    ("transvq_deep", {"depth": 2, "model_dim": 32, "n_heads": 2}),
    ("transvq_sinusoidal", {"model_dim": 16, "use_learned_pos": False}),
]
INIT_K, INIT_D, SEEDS = 512, 8, range(4)
#: The training case: its transformer, steps, learning rate and Adam's betas (the reference's).
TRAIN_TRANSFORM, TRAIN_STEPS, TRAIN_LR, BETAS = {"model_dim": 32}, 12, 1e-2, (0.5, 0.9)


def import_reference(checkout: Path):
    """`ldm.modules.transVQ` with the ImageNet folder first on the path."""
    sys.path.insert(0, str(checkout / ROOT))
    return importlib.import_module("ldm.modules.transVQ")


def recipe(checkout: Path) -> dict:
    model = yaml.safe_load((checkout / CONFIG).read_text())["model"]["params"]
    quant = model["quantizeconfig"]["params"]
    transform = dict(quant["codebook_transform"]["params"])
    for sized in ("frozen_codebook_dim", "out_dim", "codebook_size"):  # ${...} to the run's
        transform.pop(sized)
    return {
        "rotation_trick": quant["rotation_trick"],
        "codebook_weight": model["lossconfig"]["params"]["codebook_weight"],
        "transform": transform,
        "n_embed": model["n_embed"],
        "embed_dim": model["embed_dim"],
    }


def build(ref, k: int, d: int, settings: dict, transform: dict):
    return ref.SimVQ(
        dim=d,
        codebook_size=k,
        codebook_transform=ref.CodebookTransformer(
            frozen_codebook_dim=d, out_dim=d, codebook_size=k, **transform
        ),
        channel_first=True,
        rotation_trick=settings["rotation_trick"],
    )


def run_case(ref, settings: dict, transform: dict, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    quantizer = build(ref, K, D, settings, transform).train()
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(SHAPE, generator=generator) * 0.5
    upstream = torch.randn(SHAPE, generator=generator) * 0.01
    params = dict(quantizer.code_transform.named_parameters())
    with torch.no_grad():  # layer norms away from (1, 0), so that their weights matter
        for name, value in params.items():
            if "norm" in name:
                value.add_(torch.randn(value.shape, generator=generator) * 0.1)
    before = {f"w.{name}": value.detach().clone() for name, value in params.items()}
    z.requires_grad_(True)
    z_q, loss, (_, _, indices) = quantizer(z)
    loss = settings["codebook_weight"] * loss
    surrogate_backward(z_q, loss, upstream)
    grads = {f"g.{name}": value.grad for name, value in params.items()}
    return {
        **before,
        **grads,
        "frozen": quantizer.frozen_codebook.clone(),
        "z": z.detach(),
        "upstream": upstream,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
    }


def train_case(ref, settings: dict, transform: dict, seed: int) -> dict[str, torch.Tensor]:
    """`TRAIN_STEPS` Adam steps of the module alone on `loss + <z_q, upstream>`."""
    torch.manual_seed(seed)
    quantizer = build(ref, K, D, settings, transform).train()
    params = dict(quantizer.code_transform.named_parameters())
    start = {f"w.{name}": value.detach().clone() for name, value in params.items()}
    frozen = quantizer.frozen_codebook.clone()
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=TRAIN_LR, betas=BETAS)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn((TRAIN_STEPS, *SHAPE), generator=generator) * 0.5
    upstream = torch.randn((TRAIN_STEPS, *SHAPE), generator=generator) * 0.01
    indices, losses = [], []
    for step in range(TRAIN_STEPS):
        optimizer.zero_grad()
        z_q, loss, (_, _, idx) = quantizer(z[step].clone().requires_grad_(True))
        loss = settings["codebook_weight"] * loss
        surrogate_backward(z_q, loss, upstream[step])
        optimizer.step()
        indices.append(idx.flatten())
        losses.append(loss.detach())
    trained = {f"f.{name}": value.detach().clone() for name, value in params.items()}
    return {
        **start,
        **trained,
        "frozen": frozen,
        "frozen_after": quantizer.frozen_codebook.clone(),
        "z": z,
        "upstream": upstream,
        "indices": torch.stack(indices),
        "loss": torch.stack(losses),
    }


def init_stats(ref, settings: dict) -> dict[str, torch.Tensor]:
    """Statistics of the initial live codebook `T(C^)` and of the frozen `C^`, per seed."""
    live, frozen = [], []
    for seed in SEEDS:
        torch.manual_seed(seed)
        quantizer = build(ref, INIT_K, INIT_D, settings, settings["transform"])
        with torch.no_grad():
            live.append(init_statistics(quantizer.codebook))
        frozen.append(init_statistics(quantizer.frozen_codebook))
    return {"init": torch.stack(live), "frozen_init": torch.stack(frozen)}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, FILE, CONFIG)
    ref = import_reference(args.checkout)
    settings = recipe(args.checkout)
    defaults = inspect.signature(ref.SimVQ).parameters  # the weights the config leaves unset
    for weight in ("input_to_quantize_commit_loss_weight", "commitment_weight"):
        settings[weight] = defaults[weight].default
    write = dict(repository=REPOSITORY, checkout=args.checkout, files=[FILE, CONFIG], out=args.out)
    for seed, (name, changes) in enumerate(CASES):
        transform = {**settings["transform"], **changes}
        case = {"codebook_size": K, "dim": D, "case_transform": transform, "seed": seed}
        write_fixture(
            name, run_case(ref, settings, transform, seed), settings={**settings, **case}, **write
        )
    transform = {**settings["transform"], **TRAIN_TRANSFORM}
    case = {"codebook_size": K, "dim": D, "case_transform": transform, "seed": len(CASES)}
    case |= {"steps": TRAIN_STEPS, "lr": TRAIN_LR, "betas": list(BETAS)}
    tensors = train_case(ref, settings, transform, case["seed"])
    write_fixture("transvq_train", tensors, settings={**settings, **case}, **write)
    init = {"init_codebook_size": INIT_K, "init_dim": INIT_D, "init_seeds": list(SEEDS)}
    write_fixture("transvq_init", init_stats(ref, settings), settings={**settings, **init}, **write)


if __name__ == "__main__":
    main()
