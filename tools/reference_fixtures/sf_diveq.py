"""Fixtures for the `sf_diveq` quantizer from the DiVeQ authors' code (AaltoML/DiVeQ).

Run from the repository root::

    python -m tools.reference_fixtures.sf_diveq --checkout /tmp/ref/DiVeQ

`vqgan_generation/sf_diveq.py::SFDIVEQ` at its defaults (`noise_var=0.001`, `skip_iters=1000`,
`avg_iters=50`, `uniform_init=True`), four fixtures:

* `sf_diveq_forward`: one training forward (quantizing: `skip_iters=0`) of 24 tokens
  (4 channels, 16 codewords) and the gradients of `<z_q, upstream>` with respect to the input
  and the codebook. The dither and both noise draws come from the global generator; the same
  draws are recorded (`dither`, `noise1`, `noise2`) so that a test can replay them.
* `sf_diveq_init`: the initial codebook of 6 seeds (`torch.manual_seed(s)` before the module).
* `sf_diveq_skip`: `skip_iters=6`, `avg_iters=3`, 4 codewords of 3 channels: 7 forwards of 5
  tokens each; the outputs, indices and the codebook after every forward.
* `sf_diveq_inference`: `inference(z)` (the nearest point of the curve) of 40 tokens.
"""

from __future__ import annotations

import torch
from torch.distributions import normal

from tools.reference_fixtures.common import (
    codebooks_over_seeds,
    load_module,
    parse_args,
    write_fixture,
)

REPOSITORY = "AaltoML/DiVeQ"
FILE = "vqgan_generation/sf_diveq.py"
K, D, N = 16, 4, 24


def quiet(ref, size: int, dim: int, **kwargs):
    return ref.SFDIVEQ(size, dim, allow_warning=False, **kwargs).train()


def forward_case(ref) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = quiet(ref, K, D, skip_iters=0, avg_iters=0)
    with torch.no_grad():  # codewords spread like tokens, so that several segments are chosen
        module.codebook.copy_(torch.randn(K, D))
    z = torch.randn(N, D).requires_grad_()
    upstream = torch.randn(N, D)
    codebook = module.codebook.detach().clone()
    torch.manual_seed(1)
    z_q, indices, _ = module(z)
    torch.manual_seed(1)  # the forward's draws, in its order: replay them
    dither = torch.rand((K - 1, 1))
    noise1 = normal.Normal(0, module.noise_var).sample(z.shape)
    noise2 = normal.Normal(0, module.noise_var).sample(z.shape)
    (z_q * upstream).sum().backward()
    return {
        "z": z.detach(),
        "upstream": upstream,
        "codebook": codebook,
        "dither": dither,
        "noise1": noise1,
        "noise2": noise2,
        "indices": indices,
        "z_q": z_q.detach(),
        "grad_z": z.grad,
        "grad_codebook": module.codebook.grad,
    }


def init_case(ref) -> dict[str, torch.Tensor]:
    return codebooks_over_seeds(lambda: quiet(ref, 32, 4).codebook)


def skip_case(ref) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = quiet(ref, 4, 3, skip_iters=6, avg_iters=3)
    batches = torch.randn(7, 5, 3)
    outputs, indices, codebooks = [], [], []
    for batch in batches:
        z_q, chosen, _ = module(batch)
        outputs.append(z_q.detach())
        indices.append(chosen)
        codebooks.append(module.codebook.detach().clone())
    return {
        "batches": batches,
        "outputs": torch.stack(outputs),
        "indices": torch.stack(indices),
        "codebooks": torch.stack(codebooks),
    }


def inference_case(ref) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    module = quiet(ref, 8, 3).eval()
    with torch.no_grad():
        module.codebook.copy_(torch.randn(8, 3))
    z = torch.randn(40, 3)
    z_q, indices, _ = module.inference(z)
    return {"codebook": module.codebook.detach().clone(), "z": z, "z_q": z_q, "indices": indices}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_sf_diveq")
    defaults = quiet(ref, K, D)
    settings = {
        "noise_var": defaults.noise_var,
        "skip_iters": defaults.skip_iters,
        "avg_iters": defaults.avg_iters,
        "uniform_init": defaults.uniform_init,
    }
    for name, case, extra in (
        ("sf_diveq_forward", forward_case, {"codebook_size": K, "dim": D, "case_skip_iters": 0}),
        ("sf_diveq_init", init_case, {"codebook_size": 32, "dim": 4}),
        (
            "sf_diveq_skip",
            skip_case,
            {"codebook_size": 4, "dim": 3, "case_skip_iters": 6, "case_avg_iters": 3},
        ),
        ("sf_diveq_inference", inference_case, {"codebook_size": 8, "dim": 3}),
    ):
        write_fixture(
            name,
            case(ref),
            repository=REPOSITORY,
            checkout=args.checkout,
            files=[FILE],
            settings={**settings, **extra},
            out=args.out,
        )


if __name__ == "__main__":
    main()
