"""Fixtures for `leech` from zhaoyue-zephyrus/bsq-vit (Λ24-SQ).

The reference's `VectorQuantizer` (`transcoder/models/quantizer/vq.py`) runs as its Λ24-SQ
config builds it (`l2_norm: True`, `n_embed: 196560`, `embed_dim: 24`, frozen codebook, the
model's default `beta`), on vqbench's Leech vectors: the repository's codebook file
(`cache/leech_lattices_normalized.npy`) is not in its git history as a readable blob, and the
issue asks for the codebook to be built. The raw integer vectors (squared norm 32) are given,
so the reference's own normalisation makes them unit vectors. The settings also record what the
config and `VITVQModel` say of the loss (`codebook_weight`, `beta`).

    python -m tools.reference_fixtures.leech --checkout /tmp/ref/bsq-vit  (from the repository root)
"""

from __future__ import annotations

import ast
from pathlib import Path

import torch
import yaml
from vqbench_quantizers.leech import leech_minimal_vectors

from tools.reference_fixtures.common import load_module, parse_args, require, write_fixture

REPOSITORY = "zhaoyue-zephyrus/bsq-vit"
CONFIG = "configs/tokenizer/imagenet_256x256_l24sq_stylegan_f8_fp16.yaml"
QUANTIZER = "transcoder/models/quantizer/vq.py"
MODEL = "transcoder/models/bsqvit.py"


def model_default(checkout: Path, cls: str, argument: str):
    """The default of `argument` in `cls.__init__` of the reference model file."""
    tree = ast.parse((checkout / MODEL).read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args.args[-len(init.args.defaults) :]
    default = next(d for a, d in zip(args, init.args.defaults, strict=True) if a.arg == argument)
    return ast.literal_eval(default)


def main() -> None:
    args = parse_args("Write the leech (Λ24-SQ) reference fixtures.", REPOSITORY)
    require(args.checkout, CONFIG, QUANTIZER)
    config = yaml.safe_load((args.checkout / CONFIG).read_text())
    model, loss = config["model"]["params"], config["loss"]["params"]
    beta = model.get("beta", model_default(args.checkout, "VITVQModel", "beta"))
    vq = load_module(args.checkout, QUANTIZER)
    quantizer = vq.VectorQuantizer(
        model["n_embed"],
        model["embed_dim"],
        l2_norm=model["l2_norm"],
        beta=beta,
        input_format="blc",
    )
    with torch.no_grad():
        quantizer.embedding.weight.copy_(leech_minimal_vectors().float())
    quantizer.embedding.weight.requires_grad = not model["freeze_codebook"]
    quantizer.train()

    generator = torch.Generator().manual_seed(0)
    h = torch.randn(2, 96, model["embed_dim"], generator=generator)
    upstream = torch.randn(h.shape, generator=generator)
    tensors = {"h": h, "upstream": upstream}
    for target in ("output", "loss"):
        x = h.clone().requires_grad_(True)
        z_q, quant_loss, info = quantizer(x)
        objective = (z_q * upstream).sum() if target == "output" else quant_loss
        objective.backward()
        tensors[f"grad_{target}"] = x.grad
    tensors.update(z_q=z_q.detach(), loss=quant_loss.detach(), indices=info["indices"])
    write_fixture(
        "leech",
        tensors,
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[CONFIG, QUANTIZER, MODEL],
        settings={
            "n_embed": model["n_embed"],
            "embed_dim": model["embed_dim"],
            "l2_norm": model["l2_norm"],
            "freeze_codebook": model["freeze_codebook"],
            "beta": beta,
            "codebook_weight": loss["codebook_weight"],
            "codebook": "vqbench_quantizers.leech.leech_minimal_vectors (integer, norm 32)",
        },
        out=args.out,
    )


if __name__ == "__main__":
    main()
