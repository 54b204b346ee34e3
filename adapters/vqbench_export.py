"""A tokenizer that `vqbench export` wrote, as a published tokenizer.

`vqbench eval RUN` measures a trained run under the protocol of its own config. To measure it
under another protocol, or to list it in a suite's `tokenizers:` section beside released
tokenizers, export it and evaluate the export:

    vqbench export runs/tiny/simvq-s0 --out exported/simvq
    vqbench eval --tokenizer vqbench_export --checkpoint exported/simvq/model.safetensors \\
        --data /data/imagenet/val --protocol imagenet256 --out evals/simvq

The checkpoint is the folder's `model.safetensors` (its sha256 is what the evaluation
records); the folder's `config.json` builds the model (`Tokenizer.from_pretrained`), so the
tokenizer is exactly the one `Tokenizer.from_pretrained(folder)` loads, with the run's
evaluated weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vqbench.errors import VQBenchError
from vqbench.published import PublishedTokenizer
from vqbench.tokenizer import WEIGHTS_FILE, Tokenizer


class ExportedTokenizer(PublishedTokenizer):
    """`Tokenizer.from_pretrained` of the folder that holds the checkpoint."""

    source = "vqbench export (this package): config.json + model.safetensors, vqbench.Tokenizer"

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.resolution = tokenizer.resolution

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, *, trust: bool = False, **options: Any
    ) -> ExportedTokenizer:
        """The exported folder of `checkpoint` (its `model.safetensors`); it takes no options
        (the folder's `config.json` says everything) and needs no trust (safetensors)."""
        if options:
            raise VQBenchError(
                f"vqbench_export takes no options (got {', '.join(sorted(options))}); the "
                f"folder's config.json builds the tokenizer"
            )
        file = Path(checkpoint)
        if file.name != WEIGHTS_FILE:
            raise VQBenchError(
                f"vqbench_export reads the {WEIGHTS_FILE} of a folder vqbench export wrote, not "
                f"'{file.name}'; give EXPORTED/{WEIGHTS_FILE}"
            )
        return cls(Tokenizer.from_pretrained(file.parent))

    @property
    def downsampling(self) -> int:
        return self.tokenizer.downsampling

    def index_sizes(self) -> list[int]:
        return self.tokenizer.index_sizes()

    def independent_groups(self) -> int | None:
        """What the exported quantizer says, as a trained run's evaluation records it."""
        return self.tokenizer.model.quantizer.independent_groups()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(images)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(indices)
