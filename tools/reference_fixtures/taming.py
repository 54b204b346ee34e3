"""Fixtures for `vanilla` and `ema` from taming-transformers (VQGAN's own quantizers).

Run from the repository root::

    python -m tools.reference_fixtures.taming --checkout /tmp/ref/taming-transformers

`VectorQuantizer2` (what `taming.models.vqgan.VQModel` builds) is run with `legacy=False` (the
fixed loss: codebook 1, commitment beta) and with `legacy=True` (its default, which the
released VQGAN model uses: commitment 1, codebook beta); `EMAVectorQuantizer` one training
forward (its EMA update happens inside the forward). Each run records the input, the weights
before, the indices, `z_q`, the loss, and the gradients of `loss + <z_q, upstream>` with
respect to the input and the codebook; the EMA run also the codebook, counts and sums after
its update. `init_*` hold initial-codebook statistics over seeds 0-3 at a larger size.
"""

from __future__ import annotations

import torch

from tools.reference_fixtures.common import (
    init_statistics,
    load_module,
    parse_args,
    surrogate_backward,
    write_fixture,
)

REPOSITORY = "CompVis/taming-transformers"
FILE = "taming/modules/vqvae/quantize.py"
K, D, SHAPE = 16, 4, (2, 4, 3, 3)
INIT_K, INIT_D, SEEDS = 512, 8, range(4)


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(SHAPE, generator=generator) * 0.1
    upstream = torch.randn(SHAPE, generator=generator) * 0.01
    return z, upstream


def vector_quantizer2(ref, legacy: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    quantizer = ref.VectorQuantizer2(K, D, beta=0.25, legacy=legacy)
    weight = quantizer.embedding.weight.detach().clone()
    z, upstream = inputs()
    z.requires_grad_(True)
    z_q, loss, (_, _, indices) = quantizer(z)
    surrogate_backward(z_q, loss, upstream)
    return {
        "z": z.detach(),
        "upstream": upstream,
        "weight": weight,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
        "grad_weight": quantizer.embedding.weight.grad,
    }


def ema_vector_quantizer(ref) -> dict[str, torch.Tensor]:
    # EMAVectorQuantizer.__init__ reads the free names `codebook_dim` and `num_tokens` (a bug
    # of the file: its arguments are `embedding_dim` and `n_embed`); the module globals
    # supply them, the rest of the class is run as written.
    ref.codebook_dim, ref.num_tokens = D, K
    torch.manual_seed(0)
    quantizer = ref.EMAVectorQuantizer(n_embed=K, embedding_dim=D, beta=0.25).train()
    weight = quantizer.embedding.weight.detach().clone()
    z, upstream = inputs(1)
    z = z * 10  # codes are N(0, 1): inputs on their scale use several of them
    z.requires_grad_(True)
    z_q, loss, (_, _, indices) = quantizer(z)
    surrogate_backward(z_q, loss, upstream)
    return {
        "z": z.detach(),
        "upstream": upstream,
        "weight": weight,
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "loss": loss.detach(),
        "grad_z": z.grad,
        "weight_after": quantizer.embedding.weight.detach().clone(),
        "cluster_size_after": quantizer.embedding.cluster_size.detach().clone(),
        "embed_avg_after": quantizer.embedding.embed_avg.detach().clone(),
    }


def init_stats(ref) -> dict[str, torch.Tensor]:
    ref.codebook_dim, ref.num_tokens = INIT_D, INIT_K
    vanilla, ema = [], []
    for seed in SEEDS:
        torch.manual_seed(seed)
        vanilla.append(init_statistics(ref.VectorQuantizer2(INIT_K, INIT_D, 0.25).embedding.weight))
        torch.manual_seed(seed)
        quantizer = ref.EMAVectorQuantizer(n_embed=INIT_K, embedding_dim=INIT_D, beta=0.25)
        ema.append(init_statistics(quantizer.embedding.weight))
    return {"init_vanilla": torch.stack(vanilla), "init_ema": torch.stack(ema)}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_taming_quantize")
    common = {"repository": REPOSITORY, "checkout": args.checkout, "files": [FILE], "out": args.out}
    stats = init_stats(ref)
    init = {"init_codebook_size": INIT_K, "init_dim": INIT_D, "init_seeds": list(SEEDS)}
    for name, legacy in (("taming_vanilla", False), ("taming_vanilla_legacy", True)):
        settings = {"class": "VectorQuantizer2", "n_e": K, "e_dim": D, "beta": 0.25}
        write_fixture(
            name,
            {**vector_quantizer2(ref, legacy), "init": stats["init_vanilla"]},
            settings={**settings, "legacy": legacy, **init},
            **common,
        )
    settings = {"class": "EMAVectorQuantizer", "n_embed": K, "embedding_dim": D, "beta": 0.25}
    settings |= {"decay": 0.99, "eps": 1e-5, **init}
    tensors = {**ema_vector_quantizer(ref), "init": stats["init_ema"]}
    write_fixture("taming_ema", tensors, settings=settings, **common)


if __name__ == "__main__":
    main()
