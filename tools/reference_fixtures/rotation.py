"""Fixture for `rotation` (`normalize_in_graph: true`) from cfifty/rotation_trick (official).

Run from the repository root::

    python -m tools.reference_fixtures.rotation --checkout /tmp/ref/rotation_trick

The official VQGAN experiment (`exp_weights_and_configs/table_3/rot_vqgan.py`) imports
Lightning and latent-diffusion modules that are not in the repository, so its `VQModel` cannot
be imported. Its methods `get_rotation` and `encode` are taken from the file as written (by
`ast`) and `encode` is run with `rot_trick = True` on an object whose encoder and
`quant_conv` are the identity and whose `quantize` returns fixed codes: the input `z`, the
codes `q`, the value and the gradient of `<value, upstream>` with respect to `z` are recorded.
(The official VQ-VAE code's formula, the paper's, equals vector-quantize-pytorch's, which the
test calls directly.)
"""

from __future__ import annotations

import ast
import types

import torch
from einops import rearrange

from tools.reference_fixtures.common import fail, parse_args, write_fixture

REPOSITORY = "cfifty/rotation_trick"
FILE = "exp_weights_and_configs/table_3/rot_vqgan.py"
METHODS = ("get_rotation", "encode")
SHAPE = (2, 6, 3, 3)


def official_methods(checkout) -> dict:
    """`VQModel.get_rotation` and `VQModel.encode`, compiled from the file's own source."""
    path = checkout / FILE
    if not path.is_file():
        fail(f"{FILE} is not in {checkout}; give a checkout of {REPOSITORY}")
    tree = ast.parse(path.read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in METHODS and node.name not in found:
            node.decorator_list = []
            found[node.name] = node
    if set(found) != set(METHODS):
        fail(f"{FILE} lacks {sorted(set(METHODS) - set(found))}; give a checkout of {REPOSITORY}")
    namespace = {"torch": torch, "rearrange": rearrange}
    module = ast.Module(body=[found[name] for name in METHODS], type_ignores=[])
    exec(compile(module, str(path), "exec"), namespace)  # noqa: S102 - the reference's own code
    return {name: namespace[name] for name in METHODS}


def run(methods: dict) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(SHAPE, generator=generator)
    q = torch.randn(SHAPE, generator=generator)
    q[0, :, 0, 0] = -2 * z[0, :, 0, 0] + 0.01 * q[0, :, 0, 0]  # nearly antipodal (exact: NaN)
    upstream = torch.randn(SHAPE, generator=generator)
    model = types.SimpleNamespace(
        encoder=lambda x: x,
        quant_conv=lambda x: x,
        quantize=lambda x: (q.clone(), None, None),
        rot_trick=True,
        get_rotation=methods["get_rotation"],
    )
    z.requires_grad_(True)
    value, _, _ = methods["encode"](model, z)
    (value * upstream).sum().backward()
    return {
        "z": z.detach(),
        "q": q,
        "upstream": upstream,
        "value": value.detach(),
        "grad_z": z.grad,
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    write_fixture(
        "rotation_official_vqgan",
        run(official_methods(args.checkout)),
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE],
        settings={"method": "VQModel.encode", "rot_trick": True, "shape": list(SHAPE)},
        out=args.out,
    )


if __name__ == "__main__":
    main()
