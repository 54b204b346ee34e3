"""Fixture for the adapter `llamagen_vq16`: LlamaGen's `VQModel` with random weights.

Run from the repository root::

    python -m tools.reference_fixtures.adapter_llamagen_vq16 --checkout /tmp/ref/LlamaGen

Loads only `tokenizer/tokenizer_image/vq_model.py` (it imports torch alone) and builds its
`VQModel(ModelArgs(...))` as `VQ_16` does, small: `ModelArgs` sets the codebook (64 codes of
dimension 8, l2-normalised, with the `codebook_used` buffer of `codebook_show_usage`), the
channel multipliers ([1, 1]: two resolution levels) and `z_channels` (16); the width (`ch`,
128 in the file) and `num_res_blocks` (2) are arguments of the file's `Encoder`/`Decoder`
that `VQModel` leaves at their defaults, so the module's `Encoder`/`Decoder` names are bound
to the same classes with `ch=32, num_res_blocks=1` before `VQModel` is built. GroupNorm scales
and shifts are drawn at random (1 and 0 would hide a swapped norm), and the raw codes with
norms from 0.3 to 3 (the file normalises them at initialisation only, training does not);
all weights are rounded to float16 and stored so (the file stays under 1 MB; the model ran
with exactly these values).

Writes `llamagen_vq16.pt` (the layout of LlamaGen's `vq_train.py`: `model`, `optimizer`,
`discriminator`, `optimizer_disc`, `steps`, `args`) and `llamagen_vq16.{safetensors,json}`:
the images, the latents after `quant_conv`, the indices, the reconstruction of
`model(images)` and that of `decode_code(indices)`; its json also holds the shape of every
weight of the file's `VQ_16` and `VQ_8`, which the adapter's presets must match.
"""

from __future__ import annotations

import functools

import torch

from tools.reference_fixtures.common import (
    half,
    load_module,
    parse_args,
    require,
    smooth_images,
    write_fixture,
)

REPOSITORY = "FoundationVision/LlamaGen"
FILE = "tokenizer/tokenizer_image/vq_model.py"
NAME = "llamagen_vq16"
BATCH, RESOLUTION = 2, 32
MODEL_ARGS = {
    "codebook_size": 64,
    "codebook_embed_dim": 8,
    "codebook_l2_norm": True,
    "codebook_show_usage": True,
    "encoder_ch_mult": [1, 1],
    "decoder_ch_mult": [1, 1],
    "z_channels": 16,
}
WIDTH = {"ch": 32, "num_res_blocks": 1}


def build(ref) -> torch.nn.Module:
    encoder, decoder = ref.Encoder, ref.Decoder
    ref.Encoder = functools.partial(encoder, **WIDTH)
    ref.Decoder = functools.partial(decoder, **WIDTH)
    try:
        torch.manual_seed(0)
        model = ref.VQModel(ref.ModelArgs(**MODEL_ARGS)).eval()
    finally:
        ref.Encoder, ref.Decoder = encoder, decoder
    with torch.no_grad():  # trained codes are not unit vectors: their norms must not matter
        codes = model.quantize.embedding.weight
        codes.copy_(torch.randn_like(codes) * torch.empty(len(codes), 1).uniform_(0.3, 3.0))
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1 + 0.1 * torch.randn_like(module.weight))
                module.bias.copy_(0.1 * torch.randn_like(module.bias))
    model.load_state_dict(half(model.state_dict()))
    return model


def released_shapes(ref) -> dict[str, dict[str, list[int]]]:
    """The shape of every weight of the file's `VQ_16` and `VQ_8` (built on the meta device),
    which the adapter's presets must match."""
    shapes = {}
    for name, build_model in (("VQ_16", ref.VQ_16), ("VQ_8", ref.VQ_8)):
        with torch.device("meta"):
            state = build_model().state_dict()
        shapes[name] = {k: list(v.shape) for k, v in state.items()}
    return shapes


@torch.no_grad()
def run(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    latents = model.quant_conv(model.encoder(x))
    quant, _, (_, _, indices) = model.encode(x)
    b, c, h, w = quant.shape
    decoded = model.decode_code(indices, (b, c, h, w))
    reconstruction, _ = model(x)
    return {
        "images": x,
        "latents": latents,
        "indices": indices.reshape(b, h, w),
        "reconstruction": reconstruction,
        "decoded": decoded,
    }


def checkpoint(model: torch.nn.Module) -> dict:
    """What LlamaGen's `vq_train.py` saves: `model`, `optimizer`, `discriminator`,
    `optimizer_disc`, `steps`, `args` (an argparse namespace there, a dict here so that the
    file loads without trust); `ema` (trained with EMA) is left out to keep the file small."""
    discriminator = {"conv.weight": torch.zeros(4, 3, 3, 3, dtype=torch.float16)}
    return {
        "model": half(model.state_dict()),
        "optimizer": {"state": {}, "param_groups": []},
        "discriminator": discriminator,
        "optimizer_disc": {"state": {}, "param_groups": []},
        "steps": 0,
        "args": {"vq_model": "VQ-16"},
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, FILE)
    ref = load_module(args.checkout, FILE, "reference_llamagen_vq_model")
    model = build(ref)
    tensors = run(model, smooth_images(BATCH, RESOLUTION))
    settings = {"class": "VQModel", "model_args": MODEL_ARGS, "encoder_decoder": WIDTH}
    settings["released_shapes"] = released_shapes(ref)
    write_fixture(
        NAME,
        tensors,
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE],
        settings=settings,
        out=args.out,
    )
    torch.save(checkpoint(model), args.out / f"{NAME}.pt")
    print(f"wrote {args.out / NAME}.pt")


if __name__ == "__main__":
    main()
