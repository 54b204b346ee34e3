"""SF-DiVeQ: space-filling differentiable vector quantization (Vali et al. 2025, arXiv
2509.26469; official code AaltoML/DiVeQ `vqgan_generation/sf_diveq.py::SFDIVEQ`, identical
in `vqvae_compression/`; its curve is the authors' earlier space-filling VQ,
MHVali/Space-Filling-Vector-Quantizer, trained there with NSVQ and a growing codebook).

The `codebook_size` codewords `c_0 .. c_{K-1}` are the corners of a piecewise-linear curve;
its `K - 1` segments are the tokens. In training every segment `i` gets one random point
`p_i = (1 - l_i) c_i + l_i c_{i+1}`, `l_i ~ U(0, 1)` drawn afresh each forward (the dithered
codebook), each token takes the nearest point, and DiVeQ's directional reparameterisation is
applied to both ends of the chosen segment:

    z_q = z + (1 - l) ||c_i - z|| sg(u_i) + l ||c_{i+1} - z|| sg(u_{i+1}),
    u_j = normalize(c_j - z + sigma eps_j),   eps_j ~ N(0, I)

so the decoder's gradient reaches `z` and both codewords without any auxiliary loss; the value
is replaced by `p_i` (`vqbench.estimator.code_value`, as the `diveq` estimator does: the
reference's value is off `p_i` by its noise). This rule (two codewords, weights of a random
dither) is not a function of `(z, q)` alone, so SF-DiVeQ is a quantizer, not an estimator.

Reference recipe (the defaults): noise std 1e-3 (`noise_var=0.001` is torch's *scale*:
`noise_variance` 1e-6 here); codebook U(0, 1/K) (`uniform_init`; `codebook_init: normal` is
the reference's N(0, 1)/K); no codebook replacement; and the custom initialisation: for the
first `skip_steps - 1` optimiser steps (1000) the quantizer is the identity (indices 0), the
latents of the last `average_steps` (50) of them are pooled, and the codebook becomes the
means of `K` consecutive chunks of the pool (in token order, the remainder dropped); the
model EMA's copy of the quantizer restarts from it (`codebook_replaced`). The step
count is the engine's (`after_optimizer_step`, a buffer) and the pool a buffer, so a run
resumed inside the window initialises the same codebook. With several processes, rank 0's
pool initialises the codebook, which is broadcast, and the skipped steps add
`0 * sum(codebook)` to the loss (DistributedDataParallel needs every parameter used; Adam then
counts those steps, which the single-process reference does not).

Inference is deterministic (`eval()`): token `i` is the segment whose midpoint is nearest and
its code is that midpoint, the mean of the reference's dithered decode of a segment token
(its transformer's `_sample_dithered_codebook`), so `forward(z).z_q == decode_indices(...)`.
`inference: curve` is the reference's `inference`: the nearest point of the curve (on the
segments either side of the nearest codeword), a continuous value no token reproduces, so
in that mode `decode_indices` (midpoints) differs from `z_q`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import pydantic
import torch
import torch.nn.functional as F

from vqbench.distributed import broadcast, initialized, is_main_process
from vqbench.errors import VQBenchError
from vqbench.estimator import code_value
from vqbench.quantizer import Quantizer, QuantizerOutput, QuantizerParams, register_quantizer
from vqbench.search import nearest_code


class SFDiVeQParams(QuantizerParams):
    codebook_size: int = pydantic.Field(1024, ge=3, description="codewords (K - 1 tokens)")
    dim: pydantic.PositiveInt = 128
    noise_variance: pydantic.NonNegativeFloat = 1e-6
    eps: pydantic.PositiveFloat = 1e-12  # the direction's norm floor (the reference's clamp)
    codebook_init: Literal["uniform", "normal"] = "uniform"
    skip_steps: pydantic.NonNegativeInt = 1000
    average_steps: pydantic.NonNegativeInt = 50
    inference: Literal["midpoint", "curve"] = "midpoint"
    search_precision: Literal["fp32", "tf32", "bf16"] = "fp32"

    @pydantic.model_validator(mode="after")
    def _window_inside_skip(self) -> SFDiVeQParams:
        if self.average_steps > self.skip_steps:
            raise ValueError(
                f"average_steps={self.average_steps} exceeds skip_steps={self.skip_steps}; "
                f"pool latents within the skipped steps (average_steps <= skip_steps)"
            )
        return self

    def lookup_bytes(self) -> int:
        return 2 * 4 * self.codebook_size * self.dim  # codewords and the dithered points


def segment_points(codebook: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`(1 - l_i) c_i + l_i c_{i+1}` for the `K - 1` segments, `weights` `(K - 1, 1)`."""
    return (1 - weights) * codebook[:-1] + weights * codebook[1:]


