"""Fixtures for `lfq` from Open-MAGVIT2 (TencentARC/SEED-Voken).

Run from the repository root::

    python -m tools.reference_fixtures.lfq --checkout /tmp/ref/SEED-Voken

`src/Open_MAGVIT2/modules/vqvae/lookup_free_quantize.py::LFQ` in training mode, with the loss
weights of `configs/Open-MAGVIT2/gpu/imagenet_lfqgan_128_L.yaml` (its loss module adds
`codebook_weight * entropy_aux_loss + commit_weight * commitment`; `codebook_enlarge_ratio`
is 0 there). Open-MAGVIT2 has no projection (`dim` = bits). The fixture records the input,
the indices, `z_q`, each loss term (per-sample entropy, codebook entropy, commitment), the
weighted loss and the gradient of `loss + <z_q, upstream>` with respect to the input.
"""

from __future__ import annotations

import torch
import yaml

from tools.reference_fixtures.common import (
    load_module,
    parse_args,
    surrogate_backward,
    write_fixture,
)

REPOSITORY = "TencentARC/SEED-Voken"
FILE = "src/Open_MAGVIT2/modules/vqvae/lookup_free_quantize.py"
CONFIG = "configs/Open-MAGVIT2/gpu/imagenet_lfqgan_128_L.yaml"
BITS, SHAPE = 4, (2, 4, 3, 3)


def recipe(checkout) -> dict:
    model = yaml.safe_load((checkout / CONFIG).read_text())["model"]["init_args"]
    loss = model["lossconfig"]["params"]
    return {
        "codebook_weight": loss["codebook_weight"],
        "commit_weight": loss["commit_weight"],
        "codebook_enlarge_ratio": loss["codebook_enlarge_ratio"],
        "sample_minimization_weight": model["sample_minimization_weight"],
        "batch_maximization_weight": model["batch_maximization_weight"],
    }


def run(ref, settings: dict) -> dict[str, torch.Tensor]:
    quantizer = ref.LFQ(
        dim=BITS,
        codebook_size=2**BITS,
        sample_minimization_weight=settings["sample_minimization_weight"],
        batch_maximization_weight=settings["batch_maximization_weight"],
    ).train()
    generator = torch.Generator().manual_seed(0)
    # Scaled so that the softmax at temperature 0.01 is neither one-hot nor flat.
    z = torch.randn(SHAPE, generator=generator) * 0.02
    upstream = torch.randn(SHAPE, generator=generator) * 0.01
    z.requires_grad_(True)
    (z_q, entropy_aux_loss, indices), breakdown = quantizer(z, return_loss_breakdown=True)
    loss = (
        settings["codebook_weight"] * entropy_aux_loss
        + settings["commit_weight"] * breakdown.commitment
    )
    surrogate_backward(z_q, loss, upstream)
    return {
        "z": z.detach(),
        "upstream": upstream,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "per_sample_entropy": breakdown.per_sample_entropy.detach(),
        "codebook_entropy": breakdown.codebook_entropy.detach(),
        "commitment": breakdown.commitment.detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_open_magvit2_lfq")
    settings = {"class": "LFQ", "codebook_size": 2**BITS, "dim": BITS, **recipe(args.checkout)}
    settings["temperature"] = 0.01  # entropy_loss's default, which LFQ.forward uses
    write_fixture(
        "open_magvit2_lfq",
        run(ref, settings),
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE, CONFIG],
        settings=settings,
        out=args.out,
    )


if __name__ == "__main__":
    main()
