"""Tokenizers that others published, behind the interface of vqbench's own `Tokenizer`.

An adapter builds a published architecture (taming-transformers' VQGAN, LlamaGen's VQ-16, ...)
and loads its released checkpoint as it is, so that the tokenizer can be evaluated under a
vqbench protocol and probed beside trained runs (`vqbench eval --tokenizer NAME --checkpoint
FILE`). Every image tokenizer in vqbench, trained or published, answers `ImageTokenizer`:

    indices = tok.encode(images)    # float (B, 3, H, W) in [-1, 1] -> int64 (B, H/f, W/f[, D])
    images = tok.decode(indices)    # -> float (B, 3, H, W) in [-1, 1]
    tok.index_sizes()               # values each index component takes, e.g. [16384]
    tok.downsampling                # f

Adapters register through the entry-point group `vqbench.tokenizers`, as quantizers do, so a
third-party package can add one:

    [project.entry-points."vqbench.tokenizers"]
    my_vq = "my_package.adapter:MyVQ"      # a PublishedTokenizer subclass

`read_checkpoint` and `load_exact` are what adapters share: the state dict of a `.safetensors`,
`.pt`, `.pth`, `.ckpt` or `.bin` file (tensors only unless the caller trusts the file), and a
strict load whose failure is one line naming the first missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import pickle
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from vqbench.errors import VQBenchError
from vqbench.registry import Registry

#: The files `read_checkpoint` reads.
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


@runtime_checkable
class ImageTokenizer(Protocol):
    """What evaluation and the probe need of a tokenizer (trained or published)."""

    @property
    def downsampling(self) -> int: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, indices: torch.Tensor) -> torch.Tensor: ...

    def index_sizes(self) -> list[int]: ...


class PublishedTokenizer(nn.Module, ABC):
    """A released tokenizer: its published architecture with the released weights, in
    evaluation mode. Subclasses name where the architecture comes from (`source`: repository,
    commit and file of the code they follow) and build themselves from a checkpoint file."""

    #: Set by the registry: the adapter's name (`vqbench eval --tokenizer NAME`).
    name: ClassVar[str] = ""
    #: The official code the adapter follows, e.g. "CompVis/taming-transformers@3ba01b2,
    #: taming/models/vqgan.py VQModel".
    source: ClassVar[str] = ""
    #: The image size the released weights were trained at (a protocol may evaluate others).
    resolution: int = 256

    @classmethod
    @abstractmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, *, trust: bool = False, **options: Any
    ) -> PublishedTokenizer:
        """The tokenizer of a released checkpoint file; `options` are the architecture
        settings a checkpoint does not carry (e.g. a config file, the codebook size)."""

    @property
    @abstractmethod
    def downsampling(self) -> int:
        """Image pixels per token along each side."""

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> int64 indices (B, H/f, W/f) or (B, H/f, W/f, D)."""

    @abstractmethod
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices as `encode` gives them -> images (B, 3, H, W) in [-1, 1] (not clamped)."""

    @abstractmethod
    def index_sizes(self) -> list[int]:
        """How many values each index component takes (one entry per component)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """`decode(encode(images))`."""
        return self.decode(self.encode(images))


def _check_adapter_class(cls: type, name: str) -> None:
    if not cls.source:
        raise VQBenchError(
            f"tokenizer adapter '{name}' ({cls.__qualname__}) must name the code it follows "
            f"in its class attribute `source`"
        )


ADAPTERS = Registry(
    "tokenizer adapter", "vqbench.tokenizers", PublishedTokenizer, _check_adapter_class
)


def register_adapter(name: str, *, override: bool = False):
    """Class decorator: `@register_adapter("my_vq")` on a `PublishedTokenizer` subclass."""
    return ADAPTERS.register(name, override=override)


def list_adapters() -> list[str]:
    return ADAPTERS.names()


def get_adapter_class(name: str) -> type[PublishedTokenizer]:
    return ADAPTERS.get(name)


def load_published(
    name: str, checkpoint: str | Path, *, trust: bool = False, **options: Any
) -> PublishedTokenizer:
    """The adapter `name` built from `checkpoint`, in evaluation mode."""
    tokenizer = get_adapter_class(name).from_checkpoint(checkpoint, trust=trust, **options)
    return tokenizer.eval().requires_grad_(False)


# ---- checkpoints ------------------------------------------------------------------------------
def read_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """The object saved in a checkpoint file, on the CPU: a safetensors file's tensors, or what
    `torch.save` wrote (tensors, numbers, strings and containers only, unless `trust`: a file
    holding other pickled Python objects runs code when loaded)."""
    file = Path(path)
    if not file.is_file():
        raise VQBenchError(f"checkpoint '{file}' does not exist; give the released weights file")
    if file.suffix not in CHECKPOINT_SUFFIXES:
        raise VQBenchError(
            f"checkpoint '{file}' is not a weights file (expected {', '.join(CHECKPOINT_SUFFIXES)})"
        )
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(file, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise VQBenchError(f"checkpoint '{file}' is damaged ({_first_line(err)})") from None
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # a class or function, not damage
            raise VQBenchError(
                f"checkpoint '{file}' holds pickled Python objects besides tensors; if you trust "
                f"where it comes from, pass --trust-checkpoint (trust=True) to load it"
            ) from None
        raise VQBenchError(f"checkpoint '{file}' is damaged ({_unpickler_error(err)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise VQBenchError(f"checkpoint '{file}' is damaged ({_first_line(err)})") from None
    if not isinstance(loaded, Mapping):
        raise VQBenchError(f"checkpoint '{file}' holds a {type(loaded).__name__}, not a state dict")
    return dict(loaded)


def state_dict_of(
    loaded: Mapping[str, Any], keys: Iterable[str], *, file: str | Path = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: the first of `keys` present (e.g.
    `("state_dict",)` for a Lightning file, `("model",)` for LlamaGen's), else the mapping
    itself when it holds tensors."""
    for key in keys:
        value = loaded.get(key)
        if isinstance(value, Mapping):
            return dict(value)
    if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    raise VQBenchError(
        f"'{file}' holds no state dict under {', '.join(repr(k) for k in keys)} "
        f"(top-level keys: {', '.join(sorted(map(str, loaded))[:8])})"
    )


def load_exact(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    file: str | Path = "checkpoint",
    ignore: Iterable[str] = (),
) -> None:
    """Load `state` into `module` strictly; keys starting with a prefix in `ignore` (e.g. the
    training losses' `loss.`) are dropped first. A key missing, unexpected or of another shape
    is one line naming the first of them."""
    prefixes = tuple(ignore)
    state = {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}
    expected = module.state_dict()
    what = f"checkpoint '{file}' does not fit {type(module).__name__}"
    for key, value in expected.items():
        if key not in state:
            raise VQBenchError(f"{what}: key '{key}' is missing; is it the right checkpoint?")
        got = tuple(getattr(state[key], "shape", ()))
        if got != tuple(value.shape):
            raise VQBenchError(
                f"{what}: '{key}' has shape {got} in the file, {tuple(value.shape)} in the "
                f"model; check the architecture options"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise VQBenchError(f"{what}: unexpected key '{extra[0]}' (and {len(extra) - 1} more)")
    module.load_state_dict(state, strict=True)


def _unpickler_error(err: BaseException) -> str:
    """The unpickler's own complaint inside torch's weights-only message (else its first line)."""
    lines = [line.strip() for line in str(err).splitlines()]
    found = [line for line in lines if line.startswith("Unsupported")]
    return found[0] if found else _first_line(err)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
