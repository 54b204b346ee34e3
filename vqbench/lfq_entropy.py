"""Exact, memory-lean entropy terms of lookup-free quantization (LFQ, MAGVIT-v2 Sec. 3.1).

LFQ's implicit codebook is `{-1, +1}^d`. With logits `2 x.c / T` over all `2^d` codes, the
distribution of one token `x` factorises over bits: bit i is +1 with probability
`sigma(a_i)`, `a = 4 x / T`. Hence

* the per-sample entropy is exactly `sum_i H_bernoulli(sigma(a_i))` (O(N d) memory);
* the codebook entropy `H(mean_n p_n)` does not factorise over bits, but it factorises over
  any split of the bits into a high half `h` and a low half `l`:
  `p_n(h, l) = A_n(h) B_n(l)`, so the batch mean is one matrix product
  `P = A^T B / N` of two `N x 2^(d/2)` tables. For d = 16 that is two `N x 256` tables and a
  `256 x 256` result, instead of the `N x 65,536` softmax (4 GiB at N = 16,384) that
  vector-quantize-pytorch and Open-MAGVIT2 hold with its gradient. Nothing is approximated:
  autograd differentiates the same exact expression.

Bits are MSB-first (`index = sum_i bit_i 2^(d-1-i)`, bit 1 meaning +1), as in
vector-quantize-pytorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqbench.distributed import all_reduce_sum, all_reduce_sum_differentiable

_TINY = torch.finfo(torch.float32).tiny


def check_power_of_two(size: int) -> int:
    """`size` if it is a power of two in [2, 2^40] (sign-pattern codebooks), else ValueError
    with the two nearest valid sizes (for a pydantic validator)."""
    if size < 2 or size & (size - 1):
        lower = 1 << (size.bit_length() - 1)
        raise ValueError(
            f"must be a power of two >= 2 (LFQ codes are sign patterns); "
            f"use {max(lower, 2)} or {max(lower * 2, 2)}"
        )
    if size > 2**40:
        raise ValueError("must be at most 2**40 codes")
    return size


def code_bits(bits: int, device: torch.device | None = None) -> torch.Tensor:
    """`(2^bits, bits)` float matrix of the binary digits of every index, MSB first."""
    index = torch.arange(2**bits, device=device).unsqueeze(1)
    shifts = torch.arange(bits - 1, -1, -1, device=device)
    return ((index >> shifts) & 1).float()


def bit_logits(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """`a = 4 x / T`: the log-odds of each bit being +1 under logits `2 x.c / T`."""
    return x * (4.0 / temperature)


def per_sample_entropy(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over tokens of the entropy of each token's distribution over all codes (exact)."""
    a = bit_logits(x, temperature)
    log_p, log_q = F.logsigmoid(a), F.logsigmoid(-a)
    return -(log_p.exp() * log_p + log_q.exp() * log_q).sum(-1).mean()


def _half_code_log_probs(a: torch.Tensor) -> torch.Tensor:
    """`log p_n(c)` for every code `c` of the bits in `a` (N, b): sum_i logsig(-a_i) + a.bits_c."""
    bits = code_bits(a.shape[1], a.device).to(a.dtype)
    return F.logsigmoid(-a).sum(-1, keepdim=True) + a @ bits.t()


def mean_code_distribution(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """`(2^d,)` batch-mean probability of every code, exact, summed across processes."""
    a = bit_logits(x, temperature)
    high_bits = a.shape[1] // 2
    high = _half_code_log_probs(a[:, :high_bits]).exp()  # (N, 2^high)
    low = _half_code_log_probs(a[:, high_bits:]).exp()  # (N, 2^low)
    total = high.t() @ low  # (2^high, 2^low): sum_n p_n(h, l)
    count = torch.full((), float(a.shape[0]), device=a.device, dtype=a.dtype)  # no host copy
    total = all_reduce_sum_differentiable(total)
    all_reduce_sum(count)
    return (total / count).reshape(-1)


def codebook_entropy(x: torch.Tensor, temperature: float, eps: float = 0.0) -> torch.Tensor:
    """Entropy of the batch-mean distribution over all `2^d` codes: exact with `eps = 0`,
    Open-MAGVIT2's `-sum p log(p + eps)` otherwise (lower by at most `2^d eps` nats)."""
    p = mean_code_distribution(x, temperature)
    if eps > 0:
        return -(p * (p + eps).log()).sum()
    return -(p * p.clamp_min(_TINY).log()).sum()
