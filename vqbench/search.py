"""Exact nearest-code search, chunked so that no N x K distance matrix is ever held.

Every explicit-codebook quantizer calls `nearest_code`. The search runs under `no_grad` (the
index is not differentiable), in float32 with autocast off, and walks the codebook in chunks:
for each chunk it forms `||c||^2 - 2 z.c` (the per-row constant `||z||^2` does not change the
argmin) with one fused `addmm`, and keeps a running minimum. Both sides are first centred on
the codebook mean (distances do not change under a shared translation), which removes most of
the cancellation that the expansion suffers when codes sit far from the origin. Peak extra
memory is one `rows x chunk` block (4 MiB on CPU, 512 MiB on CUDA) instead of the 2 GiB of a full
8,192 x 65,536 matrix.
"""

from __future__ import annotations

import torch

#: Elements in one block of distances (float32). On CPU a 4 MiB block stays in cache, which
#: makes the blocked search faster than one full matmul (measured: 1.15 s against 1.6 s for
#: 8,192 x 128 x 65,536 on 2 cores); on CUDA large blocks (512 MiB) keep the launches few.
CPU_BLOCK_ELEMENTS = 2**20
CUDA_BLOCK_ELEMENTS = 2**27


def _autocast_off(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


@torch.no_grad()
def nearest_code(
    z: torch.Tensor,
    codebook: torch.Tensor,
    *,
    block_elements: int | None = None,
) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean distance) for every row of `z`.

    Args:
        z: `(N, d)` query vectors.
        codebook: `(K, d)` codes.
        block_elements: largest `rows x codes` block of distances held at once (default: by
            device, see `CPU_BLOCK_ELEMENTS` and `CUDA_BLOCK_ELEMENTS`).

    Returns:
        `(N,)` int64 indices, equal to `torch.cdist(z, codebook).argmin(1)` up to exact ties.
    """
    if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code needs z (N, d) and codebook (K, d); got {tuple(z.shape)} and "
            f"{tuple(codebook.shape)}"
        )
    with _autocast_off(z.device.type):
        centre = codebook.float().mean(0)
        z = z.float() - centre
        codebook = codebook.float() - centre
        codebook_sq_norms = codebook.pow(2).sum(1)
        n, k = z.shape[0], codebook.shape[0]
        indices = torch.empty(n, dtype=torch.long, device=z.device)
        if n == 0:
            return indices
        if block_elements is None:
            cuda = z.device.type == "cuda"
            block_elements = CUDA_BLOCK_ELEMENTS if cuda else CPU_BLOCK_ELEMENTS
        code_chunk = min(k, max(1024, block_elements // min(n, 8192)))
        row_chunk = min(n, max(1, block_elements // code_chunk))
        for r0 in range(0, n, row_chunk):
            rows = z[r0 : r0 + row_chunk]
            best_val = torch.full((rows.shape[0],), float("inf"), device=z.device)
            best_idx = torch.zeros(rows.shape[0], dtype=torch.long, device=z.device)
            for c0 in range(0, k, code_chunk):
                codes = codebook[c0 : c0 + code_chunk]
                # ||c||^2 - 2 z.c in one fused multiply-add (beta=1, alpha=-2).
                dist = torch.addmm(
                    codebook_sq_norms[c0 : c0 + code_chunk], rows, codes.t(), alpha=-2.0
                )
                val, idx = dist.min(dim=1)
                better = val < best_val
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, idx + c0, best_idx)
            indices[r0 : r0 + row_chunk] = best_idx
        return indices
