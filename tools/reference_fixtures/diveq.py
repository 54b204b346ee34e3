"""Fixtures for the `diveq` estimator from the DiVeQ authors' code (AaltoML/DiVeQ).

Run from the repository root::

    python -m tools.reference_fixtures.diveq --checkout /tmp/ref/DiVeQ

`vqgan_generation/diveq.py::DIVEQ` at its defaults (`noise_var=0.001`, `replacement_iters=100`,
`discard_threshold=0.01`, `perturb_eps=1e-9`, `uniform_init=True`), three fixtures:

* `diveq_forward`: one training forward of 24 tokens (4 channels, 16 codes) and the gradients
  of `<z_q, upstream>` with respect to the input and the codebook. The direction's noise is
  drawn by the reference from the global generator; the same draw is recorded (`noise`) so
  that a test can replay it.
* `diveq_init`: the initial codebook of 6 seeds (`torch.manual_seed(s)` before the module).
* `diveq_replacement`: four forwards with `replacement_iters=4`, `discard_threshold=0.3`,
  `perturb_eps=0`: code 0 is chosen in every step, code 1 by 10 tokens in each of two steps,
  code 2 by 5 tokens in one step, codes 3-5 never; the codebook before and after.
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
FILE = "vqgan_generation/diveq.py"
K, D, N = 16, 4, 24


def quiet(ref, size: int, dim: int, **kwargs):
    return ref.DIVEQ(size, dim, allow_warning=False, verbose=False, **kwargs).train()


def forward_case(ref) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = quiet(ref, K, D)
    with torch.no_grad():  # codes spread like tokens, so that several are chosen
        module.codebook.copy_(torch.randn(K, D))
    z = torch.randn(N, D).requires_grad_()
    upstream = torch.randn(N, D)
    codebook = module.codebook.detach().clone()
    torch.manual_seed(1)
    z_q, indices, _ = module(z)
    torch.manual_seed(1)  # the forward's only draw: replay it
    noise = normal.Normal(0, module.noise_var).sample(z.shape)
    (z_q * upstream).sum().backward()
    return {
        "z": z.detach(),
        "upstream": upstream,
        "codebook": codebook,
        "noise": noise,
        "indices": indices,
        "z_q": z_q.detach(),
        "grad_z": z.grad,
        "grad_codebook": module.codebook.grad,
    }


def init_case(ref) -> dict[str, torch.Tensor]:
    return codebooks_over_seeds(lambda: quiet(ref, 32, 4).codebook)


def replacement_case(ref) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = quiet(ref, 6, 2, replacement_iters=4, discard_threshold=0.3, perturb_eps=0.0)
    codes = torch.tensor([[0, 0], [10, 0], [0, 10], [-10, 0], [0, -10], [10, 10]]).float()
    with torch.no_grad():
        module.codebook.copy_(codes)
    steps = [[0] * 3 + [1] * 10, [0] + [2] * 5, [0] + [1] * 10, [0] * 2]
    before = module.codebook.detach().clone()
    for chosen in steps:
        module(codes[torch.tensor(chosen)])
    return {
        "steps": torch.tensor([len(s) for s in steps]),
        "chosen": torch.tensor([c for s in steps for c in s]),
        "before": before,
        "after": module.codebook.detach().clone(),
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    ref = load_module(args.checkout, FILE, "reference_diveq")
    defaults = quiet(ref, K, D)
    settings = {
        "noise_var": defaults.noise_var,
        "replacement_iters": defaults.replacement_iters,
        "discard_threshold": defaults.discard_threshold,
        "perturb_eps": defaults.perturb_eps,
        "uniform_init": defaults.uniform_init,
    }
    for name, case, extra in (
        ("diveq_forward", forward_case, {"codebook_size": K, "dim": D}),
        ("diveq_init", init_case, {"codebook_size": 32, "dim": 4}),
        ("diveq_replacement", replacement_case, {"replacement_iters": 4, "threshold": 0.3}),
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
