"""Fixtures for `ibq` from SEED-Voken's IBQ (TencentARC/SEED-Voken).

Run from the repository root::

    python -m tools.reference_fixtures.ibq --checkout /tmp/ref/SEED-Voken

`src/IBQ/modules/vqvae/quantize.py::IndexPropagationQuantize` in training mode with the
settings of `configs/IBQ/gpu/imagenet_ibqgan_16384.yaml` (`beta`, `entropy_temperature`,
`sample_minimization_weight`, `batch_maximization_weight`; its loss module weighs
`quant_loss_weight * quant_loss + entropy_loss_weight * entropy_loss`). The codebook is the
module's own `nn.Embedding` draw (N(0, 1)); 16 codes of 5 channels, a (2, 5, 3, 4) input scaled
so that the softmax at temperature 0.01 is neither one-hot nor flat. The fixture records the
input, the codebook, the indices, `z_q`, each loss term, the weighted loss and the gradients
of `loss + <z_q, upstream>` with respect to the input and the codebook; and the initial
codebooks of 4 seeds (a test compares their distribution).
"""

from __future__ import annotations

import torch
import yaml

from tools.reference_fixtures.common import load_module, parse_args, write_fixture

REPOSITORY = "TencentARC/SEED-Voken"
FILE = "src/IBQ/modules/vqvae/quantize.py"
CONFIG = "configs/IBQ/gpu/imagenet_ibqgan_16384.yaml"
K, D, SHAPE = 16, 5, (2, 5, 3, 4)


def recipe(checkout) -> dict:
    model = yaml.safe_load((checkout / CONFIG).read_text())["model"]["init_args"]
    loss = model["lossconfig"]["params"]
    return {
        "beta": float(model["beta"]),
        "entropy_temperature": float(model["entropy_temperature"]),
        "sample_minimization_weight": float(model["sample_minimization_weight"]),
        "batch_maximization_weight": float(model["batch_maximization_weight"]),
        "quant_loss_weight": float(loss["quant_loss_weight"]),
        "entropy_loss_weight": float(loss["entropy_loss_weight"]),
    }


def build(ref, s: dict, size: int, dim: int):
    return ref.IndexPropagationQuantize(
        size,
        dim,
        s["beta"],
        use_entropy_loss=True,
        entropy_temperature=s["entropy_temperature"],
        sample_minimization_weight=s["sample_minimization_weight"],
        batch_maximization_weight=s["batch_maximization_weight"],
    ).train()


def run(ref, s: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = build(ref, s, K, D)
    z = (torch.randn(SHAPE) * 0.02).requires_grad_()
    upstream = torch.randn(SHAPE)
    codebook = module.embedding.weight.detach().clone()
    z_q, (quant_loss, sample_h, avg_h, entropy_loss), (_, _, indices) = module(z)
    loss = s["quant_loss_weight"] * quant_loss + s["entropy_loss_weight"] * entropy_loss
    torch.autograd.backward([z_q, loss], [upstream, torch.ones(())])
    codebooks = []
    for seed in range(4):
        torch.manual_seed(seed)
        codebooks.append(build(ref, s, 64, 8).embedding.weight.detach().clone())
    return {
        "z": z.detach(),
        "upstream": upstream,
        "codebook": codebook,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "quant_loss": quant_loss.detach(),
        "per_sample_entropy": sample_h.detach(),
        "codebook_entropy": avg_h.detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
        "grad_codebook": module.embedding.weight.grad,
        "initial_codebooks": torch.stack(codebooks),
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_ibq")
    settings = {"codebook_size": K, "dim": D, **recipe(args.checkout)}
    write_fixture(
        "ibq",
        run(ref, settings),
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE, CONFIG, "src/IBQ/modules/losses/vqperceptual.py"],
        settings=settings,
        out=args.out,
    )


if __name__ == "__main__":
    main()
