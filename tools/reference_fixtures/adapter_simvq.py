"""Fixture for the `simvq` adapter from SimVQ's image tokenizer (youngsheen/SimVQ).

Run from the repository root::

    python -m tools.reference_fixtures.adapter_simvq --checkout /tmp/ref/SimVQ

Builds the official `taming/models/vq.py::VQModel` with the quantizer of the ImageNet config
(`taming.modules.vqvae.quantize.SimVQ`, `use_ema=True`) and small hyperparameters of the same
code (`DDCONFIG`), imported from the checkout with `lightning` and `main` replaced by stand-ins
(`common.import_lightning_model`: no Lightning install; the loss config builds a small stand-in
discriminator under `loss.`). The trainable weights are perturbed, all rounded to float16 values;
the EMA copy differs from the training weights for the parameters `EMA_DIFFERS` accepts (the
frozen basis has no EMA copy). It writes `adapter_simvq.ckpt` (a Lightning checkpoint:
`state_dict` with `loss.` and `model_ema.` keys, float16) and the official outputs on fixed
images: the latents, the indices and `decode(quant)` of the evaluation path (`encode` and
`decode` inside `ema_scope()`, as `evaluation.py` runs), the indices and reconstruction with the
training weights, and `decoded`: the decoder on the codes of the indices. The official
`SimVQ.get_codebook_entry` looks the indices up in the unprojected basis (`self.embedding`),
not in the codebook the forward quantizes to (`embedding_proj(embedding.weight)`); `decoded`
uses the latter, as the forward does. `released` records the repository's ImageNet config and
the codebook sizes of the README's released ImageNet tokenizers.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

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

REPOSITORY = "youngsheen/SimVQ"
NAME = "adapter_simvq"
FILES = [
    "taming/models/vq.py",
    "taming/modules/diffusionmodules/improved_model.py",
    "taming/modules/vqvae/quantize.py",
    "taming/modules/ema.py",
]
CONFIG = "configs/imagenet_simvq_128_B.yaml"
DDCONFIG = dict(SMALL_DDCONFIG)
QUANTCONFIG = {
    "target": "taming.modules.vqvae.quantize.SimVQ",
    "params": {"n_e": 32, "e_dim": 8, "beta": 0.25, "legacy": False},
}


def EMA_DIFFERS(name: str) -> bool:  # noqa: N802 (a constant predicate)
    return any(part in name for part in ("conv_out", "conv_in", "quantize"))


def build(vq):
    return lightning_model(vq.VQModel, EMA_DIFFERS, ddconfig=DDCONFIG, quantconfig=QUANTCONFIG)


def encode(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    quant, _, indices, _ = model.encode(x)
    return quant, indices


def codes(model, indices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The codes of `indices` in the codebook the forward quantizes to."""
    codebook = model.quantize.embedding_proj(model.quantize.embedding.weight)
    return F.embedding(indices.reshape(shape), codebook).permute(0, 3, 1, 2).contiguous()


def run(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    factor = 2 ** (len(DDCONFIG["ch_mult"]) - 1)
    return lightning_outputs(
        model, x, factor, encode=encode, latents=lambda model, x: model.encoder(x), codes=codes
    )


def releases(checkout) -> dict[str, int]:
    """The README's released ImageNet tokenizers: `{"simvq_65k": 65536, ...}`."""
    text = (checkout / "README.md").read_text()
    rows = re.findall(r"\|SimVQ \(ours\) \| ([\d,]+) \|.*?/vq_log/(simvq_\w+)\)", text)
    return {name: int(size.replace(",", "")) for size, name in rows}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, *FILES, CONFIG, "README.md")
    (vq,) = import_lightning_model(args.checkout, "taming.models.vq")
    model, differs = build(vq)
    x = uniform_images(SMALL_IMAGES)
    tensors = {"images": x, **run(model, x)}
    settings = {
        "class": "VQModel",
        "ddconfig": DDCONFIG,
        "quantconfig": QUANTCONFIG,
        "use_ema": True,
        "checkpoint": f"{NAME}.ckpt",
        "ema_differs": differs,
        "released": released_configs(args.checkout, {"repository": CONFIG})["repository"],
        "released_codebook_sizes": releases(args.checkout),
    }
    write_lightning_fixture(
        model, NAME, tensors, repository=REPOSITORY, checkout=args.checkout, files=FILES,
        settings=settings, out=args.out,
    )  # fmt: skip


if __name__ == "__main__":
    main()
