"""Fixtures for `nsvq` from CAIR-LAB-WFUSM/NS-VQ-TransVQ (NS-VQ, arXiv 2602.18896).

Run from the repository root::

    python -m tools.reference_fixtures.nsvq --checkout /tmp/ref/NS-VQ-TransVQ

The reference NS-VQ is `NS_Trans_VQ_CelebA/models/vq_vae.py::VectorQuantizer` with
`mem_flag=True` (the config's "mem_flag=True + vq_mod=vq = NS-VQ"); `beta`, `alpha` and
`q_flag` are read from `configs_rebuild/vq_vae_face_q_update_softupdate.yaml`,
`embedding_loss_weight` is the class default (the model does not pass it). The ImageNet copy
(`ldm/modules/quantizer.py::VectorQuantizer2_with_soft_dist`) cannot run: it reads an
undefined `self.alpha` and takes the kernel branch only when no epoch is given.

Each case sets the codebook to fixed N(0, 0.25) codes (with 256 codes at epoch 5, half the
tokens lie near midpoints of two codes: 15 kernel weights pass 1 and are clamped), runs one
forward at a given epoch (`status='Train'`, or `'Valid'`) and records the input, the codebook,
the indices, `z_q`, the loss and its codebook term (the same call with `beta=0`), and the
gradients of `loss + <z_q, upstream>` with respect to the input and the codebook.
`nsvq_schedule` holds the bandwidth of epochs 0-40 from the reference's `get_decay_p` as
`forward` calls it, and the initial codebook's statistics over seeds 0-3.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
import yaml

from tools.reference_fixtures.common import (
    init_statistics,
    parse_args,
    require,
    surrogate_backward,
    write_fixture,
)

REPOSITORY = "CAIR-LAB-WFUSM/NS-VQ-TransVQ"
ROOT = "NS_Trans_VQ_CelebA"
FILE = f"{ROOT}/models/vq_vae.py"
CONFIG = f"{ROOT}/configs_rebuild/vq_vae_face_q_update_softupdate.yaml"
MAX_EPOCH = 300  # the config's trainer max_epochs (the `exp` schedule does not read it)
#: (name, codebook size, dim, input shape, epoch, status).
CASES = [
    ("nsvq_epoch0", 16, 4, (2, 4, 3, 3), 0, "Train"),
    ("nsvq_epoch5_clamped", 256, 4, (2, 4, 4, 5), 5, "Train"),
    ("nsvq_eval", 16, 4, (2, 4, 3, 3), 0, "Valid"),
]
INIT_K, INIT_D, SEEDS = 512, 8, range(4)
EPOCHS = range(41)


def import_reference(checkout: Path):
    """`models.vq_vae` with the CelebA folder first on the path (its own
    `vector_quantize_pytorch` copy, not the installed library)."""
    sys.path.insert(0, str(checkout / ROOT))
    for name in [
        m for m in sys.modules if m.split(".")[0] in ("models", "vector_quantize_pytorch")
    ]:
        del sys.modules[name]
    return importlib.import_module("models.vq_vae")


def recipe(checkout: Path) -> dict:
    vq = yaml.safe_load((checkout / CONFIG).read_text())["model_params"]["vq_parameters"]
    return {"beta": vq["beta"], "alpha": vq["alpha"], "q_flag": vq["q_flag"], "mem_flag": True}


def build(ref, k: int, d: int, settings: dict, beta: float | None = None):
    return ref.VectorQuantizer(
        num_embeddings=k,
        embedding_dim=d,
        beta=settings["beta"] if beta is None else beta,
        alpha_q=settings["alpha"],
        q_flag=settings["q_flag"],
        mem_flag=settings["mem_flag"],
    )


def between_codes(z: torch.Tensor, codes: torch.Tensor, generator) -> torch.Tensor:
    """`z` whose first half of tokens lie near midpoints of codes and their nearest codes."""
    b, d, h, w = z.shape
    tokens = z.permute(0, 2, 3, 1).reshape(-1, d).clone()
    half = tokens.shape[0] // 2
    dist = torch.cdist(codes[:half], codes)
    dist.fill_diagonal_(float("inf"))
    mid = (codes[:half] + codes[dist.argmin(1)]) / 2
    tokens[:half] = mid + torch.randn(half, d, generator=generator) * 0.02
    return tokens.reshape(b, h, w, d).permute(0, 3, 1, 2).contiguous()


def run_case(ref, settings: dict, k: int, d: int, shape, epoch: int, status: str) -> dict:
    generator = torch.Generator().manual_seed(k + epoch)
    codes = torch.randn(k, d, generator=generator) * 0.5
    z = torch.randn(shape, generator=generator) * 0.5
    if k > 100:  # half the tokens between two codes: kernel weights past 1, clamped
        z = between_codes(z, codes, generator)
    upstream = torch.randn(shape, generator=generator) * 0.01
    quantizer = build(ref, k, d, settings)
    codebook_only = build(ref, k, d, settings, beta=0.0)
    for module in (quantizer, codebook_only):
        with torch.no_grad():
            module.embedding.weight.copy_(codes)
    with torch.no_grad():
        _, codebook_term, _ = codebook_only(z.clone(), epoch, MAX_EPOCH, status)
    z = z.requires_grad_(True)
    z_q, loss, indices = quantizer(z, epoch, MAX_EPOCH, status)
    surrogate_backward(z_q, loss, upstream)
    return {
        "codes": codes,
        "z": z.detach(),
        "upstream": upstream,
        "epoch": torch.tensor(epoch),
        "indices": indices.flatten(),
        "z_q": z_q.detach(),
        "loss": loss.detach(),
        "codebook_term": codebook_term / settings["alpha"],
        "grad_z": z.grad,
        "grad_codes": quantizer.embedding.weight.grad,
    }


def schedule(ref, settings: dict) -> dict[str, torch.Tensor]:
    """The bandwidth per epoch as `forward` asks for it, and the initial codebook's stats."""
    quantizer = build(ref, 4, 2, settings)
    taus = [
        quantizer.get_decay_p(
            method="exp",
            epoch=epoch,
            max_epoch=MAX_EPOCH,
            initial_p=1,
            warmup_flag=False,
            warmup_epochs=2,
            warmup_type="cosine",
            peak_p=1,
            **{"decay_rate": 0.50},
        )
        for epoch in EPOCHS
    ]
    stats = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        stats.append(init_statistics(build(ref, INIT_K, INIT_D, settings).embedding.weight))
    return {"bandwidth": torch.tensor(taus, dtype=torch.float64), "init": torch.stack(stats)}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, FILE, CONFIG)
    ref = import_reference(args.checkout)
    settings = recipe(args.checkout)
    settings["embedding_loss_weight"] = build(ref, 4, 2, settings).embedding_loss_weight
    files = [FILE, CONFIG]
    for name, k, d, shape, epoch, status in CASES:
        case = {"codebook_size": k, "dim": d, "epoch": epoch, "status": status}
        write_fixture(
            name,
            run_case(ref, settings, k, d, shape, epoch, status),
            repository=REPOSITORY,
            checkout=args.checkout,
            files=files,
            settings={**settings, **case, "max_epoch": MAX_EPOCH},
            out=args.out,
        )
    extra = {"epochs": list(EPOCHS), "init_codebook_size": INIT_K, "init_dim": INIT_D}
    write_fixture(
        "nsvq_schedule",
        schedule(ref, settings),
        repository=REPOSITORY,
        checkout=args.checkout,
        files=files,
        settings={**settings, **extra, "init_seeds": list(SEEDS)},
        out=args.out,
    )


if __name__ == "__main__":
    main()
