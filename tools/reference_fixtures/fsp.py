"""Fixtures for `fsp` from zhai-lw/vp-vae (`fsp/fsp.py`, finite structured perturbation).

Run from the repository root::

    python -m tools.reference_fixtures.fsp --checkout /tmp/ref/vp-vae

The reference `FSP` module (imported as a package: it reaches `vp/l_utils.py` relatively) runs
on fixed features `(N, len(levels))` (it has no projection), each case under a fixed global
seed so that the training perturbation's two `torch.rand_like` draws are reproducible. Each
case records the output, the indices, the `VectorNorm` loss, the perturbation's acceptance
rate (training) and the gradient of `norm_loss + <q_z, upstream>` with respect to the input.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import torch

from tools.reference_fixtures.common import parse_args, require, write_fixture

REPOSITORY = "zhai-lw/vp-vae"
FILES = ["fsp/fsp.py", "fsp/cdf_act.py", "vp/l_utils.py"]
PACKAGE = "reference_vp_vae"

#: (name, FSP keyword arguments, training mode, seed of the forward pass).
CASES = [
    ("default_train", dict(levels=[8, 5, 5, 5]), True, 1),
    ("default_eval", dict(levels=[8, 5, 5, 5]), False, 2),
    (
        "laplace_kurt_rate_train",
        dict(levels=[7, 4, 3], act_name="laplace", vector_norm="none-kurt", quantize_rate=0.5),
        True,
        3,
    ),
    (
        "normal_inverse_train",
        dict(levels=[6, 5], act_name="normal", vector_norm="none-var", need_inv_act=True),
        True,
        4,
    ),
    ("sigmoid_inverse_eval", dict(levels=[5, 3], act_name="sigmoid", need_inv_act=True), False, 5),
]


def import_package(checkout: Path):
    """The checkout as a package (its files use relative imports); returns `fsp.fsp`."""
    spec = importlib.util.spec_from_file_location(
        PACKAGE, checkout / "__init__.py", submodule_search_locations=[str(checkout)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.fsp.fsp")


def run_case(fsp_module, kwargs: dict, training: bool, seed: int) -> dict[str, torch.Tensor]:
    channels = len(kwargs["levels"])
    generator = torch.Generator().manual_seed(100 + seed)
    features = torch.randn(256, channels, generator=generator) * 1.5 + 0.2
    upstream = torch.randn(256, channels, generator=generator)
    module = fsp_module.FSP(**kwargs).train(training)
    x = features.clone().requires_grad_(True)
    torch.manual_seed(seed)
    q_z, indices, info = module(x)
    ((q_z * upstream).sum() + info["norm_loss"]).backward()
    out = {
        "features": features,
        "upstream": upstream,
        "q_z": q_z.detach(),
        "indices": indices.long(),
        "norm_loss": torch.as_tensor(info["norm_loss"]).detach(),
        "grad": x.grad,
    }
    if "p_accept_prob" in info:
        out["p_accept_prob"] = info["p_accept_prob"]
    return out


def main() -> None:
    args = parse_args("Write the fsp reference fixtures.", REPOSITORY)
    require(args.checkout, "__init__.py", "fsp/fsp.py")
    fsp_module = import_package(args.checkout)
    defaults = {
        name: p.default
        for name, p in inspect.signature(fsp_module.FSP.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for name, kwargs, training, seed in CASES:
        tensors = run_case(fsp_module, kwargs, training, seed)
        write_fixture(
            f"fsp_{name}",
            tensors,
            repository=REPOSITORY,
            checkout=args.checkout,
            files=FILES,
            settings={"kwargs": kwargs, "training": training, "seed": seed, "defaults": defaults},
            out=args.out,
        )


if __name__ == "__main__":
    main()
