"""Fixtures for `simvq` from the official SimVQ code (youngsheen/SimVQ).

Run from the repository root::

    python -m tools.reference_fixtures.simvq --checkout /tmp/ref/SimVQ

`taming.modules.vqvae.quantize.SimVQ` as the ImageNet config builds it (`beta` and `legacy`
read from `configs/imagenet_simvq_128_B.yaml`; the loss module multiplies the quantizer's
loss by `commit_weight` from the same file). One training forward records the input, the
frozen basis, the linear map, the indices, `z_q`, the loss and the gradients of
`loss + <z_q, upstream>` with respect to the input and the map's weight and bias. `init` holds
statistics of the initial codebook `C = W C^ + b` over seeds 0-3 (a fresh module per seed).
"""

from __future__ import annotations

import torch
import yaml

from tools.reference_fixtures.common import (
    init_statistics,
    load_module,
    parse_args,
    surrogate_backward,
    write_fixture,
)

REPOSITORY = "youngsheen/SimVQ"
FILE = "taming/modules/vqvae/quantize.py"
CONFIG = "configs/imagenet_simvq_128_B.yaml"
K, D, SHAPE = 16, 4, (2, 4, 3, 3)
INIT_K, INIT_D, SEEDS = 512, 8, range(4)


def recipe(checkout) -> dict:
    model = yaml.safe_load((checkout / CONFIG).read_text())["model"]["init_args"]
    quant = model["quantconfig"]["params"]
    loss = model["lossconfig"]["params"]
    return {
        "beta": quant["beta"],
        "legacy": quant["legacy"],
        "commit_weight": loss["commit_weight"],
    }


def run(ref, settings: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    quantizer = ref.SimVQ(K, D, beta=settings["beta"], legacy=settings["legacy"])
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(SHAPE, generator=generator) * 0.5
    upstream = torch.randn(SHAPE, generator=generator) * 0.01
    before = {
        "core": quantizer.embedding.weight.detach().clone(),
        "proj_weight": quantizer.embedding_proj.weight.detach().clone(),
        "proj_bias": quantizer.embedding_proj.bias.detach().clone(),
    }
    z.requires_grad_(True)
    (z_q, _, indices), breakdown = quantizer(z)
    loss = settings["commit_weight"] * breakdown.commitment
    surrogate_backward(z_q, loss, upstream)
    return {
        **before,
        "z": z.detach(),
        "upstream": upstream,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
        "grad_proj_weight": quantizer.embedding_proj.weight.grad,
        "grad_proj_bias": quantizer.embedding_proj.bias.grad,
    }


def init_stats(ref) -> torch.Tensor:
    stats = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        quantizer = ref.SimVQ(INIT_K, INIT_D)
        with torch.no_grad():
            stats.append(init_statistics(quantizer.embedding_proj(quantizer.embedding.weight)))
    return torch.stack(stats)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_simvq_quantize")
    settings = {"class": "SimVQ", "n_e": K, "e_dim": D, **recipe(args.checkout)}
    settings |= {"init_codebook_size": INIT_K, "init_dim": INIT_D, "init_seeds": list(SEEDS)}
    write_fixture(
        "simvq",
        {**run(ref, settings), "init": init_stats(ref)},
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE, CONFIG],
        settings=settings,
        out=args.out,
    )


if __name__ == "__main__":
    main()
