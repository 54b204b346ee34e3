"""Fixture for the adapter `taming_vqgan`: taming-transformers' `VQModel` with random weights.

Run from the repository root::

    python -m tools.reference_fixtures.adapter_taming_vqgan --checkout /tmp/ref/taming-transformers

Builds the official `taming.models.vqgan.VQModel` (its `Encoder`/`Decoder` of
`taming/modules/diffusionmodules/model.py`, `VectorQuantizer2` with the legacy loss,
`quant_conv`, `post_quant_conv`) from a small `model.yaml` of the released layout (`ch` 32 with
`ch_mult` [2, 1], so that both channel changes go through `nin_shortcut`; two resolution
levels, one res block each, attention at 16x16, 32x32 images, 64 codes of dimension 8).
GroupNorm scales and shifts and the codes are drawn at random, and all weights rounded to
float16 and stored so, which keeps the checkpoint under 1 MB (the model ran with exactly these
values). The checkout goes on `sys.path`; `vqgan.py` imports `pytorch_lightning` and the
training script's `main.instantiate_from_config`, neither of which the architecture uses: the
first is replaced by a stand-in whose `LightningModule` is `torch.nn.Module`, the second by
the same three lines as `main.py`'s (import `target`, call it with `params`). The training
loss is the official `NLayerDiscriminator` (a small one: `VQLPIPSWithDiscriminator` needs
LPIPS's downloaded VGG weights) so that the checkpoint holds `loss.*` keys the adapter must
ignore.

Writes `taming_vqgan.ckpt` (a Lightning checkpoint: `state_dict`, `epoch`, `global_step`),
`taming_vqgan.yaml` (the config, as released models ship `model.yaml`) and
`taming_vqgan.{safetensors,json}`: the images, the latents after `quant_conv`, the indices
(`sane_index_shape`), the reconstruction of `model(images)` and that of
`decode(get_codebook_entry(indices))`; its json also holds `configs/imagenet_vqgan.yaml`'s
`model.params` and the shape of every weight of that model (built on the meta device), which
the adapter's ImageNet presets must match.
"""

from __future__ import annotations

import importlib
import sys
import types

import torch
import yaml

from tools.reference_fixtures.common import (
    half,
    parse_args,
    require,
    smooth_images,
    write_fixture,
)

REPOSITORY = "CompVis/taming-transformers"
FILES = [
    "taming/models/vqgan.py",
    "taming/modules/diffusionmodules/model.py",
    "taming/modules/vqvae/quantize.py",
    "taming/modules/discriminator/model.py",
    "configs/imagenet_vqgan.yaml",
]
NAME = "taming_vqgan"
BATCH, RESOLUTION = 2, 32
#: `model.params` of a small model in the layout of the released `model.yaml` files.
PARAMS = {
    "embed_dim": 8,
    "n_embed": 64,
    "ddconfig": {
        "double_z": False,
        "z_channels": 16,
        "resolution": RESOLUTION,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [2, 1],
        "num_res_blocks": 1,
        "attn_resolutions": [16],
        "dropout": 0.0,
    },
    "lossconfig": {
        "target": "taming.modules.discriminator.model.NLayerDiscriminator",
        "params": {"input_nc": 3, "ndf": 8, "n_layers": 1},
    },
}


def stand_ins() -> None:
    """`pytorch_lightning` and `main` as far as `vqgan.py` needs them to build `VQModel`."""
    lightning = types.ModuleType("pytorch_lightning")
    lightning.LightningModule = torch.nn.Module
    main = types.ModuleType("main")

    def instantiate_from_config(config):  # main.py's, line for line
        module, cls = config["target"].rsplit(".", 1)
        return getattr(importlib.import_module(module), cls)(**config.get("params", dict()))

    main.instantiate_from_config = instantiate_from_config
    sys.modules.update({"pytorch_lightning": lightning, "main": main})


def randomise_norms(model: torch.nn.Module) -> None:
    """GroupNorm's initial scale 1 and shift 0 would hide a swapped or skipped norm; codes on
    the latents' scale (not U(-1/K, 1/K)) make the indices spread over the codebook."""
    with torch.no_grad():
        model.quantize.embedding.weight.normal_(0.0, 0.3)
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1 + 0.1 * torch.randn_like(module.weight))
                module.bias.copy_(0.1 * torch.randn_like(module.bias))


def imagenet_shapes(checkout, vq_model) -> dict[str, object]:
    """`model.params` of the repository's `configs/imagenet_vqgan.yaml` (the f16 ImageNet
    architecture of the released models) and the shape of every weight of that `VQModel`."""
    params = yaml.safe_load((checkout / "configs" / "imagenet_vqgan.yaml").read_text())
    params = params["model"]["params"]
    params["lossconfig"] = PARAMS["lossconfig"]
    with torch.device("meta"):
        model = vq_model(**params)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items() if not k.startswith("loss.")}
    return {"params": {k: v for k, v in params.items() if k != "lossconfig"}, "shapes": shapes}


@torch.no_grad()
def run(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    latents = model.quant_conv(model.encoder(x))
    _, _, (_, _, indices) = model.quantize(latents)
    b, c, h, w = latents.shape
    from_indices = model.decode(model.quantize.get_codebook_entry(indices.flatten(), (b, h, w, c)))
    reconstruction, _ = model(x)
    return {
        "images": x,
        "latents": latents,
        "indices": indices,
        "reconstruction": reconstruction,
        "decoded": from_indices,
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, *FILES)
    stand_ins()
    sys.path.insert(0, str(args.checkout.resolve()))
    from taming.models.vqgan import VQModel

    torch.manual_seed(0)
    model = VQModel(**PARAMS, sane_index_shape=True).eval()
    randomise_norms(model)
    model.load_state_dict(half(model.state_dict()))  # the weights the file will hold
    tensors = run(model, smooth_images(BATCH, RESOLUTION))
    write_fixture(
        NAME,
        tensors,
        repository=REPOSITORY,
        checkout=args.checkout,
        files=FILES,
        settings={
            "class": "taming.models.vqgan.VQModel",
            "params": PARAMS,
            "imagenet_vqgan": imagenet_shapes(args.checkout, VQModel),
        },
        out=args.out,
    )
    config = {"model": {"target": "taming.models.vqgan.VQModel", "params": PARAMS}}
    (args.out / f"{NAME}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    checkpoint = {"state_dict": half(model.state_dict()), "epoch": 0, "global_step": 0}
    torch.save(checkpoint, args.out / f"{NAME}.ckpt")
    print(f"wrote {args.out / NAME}.{{ckpt,yaml}}")


if __name__ == "__main__":
    main()
