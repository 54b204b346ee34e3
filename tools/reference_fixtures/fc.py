"""Fixture for `fc` from LlamaGen's factorised, l2-normalised codes (FoundationVision/LlamaGen).

Run from the repository root::

    python -m tools.reference_fixtures.fc --checkout /tmp/ref/LlamaGen

ViT-VQGAN's code is not public; LlamaGen's `VQModel` is the public PyTorch implementation of
its factorised code (`codebook_embed_dim` 8, `codebook_l2_norm`, `commit_loss_beta` 0.25,
`entropy_loss_ratio` 0, read from `ModelArgs`), trained with `vq_loss + commit_loss +
entropy_loss` (`vq_loss.py`). The fixture runs `quant_conv -> VectorQuantizer ->
post_quant_conv` (1x1 convolutions: vqbench's `project_in`/`project_out`) once in training
mode and records the weights, indices, `z_q`, each loss term and the gradients of
`loss + <z_q, upstream>` with respect to the input and every parameter. `init` holds
statistics of the raw initial codebook (seeds 0-3, 512 codes).
"""

from __future__ import annotations

import torch
from torch import nn

from tools.reference_fixtures.common import (
    init_statistics,
    load_module,
    parse_args,
    surrogate_backward,
    write_fixture,
)

REPOSITORY = "FoundationVision/LlamaGen"
FILE = "tokenizer/tokenizer_image/vq_model.py"
K, DIM, SHAPE = 16, 6, (2, 6, 3, 3)
INIT_K, SEEDS = 512, range(4)


def recipe(ref) -> dict:
    args = ref.ModelArgs()
    return {
        "codebook_embed_dim": args.codebook_embed_dim,
        "codebook_l2_norm": args.codebook_l2_norm,
        "commit_loss_beta": args.commit_loss_beta,
        "entropy_loss_ratio": args.entropy_loss_ratio,
    }


def run(ref, s: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    lookup = s["codebook_embed_dim"]
    quant_conv, post_quant_conv = nn.Conv2d(DIM, lookup, 1), nn.Conv2d(lookup, DIM, 1)
    quantizer = ref.VectorQuantizer(
        K, lookup, s["commit_loss_beta"], s["entropy_loss_ratio"], s["codebook_l2_norm"], False
    ).train()
    modules = {"quant_conv": quant_conv, "embedding": quantizer.embedding, "post": post_quant_conv}
    weights = {
        f"{name}.{key}": value.detach().clone()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(SHAPE, generator=generator)
    upstream = torch.randn(SHAPE, generator=generator) * 0.01
    z.requires_grad_(True)
    quant, (vq_loss, commit_loss, entropy_loss, _), (_, _, indices) = quantizer(quant_conv(z))
    z_q = post_quant_conv(quant)
    loss = vq_loss + commit_loss + entropy_loss
    surrogate_backward(z_q, loss, upstream)
    grads = {
        f"grad_{name}.{key}": value.grad
        for name, module in modules.items()
        for key, value in module.named_parameters()
    }
    return {
        **weights,
        **grads,
        "z": z.detach(),
        "upstream": upstream,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "codebook": vq_loss.detach(),
        "commitment": (commit_loss / s["commit_loss_beta"]).detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
    }


def init_stats(ref, s: dict) -> torch.Tensor:
    stats = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        quantizer = ref.VectorQuantizer(INIT_K, s["codebook_embed_dim"], 0.25, 0.0, True, False)
        stats.append(init_statistics(quantizer.embedding.weight))
    return torch.stack(stats)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_llamagen_vq_model")
    s = recipe(ref)
    settings = {"class": "VectorQuantizer", "n_e": K, "dim": DIM, **s}
    settings |= {"init_codebook_size": INIT_K, "init_seeds": list(SEEDS)}
    write_fixture(
        "llamagen_fc",
        {**run(ref, s), "init": init_stats(ref, s)},
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE, "tokenizer/tokenizer_image/vq_loss.py"],
        settings=settings,
        out=args.out,
    )


if __name__ == "__main__":
    main()
