"""Spherical Leech quantization, Λ24-SQ (Zhao et al. 2025, arXiv 2512.14697; official code
zhaoyue-zephyrus/bsq-vit, config `configs/tokenizer/imagenet_256x256_l24sq_stylegan_f8_fp16.yaml`
and `transcoder/models/quantizer/vq.py` `VectorQuantizer` with `l2_norm: True`,
`predefined_codebook`, `freeze_codebook: True`).

Tokens are projected from `dim` to `24 * groups` channels (the reference's `quant_embed`
linear; none when `dim == 24 * groups`), split into groups of 24, and each group is
l2-normalised and replaced by the nearest of the 196,560 normalised minimal vectors of the
Leech lattice (its first shell, the kissing configuration in 24 dimensions):

    u = h / ||h||,    k = argmax_c u.c = argmin_c ||u - c||,    ẑ = u + sg(c_k - u)

The codebook is fixed (a non-trainable buffer, built here from the lattice's construction, not
loaded: see `leech_minimal_vectors`). The reference's quantizer loss is

    L_q = beta * mean ||sg(c_k) - u||^2 + mean ||c_k - sg(u)||^2      (sums over the 24 channels)

but its Λ24-SQ config trains with `codebook_weight: 0`, so the tokenizer sees no quantizer loss:
`loss_weight` (default 0, the config's) multiplies `L_q`; `beta` is the model's default 0.25.
The commitment distance is logged either way. Indices are one per group (`(N,)` for one group,
`(N, groups)` for several, each in `[0, 196560)`); the index order is that of the construction
(shape A, then B, then C below), not the reference's `.npy` file (which is not public in git).
Search: `search: lattice` (default) decodes exactly from the construction (`LeechDecoder`,
tested equal to a float64 scan); `search: scan` is the blocked `vqbench.search.nearest_code`
over the 196,560 codes. Neither holds an `N x K` matrix.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import ClassVar, Literal

import numpy as np
import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from vqbench.quantizer import Quantizer, QuantizerOutput, QuantizerParams, register_quantizer
from vqbench.search import nearest_code

#: Channels of one Leech group and the size of the first shell (the kissing number).
LEECH_DIM = 24
LEECH_SHELL = 196_560
#: Squared norm of a minimal vector in the integer coordinates of the construction.
LEECH_MIN_NORM = 32

#: Generator polynomial of the cyclic [23, 12, 7] Golay code, 1 + x^2 + x^4 + x^5 + x^6 +
#: x^10 + x^11 (MacWilliams & Sloane, Ch. 2 §6); a parity bit extends it to [24, 12, 8].
_GOLAY_POLY_EXPONENTS = (0, 2, 4, 5, 6, 10, 11)


@functools.lru_cache(maxsize=1)
def golay_codewords() -> np.ndarray:
    """The 4,096 codewords `(4096, 24)` (uint8) of the extended binary Golay code."""
    poly = np.zeros(23, dtype=np.uint8)
    poly[list(_GOLAY_POLY_EXPONENTS)] = 1
    generator = np.stack([np.roll(poly, shift) for shift in range(12)])  # x^s g(x), s < 12
    messages = (np.arange(4096)[:, None] >> np.arange(12)) & 1
    words = (messages @ generator) % 2
    parity = words.sum(1, keepdims=True) % 2
    return np.concatenate([words, parity], axis=1).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def leech_minimal_vectors() -> torch.Tensor:
    """The 196,560 minimal vectors `(196560, 24)` (int8, squared norm 32) of the Leech lattice
    in the standard coordinates of Conway & Sloane, SPLAG Ch. 4 §11 (lattice scaled by
    sqrt 8), built from the extended Golay code:

    * A, `(±4, ±4, 0^22)`: every pair of positions, every sign: 276 x 4 = 1,104;
    * B, `(±2^8, 0^16)`: ±2 on the 759 octads (weight-8 codewords), an even number of minus
      signs: 759 x 128 = 97,152;
    * C, `(∓3, ±1^23)`: `(-3, 1^23)` with the -3 at any of the 24 positions, signs flipped on
      any of the 4,096 codewords: 98,304.
    """
    pairs = np.array(list(itertools.combinations(range(LEECH_DIM), 2)))  # (276, 2)
    signs2 = np.array(list(itertools.product((4, -4), repeat=2)))  # (4, 2)
    shape_a = np.zeros((len(pairs), 4, LEECH_DIM), dtype=np.int8)
    rows = np.arange(len(pairs))[:, None, None]
    shape_a[rows, np.arange(4)[None, :, None], pairs[:, None, :]] = signs2[None]

    words = golay_codewords()
    octads = np.array([np.flatnonzero(w) for w in words if w.sum() == 8])  # (759, 8)
    patterns = np.array(list(itertools.product((2, -2), repeat=8)))
    patterns = patterns[(patterns < 0).sum(1) % 2 == 0]  # (128, 8), even minus signs
    shape_b = np.zeros((len(octads), len(patterns), LEECH_DIM), dtype=np.int8)
    rows = np.arange(len(octads))[:, None, None]
    shape_b[rows, np.arange(len(patterns))[None, :, None], octads[:, None, :]] = patterns[None]

    base = np.ones((LEECH_DIM, LEECH_DIM), dtype=np.int8) - 4 * np.eye(LEECH_DIM, dtype=np.int8)
    flips = (1 - 2 * words.astype(np.int8))[:, None, :]  # (4096, 1, 24) signs (-1)^c
    shape_c = flips * base[None]  # (4096, 24, 24): codeword, position of the -3

    vectors = np.concatenate(
        [s.reshape(-1, LEECH_DIM) for s in (shape_a, shape_b, shape_c)], axis=0
    )
    return torch.from_numpy(np.ascontiguousarray(vectors))


class LeechDecoder:
    """Exact nearest minimal vector, `argmax_v x.v` over the 196,560, from the construction
    instead of a scan of the codebook (about 70 operations per token and code shape's worth
    of structure instead of 196,560 x 24 multiply-adds). With `|x|_(1) >= |x|_(2)` the two
    largest magnitudes, octad `o` and codeword `c` (signs `s = (-1)^c`, `y = s * x`):

    * A: `4 (|x|_(1) + |x|_(2))`, the signs of those two entries;
    * B: `2 (sum_{i in o} |x_i| - 2 [odd number of x_i < 0 on o] min_{i in o} |x_i|)`, the
      signs of `x` on `o`, the smallest flipped when the parity requires;
    * C: `x.v = sum_i y_i - 4 y_j` for the -3 at `j`, so `max_j = sum(y) - 4 min(y)`. Both
      reductions run per block of 8 positions over the 256 sign patterns of a block, and each
      codeword gathers its 3 blocks' values.

    The index is the row of `leech_minimal_vectors()`; ties (a measure-zero set) may resolve
    to another of the tied codes than a scan would.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        words = torch.from_numpy(golay_codewords().astype(np.int64))
        octads = words.sum(1) == 8
        self.octads = torch.nonzero(words[octads])[:, 1].view(-1, 8).to(device)
        pairs = torch.tensor(list(itertools.combinations(range(LEECH_DIM), 2)))
        self.pair_index = torch.zeros(LEECH_DIM, LEECH_DIM, dtype=torch.long)
        self.pair_index[pairs[:, 0], pairs[:, 1]] = torch.arange(len(pairs))
        self.pair_index = self.pair_index.to(device)
        bits = (torch.arange(256)[:, None] >> torch.arange(7, -1, -1)) & 1  # MSB first
        even = bits.sum(1) % 2 == 0
        rank = torch.full((256,), -1, dtype=torch.long)
        rank[even] = torch.arange(int(even.sum()))  # the order of itertools.product
        self.pattern_rank, self.weights = rank.to(device), (1 << torch.arange(7, -1, -1)).to(device)
        self.block_signs = (1 - 2 * bits.flip(1)).float().to(device)  # bit k of p -> position k
        blocks = words.view(-1, 3, 8) * (1 << torch.arange(8))  # pattern p_b(c), LSB first
        self.gather = (blocks.sum(2) + 256 * torch.arange(3)).to(device)  # (4096, 3)
        self.word_signs = (1 - 2 * words).float().to(device)
        self.offsets = (0, len(pairs) * 4, len(pairs) * 4 + int(octads.sum()) * 128)

    def __call__(self, x: torch.Tensor, rows: int = 256) -> torch.Tensor:
        """Indices `(n,)` of the nearest minimal vector to each row of `x` `(n, 24)`, `rows`
        tokens at a time (about 0.5 MB of work space each)."""
        return torch.cat([self._decode(part) for part in x.split(rows)])

    def _shape_a(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top, where = x.abs().topk(2, dim=1)
        i, j = where.min(1).values, where.max(1).values
        neg = x < 0
        signs = 2 * neg.gather(1, i[:, None]) + neg.gather(1, j[:, None])
        return 4 * top.sum(1), self.pair_index[i, j] * 4 + signs.squeeze(1)

    def _shape_b(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        on = x[:, self.octads]  # (n, 759, 8)
        magnitude = on.abs()
        odd = (on < 0).sum(2) % 2
        score, octad = (2 * (magnitude.sum(2) - 2 * odd * magnitude.amin(2))).max(1)
        best = x.gather(1, self.octads[octad])  # (n, 8): only the winners' signs are needed
        neg = (best < 0).long()
        flip = (neg.sum(1, keepdim=True) % 2) * F.one_hot(best.abs().argmin(1), 8)
        return score, octad * 128 + self.pattern_rank[((neg ^ flip) * self.weights).sum(1)]

    def _shape_c(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x.view(-1, 3, 1, 8) * self.block_signs  # (n, 3 blocks, 256 patterns, 8)
        sums, mins = y.sum(3).flatten(1), y.amin(3).flatten(1)
        columns = [self.gather[:, b] for b in range(3)]
        total = sum(sums.index_select(1, c) for c in columns)  # (n, 4096): y.sum() per word
        low = torch.minimum(mins.index_select(1, columns[0]), mins.index_select(1, columns[1]))
        low = torch.minimum(low, mins.index_select(1, columns[2]))
        score, word = (total - 4 * low).max(1)
        position = (x * self.word_signs[word]).argmin(1)  # the -3 of the winner only
        return score, word * LEECH_DIM + position

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        shapes = (self._shape_a(x), self._shape_b(x), self._shape_c(x))
        scores = torch.stack([score for score, _ in shapes], 1)
        indices = torch.stack([i + off for (_, i), off in zip(shapes, self.offsets, strict=True)])
        return indices.T.gather(1, scores.argmax(1, keepdim=True)).squeeze(1)


def leech_codebook() -> torch.Tensor:
    """The minimal vectors normalised to the unit sphere, float32 `(196560, 24)`."""
    return leech_minimal_vectors().float() / math.sqrt(LEECH_MIN_NORM)


class LeechParams(QuantizerParams):
    dim: pydantic.PositiveInt = 24
    groups: pydantic.PositiveInt = 1
    loss_weight: pydantic.NonNegativeFloat = 0.0
    beta: pydantic.NonNegativeFloat = 0.25
    search: Literal["lattice", "scan"] = "lattice"
    search_precision: Literal["fp32", "tf32", "bf16"] = "fp32"

    def lookup_bytes(self) -> int:
        return 4 * LEECH_SHELL * LEECH_DIM  # the float32 codebook, shared by the groups


@register_quantizer("leech")
class LeechQuantizer(Quantizer):
    """Spherical Leech (Λ24-SQ): unit 24-channel groups to the nearest of 196,560 Leech vectors.

    The codebook, the normalised first shell of the Leech lattice, is fixed; see the module.
    """

    Params = LeechParams
    small_config = {"dim": 16}
    explicit_codebook: ClassVar[bool] = True

    def __init__(self, **params) -> None:
        super().__init__(**params)
        p = self.params
        width = LEECH_DIM * p.groups
        needs_projection = p.dim != width
        self.project_in = nn.Linear(p.dim, width) if needs_projection else nn.Identity()
        self.project_out = nn.Linear(width, p.dim) if needs_projection else nn.Identity()
        # Built, not stored: every checkpoint would otherwise carry 19 MB of constants.
        self.register_buffer("codes", leech_codebook(), persistent=False)
        self._decoders: dict[torch.device, LeechDecoder] = {}

    @classmethod
    def codebook_kind(cls) -> str:
        return "fixed"

    @property
    def codebook_size(self) -> int:
        return LEECH_SHELL**self.params.groups

    def index_sizes(self) -> list[int]:
        return [LEECH_SHELL] * self.params.groups

    def independent_groups(self) -> int:
        return 0  # nothing in the codebook is trained

    def codebook(self) -> torch.Tensor:
        """The `(196560, 24)` normalised codes every group searches."""
        return self.codes

    def _group_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """`(N, dim)` tokens to l2-normalised `(N * groups, 24)` group vectors."""
        h = self.project_in(z).reshape(-1, LEECH_DIM)
        return F.normalize(h, dim=1)

    def _shape_indices(self, indices: torch.Tensor, tokens: int) -> torch.Tensor:
        return indices.view(tokens) if self.params.groups == 1 else indices.view(tokens, -1)

    def nearest(self, u: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each unit vector `(n, 24)`: the lattice decoder, or the
        blocked scan of the codebook (`search: scan`, in `search_precision`)."""
        if self.params.search == "scan":
            return nearest_code(u, self.codes, precision=self.params.search_precision)
        if u.device not in self._decoders:
            self._decoders[u.device] = LeechDecoder(u.device)
        with torch.no_grad():
            return self._decoders[u.device](u)

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        p = self.params
        u = self._group_tokens(z)
        indices = self.nearest(u.detach())
        q = F.embedding(indices, self.codes)
        commitment = (q.detach() - u).square().sum(1).mean()
        codebook_term = (q - u.detach()).square().sum(1).mean()  # no gradient: fixed codes
        loss = p.loss_weight * (p.beta * commitment + codebook_term)
        z_q = self.estimator(u, q).reshape(z.shape[0], -1)
        stats = {"commitment": commitment}
        return QuantizerOutput(
            self.project_out(z_q), self._shape_indices(indices, z.shape[0]), loss, stats
        )

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        codes = F.embedding(indices.reshape(-1), self.codes)
        return self.project_out(codes.reshape(indices.shape[0], -1))