def directional_error(
    code: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, eps: float
) -> torch.Tensor:
    """DiVeQ's `||c - z|| sg(normalize(c - z + noise))` (the reference's `vq_error`)."""
    error = code - z
    direction = F.normalize(error + noise, dim=1, eps=eps).detach()
    return error.norm(dim=1, keepdim=True) * direction


def chunk_means(pool: torch.Tensor, chunks: int) -> torch.Tensor:
    """Means of `chunks` consecutive equal chunks of `pool` (the remainder dropped)."""
    hop = pool.shape[0] // chunks
    if hop == 0:
        raise VQBenchError(
            f"sf_diveq: {pool.shape[0]} pooled latents cannot initialise {chunks} codewords; "
            f"raise average_steps or the batch size, or lower codebook_size"
        )
    return pool[: hop * chunks].reshape(chunks, hop, -1).mean(1)


@register_quantizer("sf_diveq")
class SFDiVeQ(Quantizer):
    """SF-DiVeQ: tokens are points on the segments between neighbouring codewords."""

    Params = SFDiVeQParams
    explicit_codebook: ClassVar[bool] = True
    small_config = {"codebook_size": 65, "dim": 16, "skip_steps": 0, "average_steps": 0}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        k = p.codebook_size
        draw = torch.rand if p.codebook_init == "uniform" else torch.randn
        self.embedding = torch.nn.Parameter(draw(k, p.dim) / k)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._steps = 0  # `steps` on the host, so that no forward waits on the device
        self.pool = torch.zeros(0, p.dim)  # latents of the averaging window (see _save_...)

    @classmethod
    def _check_estimator_supported(cls, p: QuantizerParams) -> None:
        if p.estimator != "ste" or p.estimator_params:
            raise VQBenchError(
                f"{cls.name}.estimator='{p.estimator}' is not supported: SF-DiVeQ brings its "
                f"own gradient (DiVeQ on both ends of a segment); drop the estimator"
            )

    # ---- sizes and codes --------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.params.codebook_size - 1  # one token per segment

    def codebook(self) -> torch.Tensor:
        """The `(K - 1, dim)` segment midpoints: what each token decodes to."""
        return segment_points(self.embedding, self.embedding.new_full((1, 1), 0.5))

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook())

    # ---- the schedule -----------------------------------------------------------------------
    def quantizing(self) -> bool:
        """The reference quantizes from its `skip_iters`-th training forward on."""
        return not self.training or self._steps + 1 >= self.params.skip_steps

    def pooling(self) -> bool:
        return self._steps + 1 >= self.params.skip_steps - self.params.average_steps

    # The pool's length is whatever was collected, so it is no buffer (the model EMA copies
    # buffers in place); it is saved and loaded with the weights, so a resumed run keeps it.
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "pool"] = self.pool

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        pool = state_dict.pop(prefix + "pool", None)
        if pool is not None:
            self.pool = pool.to(self.embedding.device, self.embedding.dtype).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._steps = int(self.steps)

    def _apply(self, fn, *args, **kwargs):
        self.pool = fn(self.pool)  # moves with the module (`.to(device)`)
        return super()._apply(fn, *args, **kwargs)

    def codebook_replaced(self) -> bool:
        replaced, self._replaced = getattr(self, "_replaced", False), False
        return replaced

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        p = self.params
        if self._steps + 1 == p.skip_steps - 1 and self.pool.shape[0] > 0:
            codes = chunk_means(self.pool, p.codebook_size) if is_main_process() else None
            codes = self.embedding.new_empty(self.embedding.shape) if codes is None else codes
            broadcast(codes)
            self.embedding.copy_(codes)
            self.pool = self.pool.new_zeros(0, p.dim)
            self._replaced = True
        self.steps += 1
        self._steps += 1

    # ---- quantization -----------------------------------------------------------------------
    def idle_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Zero; with several processes `0 * sum(codebook)`, so that DistributedDataParallel
        sees the idle codebook used (its gradient is zero)."""
        return self.embedding.sum() * 0.0 if initialized() else z.new_zeros(())

    def draw_dither(self, segments: int, like: torch.Tensor) -> torch.Tensor:
        """`(segments, 1)` weights `l ~ U(0, 1)` (the reference's `torch.rand`)."""
        return torch.rand(segments, 1, device=like.device, dtype=like.dtype)

    def draw_noise(self, like: torch.Tensor) -> torch.Tensor:
        """The direction's Gaussian noise, std `sqrt(noise_variance)`."""
        return torch.randn_like(like) * math.sqrt(self.params.noise_variance)

    def quantize_tokens(self, z: torch.Tensor) -> QuantizerOutput:
        if not self.quantizing():
            if self.pooling():
                self.pool = torch.cat([self.pool, z.detach().to(self.pool.dtype)])
            indices = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
            return QuantizerOutput(z, indices, self.idle_loss(z), {})
        if self.training:
            return self.train_forward(z)
        if self.params.inference == "curve":
            return self.curve_forward(z)
        codes = self.codebook()
        indices = nearest_code(z, codes, precision=self.params.search_precision)
        return QuantizerOutput(F.embedding(indices, codes), indices, z.new_zeros(()), {})

    def train_forward(self, z: torch.Tensor) -> QuantizerOutput:
        """The dithered assignment and the two-ended reparameterisation (module docstring)."""
        c = self.embedding
        dither = self.draw_dither(c.shape[0] - 1, c)
        points = segment_points(c, dither)
        indices = nearest_code(z, points.detach(), precision=self.params.search_precision)
        weight = dither[indices]
        eps = self.params.eps
        first = directional_error(c[indices], z, self.draw_noise(z), eps)
        second = directional_error(c[indices + 1], z, self.draw_noise(z), eps)
        carrier = z + (1 - weight) * first + weight * second
        z_q = code_value(F.embedding(indices, points), carrier)
        return QuantizerOutput(z_q, indices, z.new_zeros(()), {})

    @torch.no_grad()
    def curve_forward(self, z: torch.Tensor) -> QuantizerOutput:
        """The reference's `inference`: the nearest point on the segments either side of the
        nearest codeword; the token is that segment."""
        c = self.embedding
        nearest = nearest_code(z, c, precision=self.params.search_precision)
        centre = nearest.clamp(1, c.shape[0] - 2)
        left = project_on_segment(z, c[centre - 1], c[centre])
        right = project_on_segment(z, c[centre], c[centre + 1])
        take_right = (z - right).square().sum(1) < (z - left).square().sum(1)
        indices = torch.where(take_right, centre, centre - 1)
        z_q = torch.where(take_right.unsqueeze(1), right, left)
        return QuantizerOutput(z_q, indices, z.new_zeros(()), {})


def project_on_segment(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The point of segment `[a, b]` nearest to `z` (the clamped projection)."""
    t = ((b - a) * (z - a)).sum(1) / (b - a).square().sum(1)
    return a + t.clamp(0.0, 1.0).unsqueeze(1) * (b - a)
