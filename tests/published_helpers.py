"""A test-made published tokenizer whose outputs can be worked out by hand: average pooling by
`factor`, then residual nearest-colour quantization over `stages` fixed palettes of RGB
colours, decoded by summing the stages' colours and repeating each one over its `factor x
factor` block (nearest-neighbour upsampling). Also a plugin file (`--plugin
tests/published_helpers.py`) for the command-line tests that run in a subprocess."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vqbench.published import (
    PublishedTokenizer,
    load_exact,
    read_checkpoint,
    register_adapter,
    state_dict_of,
)

NAME = "test_pool_vq"


@register_adapter(NAME, override=True)
class PoolVQ(PublishedTokenizer):
    """Average-pool encoder, fixed palettes, nearest-neighbour upsampling decoder."""

    source = "tests/published_helpers.py PoolVQ (test-made)"
    resolution = 16

    def __init__(self, size: int = 8, factor: int = 4, stages: int = 1) -> None:
        super().__init__()
        self.factor = factor
        self.palettes = nn.Parameter(torch.zeros(stages, size, 3))

    @classmethod
    def from_checkpoint(cls, checkpoint, *, trust=False, size=8, factor=4, stages=1):
        state = state_dict_of(read_checkpoint(checkpoint, trust=trust), ("model",), file=checkpoint)
        tokenizer = cls(size, factor, stages)
        load_exact(tokenizer, state, file=checkpoint)
        return tokenizer

    @property
    def downsampling(self) -> int:
        return self.factor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        residual = F.avg_pool2d(images, self.factor).permute(0, 2, 3, 1)  # (B, h, w, 3)
        parts = []
        for palette in self.palettes:
            index = torch.cdist(residual.reshape(-1, 3), palette).argmin(1)
            index = index.reshape(residual.shape[:-1])
            residual = residual - palette[index]
            parts.append(index)
        indices = torch.stack(parts, -1)
        return indices[..., 0] if len(parts) == 1 else indices

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.ndim == 3:
            indices = indices.unsqueeze(-1)
        colours = sum(self.palettes[s][indices[..., s]] for s in range(indices.shape[-1]))
        up = colours.permute(0, 3, 1, 2)
        return up.repeat_interleave(self.factor, 2).repeat_interleave(self.factor, 3)

    def index_sizes(self) -> list[int]:
        return [self.palettes.shape[1]] * self.palettes.shape[0]


def palettes(size: int = 8, stages: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0] + [0.25] * (stages - 1)).view(stages, 1, 1)
    return (torch.rand(stages, size, 3, generator=generator) * 2 - 1) * scale


def write_checkpoint(path: Path, size: int = 8, stages: int = 1, **extra) -> Path:
    """A LlamaGen-style `{"model": state_dict}` file of `PoolVQ`."""
    torch.save({"model": {"palettes": palettes(size, stages), **extra}}, path)
    return path
