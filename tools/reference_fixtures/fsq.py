"""Fixture for `fsq` from the official FSQ code (google-research/google-research, fsq/fsq.ipynb).

Run from the repository root::

    python -m tools.reference_fixtures.fsq --checkout /tmp/ref/google-research

The official code is a JAX notebook. Its code cells are executed as written, with `jax`,
`jax.numpy` and `jax.lax.stop_gradient` provided by NumPy (forward values only: the
notebook's rounding and NumPy's both round half to even). The repository is large; a sparse
checkout of `fsq/` works (`git clone --filter=blob:none --sparse`, then
`git sparse-checkout set fsq`), or a copy of the notebook with `--commit SHA`. The fixture
holds inputs `z` (one row per token, `len(levels)` channels), the official codes and indices.
vector-quantize-pytorch's FSQ is called directly by the test.
"""

from __future__ import annotations

import json
import types

import numpy as np
import torch

from tools.reference_fixtures.common import fail, parse_args, write_fixture

REPOSITORY = "google-research/google-research"
FILE = "fsq/fsq.ipynb"
LEVELS = [8, 8, 8, 5, 5, 5]
TOKENS = 512


def numpy_jax() -> types.ModuleType:
    """A `jax` whose `numpy` is NumPy and whose `stop_gradient` is the identity."""
    jax = types.ModuleType("jax")
    jax.numpy = np
    jax.Array = np.ndarray
    jax.lax = types.SimpleNamespace(stop_gradient=lambda x: x)
    return jax


def notebook_fsq(checkout) -> type:
    """The notebook's `FSQ` class: its code cells run until the class is defined."""
    if not (checkout / FILE).is_file():
        fail(f"{FILE} is not in {checkout}; give a checkout of {REPOSITORY} (or a copy of {FILE})")
    cells = json.loads((checkout / FILE).read_text())["cells"]
    jax = numpy_jax()
    namespace = {"jax": jax, "jnp": np, "np": np}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        lines = [line for line in cell["source"] if not line.startswith(("import ", "from "))]
        exec("".join(lines), namespace)  # noqa: S102 - the reference's own code
        if "FSQ" in namespace:
            return namespace["FSQ"]
    fail(f"{FILE} defines no FSQ class; give a checkout of {REPOSITORY}")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY, commit=True)
    fsq = notebook_fsq(args.checkout)(levels=LEVELS)
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(TOKENS, len(LEVELS), generator=generator) * 1.5
    codes = fsq.quantize(z.double().numpy())
    indices = fsq.codes_to_indexes(codes).astype(np.int64)
    write_fixture(
        "fsq_official",
        {"z": z, "codes": torch.from_numpy(codes).float(), "indices": torch.from_numpy(indices)},
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE],
        settings={"class": "FSQ", "levels": LEVELS, "eps": fsq._eps, "tokens": TOKENS},
        out=args.out,
        commit=args.commit,
    )


if __name__ == "__main__":
    main()
