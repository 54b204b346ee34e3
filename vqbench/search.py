"""Nearest-code search, chunked so that no N x K distance matrix is ever held.

Every explicit-codebook quantizer calls `nearest_code`. The search runs under `no_grad` (the
index is not differentiable), with autocast off, and walks the codebook in chunks: for each
chunk it forms `||c||^2 - 2 z.c` (the per-row constant `||z||^2` does not change the argmin)
with one fused `addmm` and keeps its row minima. Both sides are first centred on the codebook
mean (distances do not change under a shared translation), which removes most of the
cancellation that the expansion suffers when codes sit far from the origin. Peak extra memory
is one `rows x chunk` block (8 MiB per thread on CPU, 512 MiB on CUDA) instead of the 2 GiB of
a full 8,192 x 65,536 matrix.

`precision` picks the arithmetic of the distances:

* `fp32` (default): IEEE float32 throughout. On CUDA, TF32 is switched off for the search
  whatever the global setting (`torch.backends.cuda.matmul`), so the result does not depend on
  it.
* `tf32` / `bf16`: a *certified* search. Distances are computed from inputs rounded to TF32
  (10 stored mantissa bits) or bfloat16 (7), on tensor cores on CUDA (on CPU the rounding is
  emulated, which exercises the same logic but is not faster). The best codes per token are
  then re-scored exactly, and a rigorous bound on the low-precision error (`lowp_error_bound`)
  certifies, token by token, that the fp32 search's winner is among them and which one it is;
  the tokens it cannot certify go through the fp32 search itself. The indices are the fp32
  search's (see `certified_search` for the exact statement and its two assumptions).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

#: Elements in one block of distances (float32). On CPU a block holds 2^21 elements per torch
#: thread (8 MiB each: 16 MiB on 2 threads), so that the count of blocks, each two parallel
#: regions whose threads must all meet, does not grow with the threads: 128 blocks for 8,192 x
#: 65,536 on 2 threads (it was 512 blocks of six regions each, 4 MiB in all, which a busy
#: machine punished: issue 28). On CUDA large blocks (512 MiB) keep the launches few.
CPU_BLOCK_ELEMENTS_PER_THREAD = 2**21
CUDA_BLOCK_ELEMENTS = 2**27


def cpu_block_elements() -> int:
    """The CPU block: `CPU_BLOCK_ELEMENTS_PER_THREAD` times torch's intra-op threads."""
    return CPU_BLOCK_ELEMENTS_PER_THREAD * max(1, torch.get_num_threads())


SearchPrecision = Literal["fp32", "tf32", "bf16"]
SEARCH_PRECISIONS = ("fp32", "tf32", "bf16")

#: Unit roundoff of the inputs of each low-precision search (round to nearest, 2^-p for p
#: significant bits): TF32 keeps 11, bfloat16 8.
INPUT_ROUNDOFF = {"tf32": 2.0**-11, "bf16": 2.0**-8}
#: Unit roundoff of float32 and float64.
FP32_ROUNDOFF, FP64_ROUNDOFF = 2.0**-24, 2.0**-53
#: Per-addition relative error allowed to tensor-core float32 accumulation: 8 float32 units
#: (2^-21), covering round-to-nearest (2^-24) and the truncated alignment measured on NVIDIA
#: tensor cores (2^-23; Fasi, Higham, Mikaitis & Pranesh 2021, PeerJ CS 7:e330) with margin.
ACCUMULATION_ROUNDOFF = 2.0**-21
#: Absolute slack for flushed subnormals and underflowing products (each below 2^-126 times
#: the magnitudes involved); `d * 2^-100` per unit of magnitude dominates them.
UNDERFLOW_SLACK = 2.0**-100
#: The bounds are evaluated in float64 and then inflated by this factor, which covers the
#: rounding of their own evaluation (relative 1e-15) many times over.
BOUND_SAFETY = 1.01

