"""Fixtures for `vqgan_lc`'s k-means from VQGAN-LC (zh460045050/VQGAN-LC).

Run from the repository root (needs the `fixtures` extra: kmeans-pytorch 0.3)::

    python -m tools.reference_fixtures.vqgan_lc --checkout /tmp/ref/VQGAN-LC

`codebook_generation/minibatch_kmeans_per_class.py` clusters each class's features with
`kmeans_pytorch.kmeans(X=features, num_clusters=k, device=...)` at its defaults (euclidean,
`tol=1e-4`: full-batch Lloyd from `np.random.choice` distinct features until the squared sum
of the centres' shifts is below the tolerance). This script checks that the checkout still
calls it so, then runs it on 400 features of 3 channels drawn around 8 centres (k = 8) and
records the features, the starting indices (the same `np.random.choice` draw, replayed), the
final centres and the labels.
"""

from __future__ import annotations

import numpy as np
import torch

from tools.reference_fixtures.common import parse_args, require, write_fixture

REPOSITORY = "zh460045050/VQGAN-LC"
FILE = "codebook_generation/minibatch_kmeans_per_class.py"
CALL = "kmeans(X=features, num_clusters=k, device=torch.device('cuda:0'))"
N, D, K = 400, 3, 8


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], REPOSITORY)
    require(args.checkout, FILE)
    source = (args.checkout / FILE).read_text()
    if "from kmeans_pytorch import kmeans" not in source or CALL not in source:
        raise SystemExit(f"{FILE} no longer calls kmeans_pytorch.kmeans as `{CALL}`")
    import kmeans_pytorch

    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(K, D, generator=generator) * 3
    features = centres[torch.randint(K, (N,), generator=generator)]
    features = features + torch.randn(N, D, generator=generator)
    np.random.seed(0)
    labels, found = kmeans_pytorch.kmeans(X=features, num_clusters=K, device=torch.device("cpu"))
    np.random.seed(0)  # the call's only draw: replay it
    start = torch.from_numpy(np.random.choice(N, K, replace=False))
    write_fixture(
        "vqgan_lc_kmeans",
        {"features": features, "start": start, "centres": found.float(), "labels": labels},
        repository=REPOSITORY,
        checkout=args.checkout,
        files=[FILE],
        settings={
            "library": f"kmeans_pytorch {getattr(kmeans_pytorch, '__version__', '0.3')}",
            "tol": 1e-4,
            "clusters": K,
        },
        out=args.out,
    )


if __name__ == "__main__":
    main()
