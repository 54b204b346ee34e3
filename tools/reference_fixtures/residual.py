"""Fixtures for `residual` from RQ-VAE (kakaobrain/rq-vae-transformer).

Run from the repository root::

    python -m tools.reference_fixtures.residual --checkout /tmp/ref/rq-vae-transformer

`rqvae/models/rqvae/quantizations.py::RQBottleneck` with the settings of
`configs/imagenet256/stage1/in256-rqvae-8x8x4.yaml` (`decay`, `latent_loss_weight`; one code per
position, 3 depths of 8 codes of 4 channels here). Two fixtures:

* `residual_eval`: the bottleneck in eval mode (no EMA update), separate codebooks (their
  `nn.Embedding` N(0, 1) draws, recorded): indices, `z_q`, the commitment loss (weighted by
  `latent_loss_weight`) and the gradient of `loss + <z_q, upstream>` w.r.t. the input.
* `residual_ema`: one depth in training mode without restart (`restart_unused_codes=False`):
  the codebook after one forward's EMA update (counts start at 0, `embed_ema` at the codes).
* `residual_restart`: one depth in training mode with the configs' restart
  (`restart_unused_codes=True`) from a chosen state (counts above, near and below 1), more
  tokens than codes (no tiling noise): which codes restart, the counts and the codebook after.
"""

from __future__ import annotations

import torch
import yaml

from tools.reference_fixtures.common import load_module, parse_args, write_fixture

REPOSITORY = "kakaobrain/rq-vae-transformer"
FILE = "rqvae/models/rqvae/quantizations.py"
CONFIG = "configs/imagenet256/stage1/in256-rqvae-8x8x4.yaml"
K, D, DEPTH, SHAPE = 8, 4, 3, (2, 3, 5, 4)  # (B, H, W, D): channels last, as RQ-VAE


def recipe(checkout) -> dict:
    hparams = yaml.safe_load((checkout / CONFIG).read_text())["arch"]["hparams"]
    return {
        "decay": float(hparams["decay"]),
        "shared_codebook": bool(hparams["shared_codebook"]),
        "restart_unused_codes": bool(hparams["restart_unused_codes"]),
        "latent_loss_weight": float(hparams["latent_loss_weight"]),
    }


def bottleneck(ref, s: dict, depth: int, restart: bool):
    return ref.RQBottleneck(
        latent_shape=[SHAPE[1], SHAPE[2], D],
        code_shape=[SHAPE[1], SHAPE[2], depth],
        n_embed=K,
        decay=s["decay"],
        shared_codebook=False,
        restart_unused_codes=restart,
    )


def eval_case(ref, s: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = bottleneck(ref, s, DEPTH, False).eval()
    x = torch.randn(SHAPE).requires_grad_()
    upstream = torch.randn(SHAPE)
    z_q, commitment, codes = module(x)
    loss = s["latent_loss_weight"] * commitment
    torch.autograd.backward([z_q, loss], [upstream, torch.ones(())])
    return {
        "x": x.detach(),
        "upstream": upstream,
        "codebooks": torch.stack([c.weight[:-1].detach() for c in module.codebooks]),
        "indices": codes.reshape(-1, DEPTH),
        "z_q": z_q.detach(),
        "commitment": commitment.detach(),
        "loss": loss.detach(),
        "grad_x": x.grad,
    }


def ema_case(ref, s: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    module = bottleneck(ref, s, 1, False).train()
    x = torch.randn(SHAPE) * 0.5
    before = module.codebooks[0].weight[:-1].detach().clone()
    _, _, codes = module(x)
    return {
        "x": x,
        "before": before,
        "indices": codes.reshape(-1),
        "after": module.codebooks[0].weight[:-1].detach().clone(),
        "cluster_size": module.codebooks[0].cluster_size_ema.clone(),
    }


#: Counts before the step: kept (>= 1 after the decay), on the edge (kept only if chosen), dead.
RESTART_COUNTS = (5.0, 0.5, 1.2, 0.0, 3.0, 1.005, 2.0, 0.2)


def restart_case(ref, s: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    module = bottleneck(ref, s, 1, True).train()
    book = module.codebooks[0]
    x = torch.randn(SHAPE) * 0.5
    counts = torch.tensor(RESTART_COUNTS)
    with torch.no_grad():
        book.cluster_size_ema.copy_(counts)
        book.embed_ema.copy_(book.weight[:-1] * counts[:, None])
    before = book.weight[:-1].detach().clone()
    _, _, codes = module(x)
    return {
        "x": x,
        "before": before,
        "counts_before": counts,
        "embed_before": before * counts[:, None],
        "indices": codes.reshape(-1),
        "after": book.weight[:-1].detach().clone(),
        "cluster_size": book.cluster_size_ema.clone(),
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_rqvae_quantizations")
    settings = {"codebook_size": K, "dim": D, "depth": DEPTH, **recipe(args.checkout)}
    cases = (
        ("residual_eval", eval_case),
        ("residual_ema", ema_case),
        ("residual_restart", restart_case),
    )
    for name, case in cases:
        write_fixture(
            name,
            case(ref, settings),
            repository=REPOSITORY,
            checkout=args.checkout,
            files=[FILE, CONFIG],
            settings=settings,
            out=args.out,
        )


if __name__ == "__main__":
    main()
