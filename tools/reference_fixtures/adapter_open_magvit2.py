"""Fixture for the `open_magvit2` adapter from Open-MAGVIT2's `VQModel` (TencentARC/SEED-Voken).

Run from the repository root::

    python -m tools.reference_fixtures.adapter_open_magvit2 --checkout /tmp/ref/SEED-Voken

Builds the official `src/Open_MAGVIT2/models/lfqgan.py::VQModel` (its improved
Encoder/Decoder and `LFQ`, `use_ema=True` as in the ImageNet configs) with small
hyperparameters of the same code (`SETTINGS`), imported from the checkout with `lightning`
and `main` replaced by stand-ins (`common.import_lightning_model`: no Lightning install; the
loss config builds a small stand-in discriminator under `loss.`). The random weights are
perturbed and rounded to float16 values; the EMA copy differs from the training weights for
the parameters `EMA_DIFFERS` accepts. It writes `adapter_open_magvit2.ckpt` (a Lightning
checkpoint: `state_dict` with `loss.` and `model_ema.` keys, float16) and the official outputs
on fixed images: the encoder's latents, the indices and `decode(quant)` of the evaluation
path (`encode` and `decode` inside `ema_scope()`, as `evaluation_image.py` runs), the decoder
on `get_codebook_entry(indices)`, the indices and reconstruction with the training weights,
the factorised indices of `LFQ(token_factorization=True)` on the same latents, and the indices
and reconstruction of `lfqgan_pretrain.py::VQModel` (the `pretrain_*` tokenizers' class) with
the same state dict loaded strictly.
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
NAME = "adapter_open_magvit2"
FILES = [
    "src/Open_MAGVIT2/models/lfqgan.py",
    "src/Open_MAGVIT2/modules/diffusionmodules/improved_model.py",
    "src/Open_MAGVIT2/modules/vqvae/lookup_free_quantize.py",
    "src/Open_MAGVIT2/modules/ema.py",
]
DDCONFIG = dict(SMALL_DDCONFIG)
#: `VQModel`'s arguments besides the loss and `use_ema` (both classes').
INIT_ARGS = {
    "ddconfig": DDCONFIG,
    "n_embed": 2 ** DDCONFIG["z_channels"],
    "embed_dim": DDCONFIG["z_channels"],
    "sample_minimization_weight": 1.0,
    "batch_maximization_weight": 1.0,
}
FACTORIZED_BITS = [3, 5]
#: The adapter's presets and the official configs of the released tokenizers they stand for.
RELEASED = {
    "imagenet_128_L": "configs/Open-MAGVIT2/gpu/imagenet_lfqgan_128_L.yaml",
    "imagenet_256_L": "configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml",
    "pretrain_256_262144": "configs/Open-MAGVIT2/gpu/pretrain_lfqgan_256_262144.yaml",
    "pretrain_256_16384": "configs/Open-MAGVIT2/gpu/pretrain_lfqgan_256_16384.yaml",
}
PRETRAIN = "src/Open_MAGVIT2/models/lfqgan_pretrain.py"


def EMA_DIFFERS(name: str) -> bool:  # noqa: N802 (a constant predicate)
    return any(part in name for part in ("conv_out", "conv_in", "adaptive"))


def build(lfqgan):
    return lightning_model(lfqgan.VQModel, EMA_DIFFERS, **INIT_ARGS)


def pretrain_outputs(lfqgan_pretrain, model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The pre-training `VQModel` (`lfqgan_pretrain.py`, the `pretrain_*` tokenizers) loads the
    same state dict strictly; its evaluation path's indices and reconstruction."""
    torch.manual_seed(0)
    pretrain = lfqgan_pretrain.VQModel(**INIT_ARGS, lossconfig={"target": "loss"}, use_ema=True)
    pretrain = pretrain.eval()
    torch.nn.Module.load_state_dict(pretrain, model.state_dict(), strict=True)
    with torch.no_grad(), pretrain.ema_scope():
        quant, _, indices, _ = pretrain.encode(x)
        return {"indices_pretrain": indices, "reconstruction_pretrain": pretrain.decode(quant)}


def encode(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    quant, _, indices, _ = model.encode(x)
    return quant, indices


def codes(model, indices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`get_codebook_entry` of the indices, as the official decoding of indices."""
    b, h, w = shape
    return model.quantize.get_codebook_entry(
        indices.reshape(b, -1), (b, h, w, DDCONFIG["z_channels"]), None
    )


@torch.no_grad()
def run(model, lfq_module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    factor = 2 ** (len(DDCONFIG["ch_mult"]) - 1)
    out = lightning_outputs(
        model, x, factor, encode=encode, latents=lambda model, x: model.encoder(x), codes=codes
    )
    shape = out["indices"].shape
    factorized = lfq_module.LFQ(
        dim=DDCONFIG["z_channels"],
        codebook_size=2 ** DDCONFIG["z_channels"],
        token_factorization=True,
        factorized_bits=FACTORIZED_BITS,
    ).eval()
    _, _, (pre, post) = factorized(out["latents"])
    out["indices_factorized"] = torch.stack([pre.reshape(shape), post.reshape(shape)], -1)
    return out


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, *FILES, PRETRAIN, *RELEASED.values())
    lfqgan, lfq_module, lfqgan_pretrain = import_lightning_model(
        args.checkout,
        "src.Open_MAGVIT2.models.lfqgan",
        "src.Open_MAGVIT2.modules.vqvae.lookup_free_quantize",
        "src.Open_MAGVIT2.models.lfqgan_pretrain",
    )
    model, differs = build(lfqgan)
    x = uniform_images(SMALL_IMAGES)
    tensors = {"images": x, **run(model, lfq_module, x)}
    pretrain = pretrain_outputs(lfqgan_pretrain, model, x)
    pretrain["indices_pretrain"] = pretrain["indices_pretrain"].reshape(tensors["indices"].shape)
    tensors |= pretrain
    settings = {
        "class": "VQModel",
        "ddconfig": DDCONFIG,
        "n_embed": INIT_ARGS["n_embed"],
        "embed_dim": INIT_ARGS["embed_dim"],
        "use_ema": True,
        "factorized_bits": FACTORIZED_BITS,
        "checkpoint": f"{NAME}.ckpt",
        "ema_differs": differs,
        "released": released_configs(args.checkout, RELEASED),
    }
    write_lightning_fixture(
        model, NAME, tensors, repository=REPOSITORY, checkout=args.checkout,
        files=[*FILES, PRETRAIN], settings=settings, out=args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
