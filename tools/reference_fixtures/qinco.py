"""Fixtures for `residual` with `implicit_codebook: mlp, mlp_style: qinco` from QINCo's code
(facebookresearch/Qinco).

Run from the repository root::

    python -m tools.reference_fixtures.qinco --checkout /tmp/ref/Qinco

`qinco_v1/model_qinco.py::QINCo(d=4, K=8, L=2, M=3, h=16)` with its default (seeded)
initialisation: its weights, 30 vectors, `encode` (the greedy search over the predicted codes)
and `decode` of the codes (the reconstruction `x_hat`), and the same model's reconstruction
after each stage. QINCo's loss (the reconstruction error after every stage, its gradient
through `x_hat` into earlier stages) is not vqbench's and is not recorded.
"""

from __future__ import annotations

import torch

from tools.reference_fixtures.common import load_module, parse_args, write_fixture

REPOSITORY = "facebookresearch/Qinco"
FILES = ["qinco_v1/model_qinco.py", "qinco_v1/utils.py"]
D, K, L, M, H = 4, 8, 2, 3, 16


def qinco_case(model_qinco) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = model_qinco.QINCo(D, K, L, M, H)
    x = torch.randn(30, D) * 1.5
    with torch.no_grad():
        codes, xhat = model.encode(x)
        decoded = model.decode(codes)
        partial = [model.codebook0(codes[:, 0])]
        for i, step in enumerate(model.steps):
            partial.append(partial[-1] + step.decode(partial[-1], codes[:, i + 1]))
    weights = {f"weight.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    return {
        **weights,
        "x": x,
        "codes": codes,
        "xhat": xhat,
        "decoded": decoded,
        "partial": torch.stack(partial),
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    load_module(args.checkout, FILES[1], "utils")  # model_qinco's `from utils import ...`
    model_qinco = load_module(args.checkout, FILES[0], "reference_model_qinco")
    write_fixture(
        "qinco_forward",
        qinco_case(model_qinco),
        repository=REPOSITORY,
        checkout=args.checkout,
        files=FILES,
        settings={"d": D, "K": K, "L": L, "M": M, "h": H},
        out=args.out,
    )


if __name__ == "__main__":
    main()
