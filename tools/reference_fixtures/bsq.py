"""Fixtures for `bsq` from BSQ-ViT (zhaoyue-zephyrus/bsq-vit).

Run from the repository root::

    python -m tools.reference_fixtures.bsq --checkout /tmp/ref/bsq-vit

`transcoder/models/quantizer/bsq.py::BinarySphericalQuantizer` in training mode, set up as
`transcoder/models/bsqvit.py::VITBSQModel` sets it up (`l2_norm=post_q_l2_norm`, `gamma0`,
`gamma`, `zeta`, `inv_temperature` at the model's defaults) with the settings of
`configs/tokenizer/imagenet_256x256_bsqvit_b18g2_stylegan_f8_fp16.yaml` (`beta: 0.`,
analytical per-sample entropy, `codebook_weight: 0.1` in the loss). The encoder side is the
model's: `quant_embed` (a `nn.Linear` to the bits), `F.normalize`, the quantizer, and
`post_quant_embed` (`nn.Linear` back). Cases: the config's analytical mode (whose codebook
entropy is per bit), the exact codebook entropy (`group` mode, one group of all bits) and
groups of 4 bits, at the config's beta 0 and, to check the commitment term, 0.25.
The fixture records the input, the linear layers' weights, the indices, `z_q`, each loss term,
the loss as the trainer weighs it (`codebook_weight * quantizer loss`) and the gradients of
`loss + <z_q, upstream>` with respect to the input and every parameter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from tools.reference_fixtures.common import load_module, parse_args, write_fixture

REPOSITORY = "zhaoyue-zephyrus/bsq-vit"
FILE = "transcoder/models/quantizer/bsq.py"
CONFIG = "configs/tokenizer/imagenet_256x256_bsqvit_b18g2_stylegan_f8_fp16.yaml"
BITS, DIM, TOKENS = 8, 6, 40
#: case: (group_size, per-sample entropy mode, beta); None: the config's. In `analytical` mode
#: the reference's codebook entropy is that of each bit's batch-mean probability, summed over
#: the bits, whatever `group_size` (its `prob` is replaced by the per-bit one before
#: `avg_prob`): our `entropy_group_size: 1`. In `group` mode it is the grouped entropy.
CASES = {
    "config": (9 if BITS % 9 == 0 else 4, None, None),
    "exact": (BITS, "group", None),
    "group4": (4, "group", None),
    "exact_beta025": (BITS, "group", 0.25),
}


def recipe(checkout) -> dict:
    config = yaml.safe_load((checkout / CONFIG).read_text())
    model, loss = config["model"]["params"], config["loss"]["params"]
    return {
        "beta": float(model["beta"]),
        "persample_entropy_compute": model["persample_entropy_compute"],
        "post_q_l2_norm": model["post_q_l2_norm"],
        "codebook_weight": float(loss["codebook_weight"]),
        "gamma0": 1.0,  # VITBSQModel's defaults, not overridden by the config
        "gamma": 1.0,
        "zeta": 1.0,
        "inv_temperature": 1.0,
    }


def run(ref, settings: dict, group_size: int, mode: str, beta: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    quant_embed, post_quant_embed = nn.Linear(DIM, BITS), nn.Linear(BITS, DIM)
    quantizer = ref.BinarySphericalQuantizer(
        BITS,
        beta,
        settings["gamma0"],
        settings["gamma"],
        settings["zeta"],
        input_format="blc",
        group_size=group_size,
        persample_entropy_compute=mode,
        l2_norm=settings["post_q_l2_norm"],
        inv_temperature=settings["inv_temperature"],
    ).train()
    z = torch.randn(1, TOKENS, DIM).requires_grad_()
    upstream = torch.randn(1, TOKENS, DIM)
    h = F.normalize(quant_embed(z), dim=-1)
    zq, quant_loss, info = quantizer(h)
    out = post_quant_embed(zq)
    persample, codebook, _ = quantizer.soft_entropy_loss(h)
    loss = settings["codebook_weight"] * quant_loss
    torch.autograd.backward([out, loss], [upstream, torch.ones(())])
    layers = {"in": quant_embed, "out": post_quant_embed}
    tensors = {
        "z": z.detach()[0],
        "upstream": upstream[0],
        "indices": info["indices"].flatten(),
        "z_q": out.detach()[0],
        "per_sample_entropy": persample.detach(),
        "codebook_entropy": codebook.detach(),
        "commitment": ((zq.detach() - h.detach()) ** 2).sum(-1).mean(),
        "loss": loss.detach(),
        "grad_z": z.grad[0],
    }
    for name, layer in layers.items():
        tensors[f"{name}_weight"] = layer.weight.detach()
        tensors[f"{name}_bias"] = layer.bias.detach()
        tensors[f"grad_{name}_weight"] = layer.weight.grad
        tensors[f"grad_{name}_bias"] = layer.bias.grad
    return tensors


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_bsq_vit")
    settings = recipe(args.checkout)
    for case, (group_size, mode, beta) in CASES.items():
        beta = settings["beta"] if beta is None else beta
        mode = mode or settings["persample_entropy_compute"]
        write_fixture(
            f"bsq_{case}",
            run(ref, settings, group_size, mode, beta),
            repository=REPOSITORY,
            checkout=args.checkout,
            files=[FILE, CONFIG, "transcoder/models/bsqvit.py"],
            settings={
                **settings,
                "persample_entropy_compute": mode,
                "beta": beta,
                "group_size": group_size,
                "bits": BITS,
                "dim": DIM,
            },
            out=args.out,
        )


if __name__ == "__main__":
    main()
