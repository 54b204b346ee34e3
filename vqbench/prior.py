"""A small causal transformer over a tokenizer's code indices (the downstream probe's prior).

The backbone is Hugging Face `transformers`' GPT-2 (`GPT2Model` from a config, no download),
fed through `inputs_embeds`: its key/value cache (`DynamicCache`) makes sampling one forward
pass of one position per token. Around it, vqbench adds what GPT-2 does not know about image
tokens:

* **Digits.** A position's code is one index (`index_sizes() == [K]`) or, for a composite
  quantizer, a tuple of indices, one per stage (`index_sizes() == [K1, ..., KD]`, indices
  `(B, H, W, D)`). Every component whose size exceeds `softmax_limit` is split into
  mixed-radix digits of at most that many values (per bit when the limit is 2), so each
  position is a short sequence of digits with radices `r_1 .. r_m` (`DigitLayout`).
* **Input.** A position enters the transformer as the sum of one learned embedding per digit
  (RQ-Transformer sums its stage embeddings the same way); the first input is a start
  embedding: one per class for class-conditional data, a single one otherwise.
* **Head.** `p(code | h) = prod_j p(d_j | h, d_<j)`: digit `j` is a softmax over `r_j` values
  from a state that has seen the transformer's output `h` and the digits before it (a
  residual MLP step per digit). By the chain rule the negative log-likelihood is exact, and
  with one digit it is a plain softmax over the codebook.
* **Sampling.** Categorical draws by inverse CDF from an explicit `torch.Generator`, so that
  sampling with the cache and by full recomputation draw the same tokens for the same seed.
"""

from __future__ import annotations

import functools
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from vqbench.errors import VQBenchError


# ---- digits ------------------------------------------------------------------------------------
def prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors + ([n] if n > 1 else [])


def split_radix(size: int, limit: int) -> list[int]:
    """The fewest digit radices, each at most `limit`, whose product is exactly `size`.

    Prime factors are packed first-fit-decreasing into the emptiest digit, so the digits come
    out balanced (2^18 with limit 4096: [512, 512]; with limit 2: eighteen 2s). Sizes with a
    prime factor above `limit` cannot be split exactly and are refused.
    """
    if size <= limit:
        return [size]
    primes = sorted(prime_factors(size), reverse=True)
    if primes[0] > limit:
        raise VQBenchError(
            f"a code index of {size:,} values cannot be split into digits of at most {limit:,} "
            f"values (it has the prime factor {primes[0]:,}); raise probe.softmax_limit to "
            f"{primes[0]:,} or more"
        )
    count = math.ceil(math.log(size) / math.log(limit) - 1e-9)
    while True:
        bins = [1] * count
        for p in primes:
            fits = [i for i, b in enumerate(bins) if b * p <= limit]
            if not fits:
                break
            i = min(fits, key=lambda k: bins[k])
            bins[i] *= p
        else:
            return sorted(bins, reverse=True)
        count += 1


class DigitLayout:
    """How the code index of one position becomes the digits the prior predicts, and back.

    `index_sizes` is what the quantizer says of its indices (`Quantizer.index_sizes()`);
    component `c` is split into `split_radix(index_sizes[c], softmax_limit)` digits, most
    significant first. `radices` lists every digit of a position, component after component.
    """

    def __init__(self, index_sizes: list[int], softmax_limit: int) -> None:
        if not index_sizes or any(int(s) < 1 for s in index_sizes):
            raise VQBenchError(f"index sizes {index_sizes} must be positive integers")
        self.index_sizes = [int(s) for s in index_sizes]
        self.split = [split_radix(s, softmax_limit) for s in self.index_sizes]
        self.radices = [r for digits in self.split for r in digits]

    @property
    def components(self) -> int:
        return len(self.index_sizes)

    @property
    def bits_per_position(self) -> float:
        """log2 of the number of distinct codes a position can take (uniform-prior bits)."""
        return sum(math.log2(s) for s in self.index_sizes)

    def to_digits(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices `(..., D)` (D components, 1 for a plain quantizer) to digits `(..., m)`."""
        if indices.shape[-1] != self.components:
            raise VQBenchError(
                f"indices of shape {tuple(indices.shape)} do not end in the "
                f"{self.components} components of {self.index_sizes}"
            )
        digits = []
        for c, radices in enumerate(self.split):
            value = indices[..., c].long()
            place = math.prod(radices)
            for r in radices:
                place //= r
                digits.append(torch.div(value, place, rounding_mode="floor") % r)
        return torch.stack(digits, -1)

    def from_digits(self, digits: torch.Tensor) -> torch.Tensor:
        """Digits `(..., m)` back to indices `(..., D)`."""
        components, j = [], 0
        for radices in self.split:
            value = torch.zeros_like(digits[..., 0], dtype=torch.long)
            for r in radices:
                value = value * r + digits[..., j].long()
                j += 1
            components.append(value)
        return torch.stack(components, -1)


# ---- sampling ----------------------------------------------------------------------------------
def categorical(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of `logits` by inverse CDF (one uniform per row from `generator`)."""
    probs = torch.softmax(logits.float(), dim=-1)
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device)
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, u * cdf[..., -1:]).squeeze(-1).clamp_max(probs.shape[-1] - 1)


