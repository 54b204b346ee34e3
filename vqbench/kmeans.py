"""Seeded k-means: full-batch Lloyd from random centres (VQGAN-LC's), or a maintained library's
mini-batch k-means++ (faiss where installed, else scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch

from vqbench.errors import VQBenchError


def kmeans_backend() -> str:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "sklearn.MiniBatchKMeans"
    return "faiss.Kmeans"


def kmeans(
    features: torch.Tensor, clusters: int, *, seed: int = 0, iterations: int = 20
) -> torch.Tensor:
    """`(clusters, D)` float32 centroids of `features` `(N, D)`; needs N >= clusters."""
    n = features.shape[0]
    if n < clusters:
        raise VQBenchError(
            f"k-means needs at least as many features as codes: {n} features for "
            f"{clusters} codes; give init_from_data more images or lower codebook_size"
        )
    x = np.ascontiguousarray(features.detach().cpu().float().numpy())
    if kmeans_backend() == "faiss.Kmeans":
        import faiss

        km = faiss.Kmeans(x.shape[1], clusters, niter=iterations, seed=seed, verbose=False)
        km.train(x)
        centroids = km.centroids
    else:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(
            n_clusters=clusters,
            random_state=seed,
            n_init=1,
            max_iter=iterations,
            batch_size=max(4096, 4 * clusters),
        )
        centroids = km.fit(x).cluster_centers_
    return torch.from_numpy(np.asarray(centroids, dtype=np.float32))


def _nearest_centre(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (squared Euclidean) of each row, in blocks of rows."""
    rows = max(1, 2**24 // max(1, centres.shape[0]))
    return torch.cat(
        [torch.cdist(x[i : i + rows], centres).argmin(1) for i in range(0, x.shape[0], rows)]
    )


def lloyd(
    features: torch.Tensor,
    clusters: int,
    *,
    seed: int = 0,
    tol: float = 1e-4,
    max_iterations: int | None = 300,
    initial: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full-batch Lloyd k-means as VQGAN-LC runs it (`kmeans_pytorch.kmeans`, default
    `tol=1e-4`): centres start at `clusters` distinct random features; each iteration assigns
    every feature to its nearest centre and moves each centre to the mean of its features,
    until `(sum_k ||c_k - c_k'||)^2 < tol`, or `max_iterations` (300 by default; the reference
    has no cap, but with fewer distinct features than centres it never converges). A centre
    left without features takes a random feature (kmeans_pytorch's later fix; its 0.3
    release gives NaN).
    Draws come from a generator seeded by `seed`; `initial` gives the indices of the starting
    features instead (a test replays the reference's draw). Returns `(clusters, D)` float32
    centres."""
    n = features.shape[0]
    if n < clusters:
        raise VQBenchError(
            f"k-means needs at least as many features as codes: {n} features for "
            f"{clusters} codes; give init_from_data more images or lower codebook_size"
        )
    x = features.detach().float()
    generator = torch.Generator().manual_seed(seed)
    start = torch.randperm(n, generator=generator)[:clusters] if initial is None else initial
    centres = x[start.to(x.device)].clone()
    iteration = 0
    while max_iterations is None or iteration < max_iterations:
        assign = _nearest_centre(x, centres)
        counts = torch.bincount(assign, minlength=clusters)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        new = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():
            new[empty] = x[torch.randint(n, (empty.numel(),), generator=generator).to(x.device)]
        shift = (new - centres).norm(dim=1).sum()
        centres, iteration = new, iteration + 1
        if float(shift) ** 2 < tol:
            break
    return centres.cpu()
