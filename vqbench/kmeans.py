"""Seeded k-means through a maintained library: faiss where installed, else scikit-learn."""

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