# ---- the model ---------------------------------------------------------------------------------
class DigitHead(nn.Module):
    """`log p(code | h)` as `sum_j log p(d_j | h, d_<j)` (exact by the chain rule).

    Digit `j` is read from a state `s_j` by a linear layer; `s_1 = h` and
    `s_{j+1} = s_j + MLP_j(LayerNorm(s_j + E_j[d_j]))`, so each digit sees the digits before it.
    """

    def __init__(self, radices: list[int], width: int) -> None:
        super().__init__()
        self.radices = list(radices)
        self.out = nn.ModuleList(nn.Linear(width, r) for r in radices)
        self.feed = nn.ModuleList(nn.Embedding(r, width) for r in radices[:-1])
        self.mix = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, 2 * width),
                nn.GELU(),
                nn.Linear(2 * width, width),
            )
            for _ in radices[:-1]
        )

    def _next_state(self, j: int, state: torch.Tensor, digit: torch.Tensor) -> torch.Tensor:
        return state + self.mix[j](state + self.feed[j](digit))

    def log_prob(self, h: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """`log p(digits | h)` in nats, float32, shape `h.shape[:-1]`."""
        state, total = h, torch.zeros(h.shape[:-1], device=h.device)
        for j, out in enumerate(self.out):
            logp = F.log_softmax(out(state).float(), dim=-1)
            total = total + logp.gather(-1, digits[..., j : j + 1]).squeeze(-1)
            if j < len(self.feed):
                state = self._next_state(j, state, digits[..., j])
        return total

    def sample(
        self, h: torch.Tensor, generator: torch.Generator | None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Digits `(..., m)` drawn digit by digit."""
        state, digits = h, []
        for j, out in enumerate(self.out):
            digit = categorical(out(state).float() / temperature, generator)
            digits.append(digit)
            if j < len(self.feed):
                state = self._next_state(j, state, digit)
        return torch.stack(digits, -1)


@functools.cache
def cache_argument() -> str:
    """The name of GPT-2's key/value cache argument: `cache` since transformers 5.25
    (`past_key_values` warns there), `past_key_values` before."""
    from transformers import GPT2Model

    return (
        "cache"
        if "cache" in inspect.signature(GPT2Model.forward).parameters
        else ("past_key_values")
    )


def gpt2_backbone(width: int, layers: int, heads: int, positions: int, dropout: float):
    """Hugging Face GPT-2 built from a config (random weights; nothing is downloaded)."""
    from transformers import GPT2Config, GPT2Model

    if width % heads:
        raise VQBenchError(f"probe.width={width} must be a multiple of probe.heads={heads}")
    config = GPT2Config(
        vocab_size=1,  # tokens enter as inputs_embeds; GPT-2's own table is unused
        n_positions=positions,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        n_inner=4 * width,
        activation_function="gelu",
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=None,
        eos_token_id=None,
        use_cache=False,
    )
    return GPT2Model(config)


class TokenPrior(nn.Module):
    """A causal transformer over the `positions` token positions of an image (raster order).

    `forward(digits (B, L, m), classes (B,) or None)` returns the negative log-likelihood of
    every position in nats `(B, L)`; `sample` draws digits `(n, L, m)`.
    """

    def __init__(
        self,
        layout: DigitLayout,
        positions: int,
        *,
        classes: int = 0,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layout, self.positions, self.classes = layout, positions, classes
        self.backbone = gpt2_backbone(width, layers, heads, positions, dropout)
        self.backbone.wte.requires_grad_(False)  # unused: tokens enter as inputs_embeds
        self.start = nn.Embedding(max(classes, 1), width)
        self.embed = nn.ModuleList(nn.Embedding(r, width) for r in layout.radices)
        self.head = DigitHead(layout.radices, width)

    def embed_digits(self, digits: torch.Tensor) -> torch.Tensor:
        return sum(e(digits[..., j]) for j, e in enumerate(self.embed))

    def start_embedding(self, classes: torch.Tensor | None, n: int) -> torch.Tensor:
        if classes is None:
            classes = torch.zeros(n, dtype=torch.long, device=self.start.weight.device)
        return self.start(classes.long())[:, None]

    def forward(self, digits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        digits = digits.long()
        b, length = digits.shape[:2]
        if length != self.positions:
            raise VQBenchError(f"the prior models {self.positions} positions, got {length}")
        inputs = torch.cat(
            [self.start_embedding(classes, b), self.embed_digits(digits[:, :-1])], dim=1
        )
        h = self.backbone(inputs_embeds=inputs).last_hidden_state
        return -self.head.log_prob(h, digits)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        classes: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Digits `(n, L, m)`; `use_cache=False` recomputes the whole prefix at each step."""
        inputs = self.start_embedding(classes, n)  # the cache holds the rest; else the prefix
        cache, drawn = None, []
        for _ in range(self.positions):
            if use_cache:
                out = self.backbone(
                    inputs_embeds=inputs, **{cache_argument(): cache}, use_cache=True
                )
                cache = getattr(out, "cache", None) or out.past_key_values
            else:
                out = self.backbone(inputs_embeds=inputs, use_cache=False)
            digits = self.head.sample(out.last_hidden_state[:, -1], generator, temperature)
            drawn.append(digits)
            step = self.embed_digits(digits)[:, None]
            inputs = step if use_cache else torch.cat([inputs, step], dim=1)
        return torch.stack(drawn, 1)
