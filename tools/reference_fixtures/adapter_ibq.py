"""Fixture for the `ibq` adapter from IBQ's tokenizer (TencentARC/SEED-Voken).

Run from the repository root::

    python -m tools.reference_fixtures.adapter_ibq --checkout /tmp/ref/SEED-Voken

Builds the official `src/IBQ/models/ibqgan.py::IBQ` (taming's VQGAN encoder/decoder and
`IndexPropagationQuantize`, `use_ema=True` as in the ImageNet configs) with small
hyperparameters of the same code (`DDCONFIG`), imported from the checkout with `lightning`,
`pytorch_lightning` and `main` replaced by stand-ins (`common.import_lightning_model`: no
Lightning install; the loss config builds a small stand-in discriminator under `loss.`). The
random weights are perturbed and rounded to float16 values; the EMA copy differs from the
training weights for the parameters `EMA_DIFFERS` accepts. It writes `adapter_ibq.ckpt` (a
Lightning checkpoint: `state_dict` with `loss.` and `model_ema.` keys, float16) and the official
outputs on fixed images: the latents after `quant_conv`, the indices and `decode(quant)` of the
evaluation path (`encode` and `decode` inside `ema_scope()`, as `evaluation_image.py` runs), the
decoder on `get_codebook_entry(indices)`, and the indices and reconstruction with the training
weights.
"""

from __future__ import annotations

import torch

from tools.reference_fixtures.common import (
    SMALL_DDCONFIG,
    SMALL_IMAGES,
    import_lightning_model,
    lightning_model,
    lightning_outputs,
    parse_args,
    released_configs,
    require,
    uniform_images,
    write_lightning_fixture,
)

REPOSITORY = "TencentARC/SEED-Voken"
NAME = "adapter_ibq"
FILES = [
    "src/IBQ/models/ibqgan.py",
    "src/IBQ/modules/diffusionmodules/model.py",
    "src/IBQ/modules/vqvae/quantize.py",
    "src/IBQ/modules/ema.py",
]
DDCONFIG = SMALL_DDCONFIG | {"attn_resolutions": [8], "dropout": 0.0}
N_EMBED, EMBED_DIM = 32, 6
#: The adapter's presets and the official configs of the released tokenizers they stand for.
RELEASED = {
    f"imagenet256_{codes}": f"configs/IBQ/gpu/imagenet_ibqgan_{codes}.yaml"
    for codes in (1024, 8192, 16384, 262144)
}
RELEASED |= {
    f"pretrain256_{codes}": f"configs/IBQ/gpu/pretrain_ibqgan_{codes}.yaml"
    for codes in (16384, 262144)
}


def EMA_DIFFERS(name: str) -> bool:  # noqa: N802 (a constant predicate)
    return any(part in name for part in ("conv_out", "conv_in", "quant"))


def build(ibqgan):
    return lightning_model(
        ibqgan.IBQ, EMA_DIFFERS, ddconfig=DDCONFIG, n_embed=N_EMBED, embed_dim=EMBED_DIM,
        use_entropy_loss=True,
    )  # fmt: skip


def encode(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    quant, _, (_, _, indices) = model.encode(x)
    return quant, indices


def run(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return lightning_outputs(
        model, x, 2 ** (len(DDCONFIG["ch_mult"]) - 1), encode=encode,
        latents=lambda model, x: model.quant_conv(model.encoder(x)),
        codes=lambda model, indices, shape: model.quantize.get_codebook_entry(
            indices.flatten(), (*shape, EMBED_DIM)
        ),
    )  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, *FILES, *RELEASED.values())
    (ibqgan,) = import_lightning_model(args.checkout, "src.IBQ.models.ibqgan")
    model, differs = build(ibqgan)
    x = uniform_images(SMALL_IMAGES)
    tensors = {"images": x, **run(model, x)}
    settings = {
        "class": "IBQ",
        "ddconfig": DDCONFIG,
        "n_embed": N_EMBED,
        "embed_dim": EMBED_DIM,
        "use_ema": True,
        "checkpoint": f"{NAME}.ckpt",
        "ema_differs": differs,
        "released": released_configs(args.checkout, RELEASED),
    }
    write_lightning_fixture(
        model, NAME, tensors, repository=REPOSITORY, checkout=args.checkout, files=FILES,
        settings=settings, out=args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