#: Codes per group (group minima select the candidates), groups kept per token, and exact
#: re-checks per token, by precision; bfloat16's wider error window needs more of each.
GROUP_SIZE = 16
KEEP_GROUPS = {"tf32": 4, "bf16": 8}
RECHECKS = {"tf32": 8, "bf16": 16}
#: The fp32 fallback runs on at least this many rows, so that its GEMM is of the same kind as
#: the full search's (BLAS libraries switch kernels, and summation orders, for tiny M).
FALLBACK_MIN_ROWS = 16


def _autocast_off(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


@contextlib.contextmanager
def cuda_tf32(enabled: bool):
    """Set cuBLAS's TF32 switch for float32 matmuls inside the block, then restore it.

    Uses the legacy flag unless the program already used the new `fp32_precision` API
    (PyTorch refuses to read the legacy flag after that)."""
    matmul = torch.backends.cuda.matmul
    try:
        saved, attr, value = matmul.allow_tf32, "allow_tf32", enabled
    except RuntimeError:  # the new API is in use
        saved, attr, value = matmul.fp32_precision, "fp32_precision", "tf32" if enabled else "ieee"
    setattr(matmul, attr, value)
    try:
        yield
    finally:
        setattr(matmul, attr, saved)


def _precise(device: torch.device):
    """IEEE float32 matmuls (TF32 off) on CUDA; nothing to change on CPU."""
    return cuda_tf32(False) if device.type == "cuda" else contextlib.nullcontext()


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 rounded to nearest-even at TF32's 10 stored mantissa bits (by bit arithmetic).

    Non-finite values are kept; a value that rounds past the largest float becomes inf."""
    bits = x.float().contiguous().view(torch.int32)
    lsb = (bits >> 13) & 1
    rounded = ((bits + 0xFFF + lsb) & ~0x1FFF).view(torch.float32)
    return torch.where(torch.isfinite(x), rounded, x.float())


def round_to_bf16(x: torch.Tensor) -> torch.Tensor:
    """float32 rounded to nearest-even bfloat16, kept as float32."""
    return x.float().bfloat16().float()


ROUNDING = {"tf32": round_to_tf32, "bf16": round_to_bf16}


# ---- the error bounds ------------------------------------------------------------------------
def _gamma(n: int, unit: float) -> float:
    """Higham's gamma_n = n u / (1 - n u)."""
    return n * unit / (1 - n * unit)


def fp32_error_bound(dim: int, abs_dot: torch.Tensor, norm_sq: torch.Tensor) -> torch.Tensor:
    """Bound on `|D32 - D|`, the error of the fp32 search's distance of one pair.

    `D = n - 2 <z, c>` in exact arithmetic on the float32 values the search uses (centred
    token `z`, centred code `c`, its float32 squared norm `n`); the search computes
    `D32 = fl(n - 2 s)` where `s` is a float32 dot product in any summation order, so
    (Higham, Accuracy and Stability, eq. 3.5) `|s - <z,c>| <= gamma_d sum|z_i c_i|` and one
    more rounding gives

        |D32 - D| <= 2 gamma_d a + u (n + 2 (1 + gamma_d) a),    a = sum_i |z_i c_i|,

    with `u = 2^-24`. `abs_dot` is `a` (or any upper bound of it, such as `|z| |c|`).
    """
    g = _gamma(dim, FP32_ROUNDOFF)
    bound = 2 * g * abs_dot + FP32_ROUNDOFF * (norm_sq + 2 * (1 + g) * abs_dot)
    return BOUND_SAFETY * bound


def fp64_error_bound(dim: int, abs_dot: torch.Tensor, norm_sq: torch.Tensor) -> torch.Tensor:
    """The same bound for the float64 re-check (`u = 2^-53`)."""
    g = _gamma(dim + 2, FP64_ROUNDOFF)
    return BOUND_SAFETY * (2 * g * abs_dot + g * norm_sq)


def lowp_error_bound(
    precision: str, dim: int, abs_dot: torch.Tensor, norm_sq: torch.Tensor
) -> torch.Tensor:
    """Bound on `|D~ - D|`, the error of a TF32/bf16 distance of one pair.

    With `p` the unit roundoff of the input format (`INPUT_ROUNDOFF`), the rounded inputs
    satisfy `|z^_i - z_i| <= p |z_i|`, `|c^_i - c_i| <= p |c_i|`, hence

        |sum z^_i c^_i - <z, c>| <= (2p + p^2) a                   (input rounding),

    the products `z^_i c^_i` are exact in float32 (11 + 11 and 8 + 8 significant bits), and
    their float32 accumulation on tensor cores (at most `d + 2` terms: the bf16 path also
    accumulates the code norm as two bfloat16 parts `n_hi + n_lo`) adds at most
    `gamma (sum |terms|) <= gamma ((1 + p)^2 2a + 2n)` with `gamma = gamma_{d+2}` of
    `ACCUMULATION_ROUNDOFF`. Splitting `n` into bfloat16 parts loses at most `p^2 n`, and
    the fp32 epilogue `fl(n - 2 s)` of the TF32 path one more `u (n + 2 |s|)`. So

        |D~ - D| <= 2 (2p + p^2) a + gamma (2 (1 + p)^2 a + 2 n) + p^2 n
                    + u (n + 2 (1 + 2p + p^2 + gamma) a) + d 2^-100 (1 + a + n),

    the last term covering flushed subnormals and underflowing products. Both paths, and the
    CPU emulation (float32 GEMM of the rounded inputs, `u`-accurate accumulation), satisfy it.
    """
    p = INPUT_ROUNDOFF[precision]
    g = _gamma(dim + 2, ACCUMULATION_ROUNDOFF)
    u = FP32_ROUNDOFF
    bound = (
        2 * (2 * p + p * p) * abs_dot
        + g * (2 * (1 + p) ** 2 * abs_dot + 2 * norm_sq)
        + p * p * norm_sq
        + u * (norm_sq + 2 * (1 + 2 * p + p * p + g) * abs_dot)
        + dim * UNDERFLOW_SLACK * (1 + abs_dot + norm_sq)
    )
    return BOUND_SAFETY * bound


# ---- the search --------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """Indices and, for the certified search, how many tokens needed the fp32 fallback."""

    indices: torch.Tensor
    fallback_tokens: int = 0


@dataclass(frozen=True)
class _Centred:
    """Token and code vectors centred on the codebook mean, in float32, and the codes' norms:
    exactly the values the fp32 search works on (both precisions compute them identically)."""

    z: torch.Tensor
    codes: torch.Tensor
    norms: torch.Tensor

    @staticmethod
    def of(z: torch.Tensor, codebook: torch.Tensor) -> _Centred:
        centre = codebook.float().mean(0)
        codes = codebook.float() - centre
        return _Centred(z.float() - centre, codes, codes.pow(2).sum(1))


def _chunks(n: int, k: int, block_elements: int) -> tuple[int, int]:
    """(row chunk, code chunk) of a `n x k` search held to `block_elements` per block."""
    code_chunk = min(k, max(1024, block_elements // min(n, 8192)))
    row_chunk = min(n, max(1, block_elements // code_chunk))
    return row_chunk, code_chunk


def _fp32_search(c: _Centred, rows: torch.Tensor, row_chunk: int, code_chunk: int):
    """The fp32 search of the centred tokens `rows` (the whole codebook, blocked).

    Each block is two kernels, each one parallel region: the fused `addmm` into one reused
    buffer and its row minima, written in place into a `(chunks, rows)` table; the table is
    reduced once per row block. Fewer regions matter on a busy machine, where every region
    waits for its slowest thread (a block used to take six: addmm, min, compare, two selects
    and an add). Ties between chunks go to the lower index (`argmin` returns the first).
    """
    n, k = rows.shape[0], c.codes.shape[0]
    device = rows.device
    n_chunks = -(-k // code_chunk)
    indices = torch.empty(n, dtype=torch.long, device=device)
    buffer = torch.empty(min(n, row_chunk), min(k, code_chunk), device=device)
    minima = torch.empty(n_chunks, min(n, row_chunk), device=device)
    where = torch.empty(n_chunks, min(n, row_chunk), dtype=torch.long, device=device)
    with _precise(device):
        for r0 in range(0, n, row_chunk):
            block_rows = rows[r0 : r0 + row_chunk]
            m = block_rows.shape[0]
            for j, c0 in enumerate(range(0, k, code_chunk)):
                norms = c.norms[c0 : c0 + code_chunk]
                dist = buffer[:m, : norms.shape[0]]
                # ||c||^2 - 2 z.c in one fused multiply-add (beta=1, alpha=-2).
                torch.addmm(
                    norms, block_rows, c.codes[c0 : c0 + code_chunk].t(), alpha=-2.0, out=dist
                )
                torch.min(dist, dim=1, out=(minima[j, :m], where[j, :m]))
            chunk = minima[:, :m].argmin(dim=0, keepdim=True)
            indices[r0 : r0 + m] = where[:, :m].gather(0, chunk)[0] + chunk[0] * code_chunk
    return indices


@torch.compiler.disable
@torch.no_grad()
def nearest_code(
    z: torch.Tensor,
    codebook: torch.Tensor,
    *,
    precision: SearchPrecision = "fp32",
    block_elements: int | None = None,
) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean distance) for every row of `z`.

    Args:
        z: `(N, d)` query vectors.
        codebook: `(K, d)` codes.
        precision: `fp32`, or the certified `tf32` / `bf16` search (same indices, see the
            module docstring).
        block_elements: largest `rows x codes` block of distances held at once (default: by
            device, see `cpu_block_elements` and `CUDA_BLOCK_ELEMENTS`).

    Returns:
        `(N,)` int64 indices, equal to `torch.cdist(z, codebook).argmin(1)` up to float32
        near-ties; ties go to the smallest index.
    """
    return search(z, codebook, precision=precision, block_elements=block_elements).indices


def search(
    z: torch.Tensor,
    codebook: torch.Tensor,
    *,
    precision: SearchPrecision = "fp32",
    block_elements: int | None = None,
    emulate: bool | None = None,
    keep_groups: int | None = None,
    rechecks: int | None = None,
) -> SearchResult:
    """`nearest_code` with the certified search's knobs and its fallback count.

    `emulate` (default: on CPU) computes the TF32/bf16 distances as float32 GEMMs of rounded
    inputs instead of on tensor cores; `keep_groups` and `rechecks` override the candidate
    counts (`KEEP_GROUPS`, `RECHECKS`).
    """
    if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code needs z (N, d) and codebook (K, d); got {tuple(z.shape)} and "
            f"{tuple(codebook.shape)}"
        )
    if precision not in SEARCH_PRECISIONS:
        raise ValueError(f"precision must be one of {SEARCH_PRECISIONS}, got {precision!r}")
    device = z.device
    with torch.no_grad(), _autocast_off(device.type):
        centred = _Centred.of(z, codebook)
        n, k = z.shape[0], codebook.shape[0]
        if n == 0:
            return SearchResult(torch.empty(0, dtype=torch.long, device=device))
        if block_elements is None:
            cuda = device.type == "cuda"
            block_elements = CUDA_BLOCK_ELEMENTS if cuda else cpu_block_elements()
        row_chunk, code_chunk = _chunks(n, k, block_elements)
        if precision == "fp32":
            return SearchResult(_fp32_search(centred, centred.z, row_chunk, code_chunk))
        options = _CertifiedOptions(
            precision,
            emulate=device.type != "cuda" if emulate is None else emulate,
            keep_groups=keep_groups or KEEP_GROUPS[precision],
            rechecks=rechecks or RECHECKS[precision],
        )
        return certified_search(centred, options, row_chunk, code_chunk, block_elements)


# ---- the certified low-precision search ----------------------------------------------------
@dataclass(frozen=True)
class _CertifiedOptions:
    precision: str
    emulate: bool
    keep_groups: int
    rechecks: int


class _LowPrecisionDistances:
    """`D~ = n - 2 <z^, c^>` in blocks, from inputs rounded once to TF32 or bfloat16.

    Emulated (and TF32 on CUDA): a float32 `addmm` of the rounded inputs, with TF32 on for
    real tensor cores (exact on inputs already rounded to TF32). bf16 on CUDA: one bfloat16
    GEMM with float32 output on `[z^, 1, 1]` and `[-2 c^, n_hi, n_lo]`, so that the norm is
    added inside the accumulation; where this PyTorch cannot return float32 from a bfloat16
    GEMM, the TF32 path runs on the bfloat16-rounded values instead (same bound).
    """

    def __init__(self, c: _Centred, options: _CertifiedOptions) -> None:
        self.c, self.options = c, options
        rounding = ROUNDING[options.precision]
        self.codes = rounding(c.codes)
        self.bf16_gemm = (
            options.precision == "bf16" and not options.emulate and _bf16_gemm_has_fp32_output()
        )
        if self.bf16_gemm:
            k, d = c.codes.shape
            width = -(-(d + 2) // 8) * 8  # tensor-core friendly
            aug = torch.zeros(k, width, dtype=torch.bfloat16, device=c.codes.device)
            aug[:, :d] = (-2 * self.codes).bfloat16()
            high = c.norms.bfloat16()
            aug[:, d], aug[:, d + 1] = high, (c.norms - high.float()).bfloat16()
            self.codes, self.width = aug, width
        self.rounding = rounding

    def prepare_rows(self, rows: torch.Tensor) -> torch.Tensor:
        rounded = self.rounding(rows)
        if not self.bf16_gemm:
            return rounded
        d = rows.shape[1]
        aug = torch.zeros(rows.shape[0], self.width, dtype=torch.bfloat16, device=rows.device)
        aug[:, :d] = rounded.bfloat16()
        aug[:, d : d + 2] = 1
        return aug

    def block(self, rows: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        if self.bf16_gemm:
            return torch.mm(rows, self.codes[c0:c1].t(), out_dtype=torch.float32)
        tensor_cores = not self.options.emulate and rows.device.type == "cuda"
        switch = cuda_tf32(True) if tensor_cores else _precise(rows.device)
        with switch:
            return torch.addmm(self.c.norms[c0:c1], rows, self.codes[c0:c1].t(), alpha=-2.0)


_BF16_FP32_OUTPUT: dict[str, bool] = {}


def _bf16_gemm_has_fp32_output() -> bool:
    """Whether `torch.mm(bf16, bf16, out_dtype=float32)` runs on CUDA here (PyTorch >= 2.8)."""
    if "cuda" not in _BF16_FP32_OUTPUT:
        try:
            a = torch.ones(8, 8, dtype=torch.bfloat16, device="cuda")
            _BF16_FP32_OUTPUT["cuda"] = torch.mm(a, a, out_dtype=torch.float32).dtype == (
                torch.float32
            )
        except (RuntimeError, TypeError):
            _BF16_FP32_OUTPUT["cuda"] = False
    return _BF16_FP32_OUTPUT["cuda"]


def _smallest(values: torch.Tensor, keep: int):
    """The `keep` smallest entries of each row (values, positions) and the next one (a lower
    bound of every entry not kept; None when nothing is left out)."""
    take = min(keep + 1, values.shape[1])
    vals, pos = values.topk(take, dim=1, largest=False)
    if take <= keep:
        return vals, pos, None
    return vals[:, :keep], pos[:, :keep], vals[:, keep]


class _BestGroups:
    """Per token, the `keep` groups of `GROUP_SIZE` consecutive codes with the smallest minimum
    `D~` seen so far, the `D~` of all their members, and `floor`: a lower bound of `D~` over
    every code seen that is not a member (dropped groups' minima bound their members)."""

    def __init__(self, rows: int, keep: int, device: torch.device) -> None:
        self.keep = keep
        self.mins = torch.empty(rows, 0, device=device)
        self.ids = torch.empty(rows, 0, dtype=torch.long, device=device)
        self.members = torch.empty(rows, 0, GROUP_SIZE, device=device)
        self.floor = torch.full((rows,), float("inf"), device=device)

    def _lower_floor(self, bound: torch.Tensor | None) -> None:
        if bound is not None:
            self.floor = torch.minimum(self.floor, bound)

    def add_block(self, dist: torch.Tensor, first_group: int) -> None:
        """Fold in a `(rows, L)` block of `D~` whose first code opens group `first_group`."""
        rows, length = dist.shape
        pad = -length % GROUP_SIZE
        if pad:  # the codebook's last, partial group: padding never wins
            dist = torch.nn.functional.pad(dist, (0, pad), value=float("inf"))
        grouped = dist.view(rows, -1, GROUP_SIZE)
        mins, pos, dropped = _smallest(grouped.amin(2), self.keep)
        self._lower_floor(dropped)
        members = grouped.gather(1, pos.unsqueeze(2).expand(-1, -1, GROUP_SIZE))
        mins = torch.cat([self.mins, mins], 1)
        ids = torch.cat([self.ids, pos + first_group], 1)
        members = torch.cat([self.members, members], 1)
        self.mins, pos, dropped = _smallest(mins, self.keep)
        self._lower_floor(dropped)
        self.ids = ids.gather(1, pos)
        self.members = members.gather(1, pos.unsqueeze(2).expand(-1, -1, GROUP_SIZE))

    def candidates(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `count` members with the smallest `D~` (code ids, `(rows, count)`; ids past the
        codebook are padding) and a lower bound of `D~` over every other code."""
        offsets = torch.arange(GROUP_SIZE, device=self.ids.device)
        ids = (self.ids.unsqueeze(2) * GROUP_SIZE + offsets).flatten(1)
        _, pos, dropped = _smallest(self.members.flatten(1), count)
        self._lower_floor(dropped)
        return ids.gather(1, pos), self.floor


def certified_search(
    c: _Centred, options: _CertifiedOptions, row_chunk: int, code_chunk: int, block_elements: int
) -> SearchResult:
    """The fp32 search's indices from TF32/bf16 distances, certified token by token.

    For each token: low-precision distances `D~` of every code (blocked as the fp32 search),
    the `KEEP_GROUPS` groups of 16 consecutive codes with the smallest minimum `D~`, and among
    their members the `RECHECKS` codes `S` with the smallest `D~`; every code outside `S` then
    has `D~ >= T` (`T`: the smallest `D~` left out, bounded through the group minima). The
    codes of `S` are re-scored in float64 (`D64`, error `fp64_error_bound`); `w` is the one
    with the smallest `D64` (smallest index among equals). With `E32` the fp32 search's own
    error (`fp32_error_bound`) and `E~` the low-precision error (`lowp_error_bound`), the
    token is certified when

    1. `D64_w + E64_w + E32_w < T - max E~ - max E32` (maxima over all codes, via
       `|z| max|c|` and `max n`): every code outside `S` then has a larger fp32 distance
       than `w`, so the fp32 search's winner is in `S`; and
    2. every other code `j` of `S` either is the same vector as code `w` (then, with the
       larger index, it loses the tie) or has `D64_j - E64_j - E32_j > D64_w + E64_w + E32_w`,
       so that its fp32 distance exceeds `w`'s: the fp32 search picks `w`.

    Tokens that fail (near-ties at float32 resolution, NaN, magnitudes near overflow) go
    through the fp32 search itself (`FALLBACK_MIN_ROWS` rows at least, with the same code
    chunks). The result equals the fp32 search's on every token, given that (a) the fp32
    GEMM's error obeys the `gamma_d` bound, i.e. it is IEEE float32 (TF32 is switched off),
    and (b) the fp32 search computes identical code vectors' distances identically and gives
    the fallback rows the same float32 values as in the full search; (b) holds for GEMMs of the
    same kind (one summation order per output element), which the tests check on each device.
    Cost: one host synchronisation per call, to learn how many tokens fall back.
    """
    n, k = c.z.shape[0], c.codes.shape[0]
    device = c.z.device
    lowp = _LowPrecisionDistances(c, options)
    chunk = k if code_chunk >= k else max(GROUP_SIZE, code_chunk // GROUP_SIZE * GROUP_SIZE)
    scale = _Scale.of(c, options.precision)
    indices = torch.empty(n, dtype=torch.long, device=device)
    certified = torch.empty(n, dtype=torch.bool, device=device)
    for r0 in range(0, n, row_chunk):
        rows = c.z[r0 : r0 + row_chunk]
        low_rows = lowp.prepare_rows(rows)
        best = _BestGroups(rows.shape[0], options.keep_groups, device)
        for c0 in range(0, k, chunk):
            best.add_block(lowp.block(low_rows, c0, min(k, c0 + chunk)), c0 // GROUP_SIZE)
        candidates, floor = best.candidates(options.rechecks)
        winner, ok = _certify(c, rows, candidates, floor, scale)
        indices[r0 : r0 + row_chunk], certified[r0 : r0 + row_chunk] = winner, ok
    fallback = (~certified).nonzero().squeeze(1)  # the one host synchronisation
    if fallback.numel():
        indices[fallback] = _fallback(c, fallback, code_chunk, block_elements)
    return SearchResult(indices, int(fallback.numel()))


@dataclass(frozen=True)
class _Scale:
    """What the bounds need of the whole codebook: the largest code norm and squared norm."""

    precision: str
    dim: int
    code_norm_max: torch.Tensor
    norm_sq_max: torch.Tensor

    @staticmethod
    def of(c: _Centred, precision: str) -> _Scale:
        codes = c.codes.double()
        return _Scale(precision, codes.shape[1], codes.norm(dim=1).max(), c.norms.double().max())


#: Magnitudes below which nothing in a distance can overflow float32 (largest ~2^128).
_SAFE_MAGNITUDE = 2.0**120


def _certify(c: _Centred, rows, candidates, floor, scale: _Scale):
    """(winner, certified) per token from its candidates' exact distances (conditions 1, 2
    of `certified_search`)."""
    k, d = c.codes.shape
    valid = candidates < k
    safe = candidates.clamp(max=k - 1)
    codes = c.codes[safe]  # (rows, r, d)
    z64, codes64 = rows.double(), codes.double()
    norms64 = c.norms.double()[safe]
    exact = norms64 - 2 * (codes64 @ z64.unsqueeze(2)).squeeze(2)
    exact = torch.where(valid, exact, float("inf"))
    best = exact.min(1).values
    winner = torch.where(exact == best.unsqueeze(1), candidates, k).min(1).values
    winner = torch.where(torch.isfinite(best), winner, safe[:, 0])
    abs_dot = (codes64.abs() * z64.abs().unsqueeze(1)).sum(2)
    slack = fp32_error_bound(d, abs_dot, norms64) + fp64_error_bound(d, abs_dot, norms64)
    at_winner = (candidates == winner.unsqueeze(1)).int().argmax(1, keepdim=True)
    winner_upper = best + slack.gather(1, at_winner).squeeze(1)
    # 1. Every code outside the candidates is farther, in fp32, than the winner.
    abs_dot_max = z64.norm(dim=1) * scale.code_norm_max
    outside = lowp_error_bound(scale.precision, d, abs_dot_max, scale.norm_sq_max)
    outside = outside + fp32_error_bound(d, abs_dot_max, scale.norm_sq_max)
    first = winner_upper < floor.double() - outside
    # 2. Every other candidate is farther in fp32 too, or the same vector (a later index).
    same_vector = (codes == c.codes[winner].unsqueeze(1)).all(2) & valid
    farther = (exact - slack > winner_upper.unsqueeze(1)) | ~valid
    second = (farther | same_vector).all(1)
    in_range = (abs_dot_max < _SAFE_MAGNITUDE) & (scale.norm_sq_max < _SAFE_MAGNITUDE)
    return winner, first & second & in_range & torch.isfinite(winner_upper)


def _fallback(c: _Centred, tokens: torch.Tensor, code_chunk: int, block_elements: int):
    """The fp32 search of the uncertified `tokens`, padded to `FALLBACK_MIN_ROWS` rows and
    walking the codes in the full search's chunks, so its GEMMs are of the same kind."""
    count = tokens.numel()
    if count < FALLBACK_MIN_ROWS:
        tokens = torch.cat([tokens, tokens[:1].expand(FALLBACK_MIN_ROWS - count)])
    rows = c.z[tokens]
    row_chunk = min(rows.shape[0], max(FALLBACK_MIN_ROWS, block_elements // code_chunk))
    return _fp32_search(c, rows, row_chunk, code_chunk)[:count]
