"""A softmax over every code, forward and backward, without an N x K table (IBQ's fast path).

Index backpropagation quantization (IBQ, arXiv 2412.02692) needs, for logits `l = z E^T` of N
tokens over K codes,

* the soft mean code `m_n = sum_k softmax(l_n)_k e_k` (its one-hot's soft part times E), whose
  gradient reaches `z` and every code through the logits;
* with a temperature T, the entropy terms of `p = softmax(l / T)`: the sum over tokens of the
  per-sample entropies `H_n = -sum_k p_nk log p_nk` and the summed probabilities
  `P_k = sum_n p_nk` (the batch's code distribution, before normalising).

Held naively that is an N x K softmax with its gradient (2 GiB per tensor at 8,192 x 65,536).
`soft_code_statistics` walks the codes in blocks, as `vqbench.search` does: the forward makes
two passes (an online log-sum-exp and argmax, then the sums), the backward recomputes each
block's logits. With `G_nk = dL/dl_nk`:

    scale 1:   G_nk = p_nk (g_n.e_k - g_n.m_n)                   (g = dL/dm)
    scale 1/T: G_nk = p_nk (c_nk - sum_j p_nj c_nj) / T,   c_nk = -gH log p_nk + gP_k

and `dz = G E`, `dE = G^T z`. The codes enter `m` as values without a gradient (IBQ routes
that part through its hard one-hot). Extra memory is a few `rows x block` tiles and `O(N d)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Elements of one `rows x codes` tile (float32): 4 MiB on CPU (cache-sized), 128 MiB on CUDA.
CPU_BLOCK_ELEMENTS = 2**20
CUDA_BLOCK_ELEMENTS = 2**25


@dataclass
class SoftCodes:
    """What `soft_code_statistics` returns (entropy fields are None without a temperature)."""

    indices: torch.Tensor  # (N,) argmax_k z.e_k, int64
    mean_code: torch.Tensor  # (N, d) softmax(z E^T) E
    entropy_sum: torch.Tensor | None  # () sum_n H(softmax(z E^T / T))
    prob_sum: torch.Tensor | None  # (K,) sum_n softmax(z E^T / T)


def _chunks(n: int, k: int, device: torch.device, block_elements: int | None):
    if block_elements is None:
        cuda = device.type == "cuda"
        block_elements = CUDA_BLOCK_ELEMENTS if cuda else CPU_BLOCK_ELEMENTS
    code_chunk = max(1, min(k, max(256, block_elements // max(1, min(n, 4096)))))
    row_chunk = max(1, min(n, block_elements // code_chunk))
    return row_chunk, code_chunk


def _row_normalisers(z, codes, inv_t, code_chunk):
    """Argmax and the log-sum-exp of the logits at scales 1 and `inv_t` (online, one pass)."""
    rows = z.shape[0]
    best = torch.full((rows,), float("-inf"), dtype=z.dtype, device=z.device)
    index = torch.zeros(rows, dtype=torch.long, device=z.device)
    sums = [torch.zeros(rows, dtype=z.dtype, device=z.device) for _ in (1.0, inv_t)]
    for c0 in range(0, codes.shape[0], code_chunk):
        raw = z @ codes[c0 : c0 + code_chunk].t()
        value, idx = raw.max(dim=1)
        better = value > best
        new_best = torch.maximum(best, value)
        for s, scale in zip(sums, (1.0, inv_t)):
            s.mul_(torch.exp(scale * (best - new_best))).add_(
                torch.exp(scale * (raw - new_best.unsqueeze(1))).sum(1)
            )
        index = torch.where(better, idx + c0, index)
        best = new_best
    lse = [scale * best + s.log() for s, scale in zip(sums, (1.0, inv_t))]
    return index, lse[0], lse[1]


class _SoftCodeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, codes, inv_t, with_entropy, block_elements):
        n, k = z.shape[0], codes.shape[0]
        row_chunk, code_chunk = _chunks(n, k, z.device, block_elements)
        indices = torch.empty(n, dtype=torch.long, device=z.device)
        lse1, lse2 = torch.empty_like(z[:, 0]), torch.empty_like(z[:, 0])
        mean = torch.zeros_like(z)
        entropy = torch.zeros_like(z[:, 0])  # per row, summed from -p log p >= 0 terms
        prob_sum = torch.zeros(k, dtype=z.dtype, device=z.device)
        for r0 in range(0, n, row_chunk):
            r = slice(r0, r0 + row_chunk)
            indices[r], lse1[r], lse2[r] = _row_normalisers(z[r], codes, inv_t, code_chunk)
            for c0 in range(0, k, code_chunk):
                block = codes[c0 : c0 + code_chunk]
                raw = z[r] @ block.t()
                mean[r] += torch.exp(raw - lse1[r].unsqueeze(1)) @ block
                if with_entropy:
                    log_p2 = inv_t * raw - lse2[r].unsqueeze(1)
                    p2 = log_p2.exp()
                    entropy[r] -= (p2 * log_p2).sum(1)
                    prob_sum[c0 : c0 + code_chunk] += p2.sum(0)
        entropy_sum = entropy.sum() if with_entropy else z.new_zeros(())
        ctx.save_for_backward(z, codes, lse1, lse2, mean, entropy)
        ctx.inv_t, ctx.with_entropy, ctx.chunks = inv_t, with_entropy, (row_chunk, code_chunk)
        ctx.mark_non_differentiable(indices)
        return indices, mean, entropy_sum, prob_sum

    @staticmethod
    def backward(ctx, _g_indices, g_mean, g_entropy, g_prob):
        z, codes, lse1, lse2, mean, row_entropy = ctx.saved_tensors
        inv_t, (row_chunk, code_chunk) = ctx.inv_t, ctx.chunks
        with_entropy = ctx.with_entropy and (g_entropy is not None or g_prob is not None)
        g_mean = torch.zeros_like(z) if g_mean is None else g_mean
        g_h = g_entropy if g_entropy is not None else z.new_zeros(())
        g_p = g_prob if g_prob is not None else z.new_zeros(codes.shape[0])
        grad_z, grad_codes = torch.zeros_like(z), torch.zeros_like(codes)
        for r0 in range(0, z.shape[0], row_chunk):
            r = slice(r0, r0 + row_chunk)
            zr, gr = z[r], g_mean[r]
            shift1 = (gr * mean[r]).sum(1, keepdim=True)  # sum_k p_nk g_n.e_k = g_n.m_n
            if with_entropy:
                h_r = row_entropy[r].unsqueeze(1)
                p_dot_gp = _prob_dot(zr, codes, lse2[r], g_p, inv_t, code_chunk)
            for c0 in range(0, codes.shape[0], code_chunk):
                block = codes[c0 : c0 + code_chunk]
                raw = zr @ block.t()
                grad = torch.exp(raw - lse1[r].unsqueeze(1)) * (gr @ block.t() - shift1)
                if with_entropy:
                    # c - sum_j p_j c_j = -gH (log p + H) + gP - p.gP (no large cancellation)
                    log_p2 = inv_t * raw - lse2[r].unsqueeze(1)
                    centred = -g_h * (log_p2 + h_r) + g_p[c0 : c0 + code_chunk] - p_dot_gp
                    grad += log_p2.exp() * centred * inv_t
                grad_z[r] += grad @ block
                grad_codes[c0 : c0 + code_chunk] += grad.t() @ zr
        return grad_z, grad_codes, None, None, None


def _prob_dot(zr, codes, lse2, g_p, inv_t, code_chunk):
    """`sum_j p_nj gP_j` for the rows `zr` (one pass over the codes; zero when gP is)."""
    total = torch.zeros(zr.shape[0], 1, dtype=zr.dtype, device=zr.device)
    if bool((g_p != 0).any()):
        for c0 in range(0, codes.shape[0], code_chunk):
            block = codes[c0 : c0 + code_chunk]
            p2 = torch.exp(inv_t * (zr @ block.t()) - lse2.unsqueeze(1))
            total += p2 @ g_p[c0 : c0 + code_chunk].unsqueeze(1)
    return total


@torch.no_grad()
def max_inner_product(
    z: torch.Tensor, codes: torch.Tensor, *, block_elements: int | None = None
) -> torch.Tensor:
    """`argmax_k z.e_k` for every row of `z`, blockwise (no gradient, no N x K table)."""
    n, k = z.shape[0], codes.shape[0]
    row_chunk, code_chunk = _chunks(n, k, z.device, block_elements)
    indices = torch.empty(n, dtype=torch.long, device=z.device)
    for r0 in range(0, n, row_chunk):
        rows = z[r0 : r0 + row_chunk]
        best = torch.full((rows.shape[0],), float("-inf"), dtype=z.dtype, device=z.device)
        index = torch.zeros(rows.shape[0], dtype=torch.long, device=z.device)
        for c0 in range(0, k, code_chunk):
            value, idx = (rows @ codes[c0 : c0 + code_chunk].t()).max(dim=1)
            index = torch.where(value > best, idx + c0, index)
            best = torch.maximum(best, value)
        indices[r0 : r0 + row_chunk] = index
    return indices


def soft_code_statistics(
    z: torch.Tensor,
    codes: torch.Tensor,
    temperature: float | None = None,
    *,
    block_elements: int | None = None,
) -> SoftCodes:
    """Argmax codes, the soft mean code and (with `temperature`) the entropy sums of `z`
    `(N, d)` over `codes` `(K, d)`, blockwise; differentiable in `z` and `codes`."""
    if z.ndim != 2 or codes.ndim != 2 or z.shape[1] != codes.shape[1]:
        raise ValueError(
            f"soft_code_statistics needs z (N, d) and codes (K, d); got {tuple(z.shape)} "
            f"and {tuple(codes.shape)}"
        )
    with_entropy = temperature is not None
    inv_t = 1.0 / temperature if with_entropy else 1.0
    indices, mean, entropy_sum, prob_sum = _SoftCodeFunction.apply(
        z, codes, inv_t, with_entropy, block_elements
    )
    if not with_entropy:
        return SoftCodes(indices, mean, None, None)
    return SoftCodes(indices, mean, entropy_sum, prob_sum)
