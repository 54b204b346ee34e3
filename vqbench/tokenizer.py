"""A trained run as a tokenizer: images to code indices and back, for use in one's own code.

    from vqbench import Tokenizer

    tok = Tokenizer.from_run("runs/tiny/simvq-s0")      # the evaluated weights (model EMA)
    indices = tok.encode(images)    # float (B, 3, H, W) in [-1, 1] -> int64 (B, H/f, W/f)
    images = tok.decode(indices)    # -> float (B, 3, H, W) in [-1, 1]
    tok.index_sizes()               # values each index component takes, e.g. [1024]

Images are RGB in [-1, 1] (uint8 pixels `x / 127.5 - 1`, as vqbench's data pipeline makes
them), with H and W multiples of the model's downsampling `f` (`tok.downsampling`; the run was
trained at `tok.resolution`). A composite quantizer (residual, product) gives indices
`(B, H/f, W/f, D)`, one per stage or part, with `index_sizes()` of length D.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vqbench.build import load_trained
from vqbench.config import RunConfig
from vqbench.errors import VQBenchError
from vqbench.models import Autoencoder

#: How far outside [-1, 1] an input may stray (float rounding) before it is refused.
RANGE_TOLERANCE = 1e-3


class Tokenizer:
    """The encoder, quantizer and decoder of a trained run, in evaluation mode."""

    def __init__(self, model: Autoencoder, config: RunConfig) -> None:
        self.model, self.config = model.eval(), config

    @classmethod
    def from_run(
        cls, run_dir: str | Path, *, use_ema: bool | None = None, device: str = "cpu"
    ) -> Tokenizer:
        """The run's latest checkpoint (or the `step-*` folder given); `use_ema` defaults to
        the run's `eval.use_ema`, i.e. the weights its evaluation measured. The plugins the run
        was made with are loaded again (`plugins.json`)."""
        config, model, _, _ = load_trained(run_dir, use_ema=use_ema, device=device)
        return cls(model, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def downsampling(self) -> int:
        """Pixels per token along each side: H and W must be multiples of it."""
        return self.model.downsampling

    @property
    def resolution(self) -> int:
        """The side of the images the run was trained on."""
        return self.config.data.resolution

    def index_sizes(self) -> list[int]:
        """How many values each component of an index takes (`[codebook_size]`, or one per
        stage or part of a composite)."""
        return list(self.model.quantizer.index_sizes())

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Float images `(B, 3, H, W)` in [-1, 1] to int64 indices `(B, H/f, W/f)` (`(B, H/f,
        W/f, D)` for a composite)."""
        self._check_images(images)
        z = self.model.encoder(images.to(self.device, torch.float32))
        return self.model.quantizer(z).indices

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices as `encode` gives them to images `(B, 3, H, W)`, clamped to [-1, 1]."""
        self._check_indices(indices)
        return self.model.decode_indices(indices.to(self.device)).float().clamp(-1, 1)

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.downsampling
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise VQBenchError(f"encode takes images (B, 3, H, W); got {shape}")
        if not images.is_floating_point():
            raise VQBenchError(
                f"encode takes float images in [-1, 1], got {images.dtype}; convert uint8 "
                f"pixels with x / 127.5 - 1"
            )
        if images.shape[2] % f or images.shape[3] % f:
            raise VQBenchError(
                f"encode: H and W must be multiples of the downsampling {f}; got "
                f"{images.shape[2]} x {images.shape[3]} (the run was trained at "
                f"{self.resolution} x {self.resolution})"
            )
        low, high = images.min().item(), images.max().item()
        if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise VQBenchError(
                f"encode takes images in [-1, 1]; these range over [{low:g}, {high:g}] "
                f"(uint8 pixels: x / 127.5 - 1; [0, 1] images: 2 * x - 1)"
            )

    def _check_indices(self, indices: torch.Tensor) -> None:
        sizes = self.index_sizes()
        want = 3 if len(sizes) == 1 else 4
        shape = "(B, h, w)" if want == 3 else f"(B, h, w, {len(sizes)})"
        if (
            not isinstance(indices, torch.Tensor)
            or indices.dim() != want
            or (want == 4 and indices.shape[-1] != len(sizes))
        ):
            got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices)
            raise VQBenchError(f"decode takes indices {shape} as encode gives them; got {got}")
        if indices.is_floating_point() or indices.is_complex():
            raise VQBenchError(f"decode takes integer indices; got {indices.dtype}")
        limits = torch.tensor(sizes, device=indices.device)
        if indices.numel() and (
            indices.min() < 0 or (indices.reshape(-1, len(sizes)) >= limits).any()
        ):
            raise VQBenchError(
                f"decode: indices must lie in [0, size) for index sizes {sizes}; got values "
                f"from {int(indices.min())} to {int(indices.max())}"
            )
