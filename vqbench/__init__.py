"""vqbench: vector quantizers for image tokenizers, compared under identical settings."""

from vqbench.errors import VQBenchError
from vqbench.estimator import (
    Estimator,
    create_estimator,
    list_estimators,
    register_estimator,
)
from vqbench.quantizer import (
    Quantizer,
    QuantizerOutput,
    QuantizerParams,
    create_quantizer,
    list_quantizers,
    register_quantizer,
)
from vqbench.version import __version__


def __getattr__(name: str):
    """`vqbench.Tokenizer`, imported when first asked for (it pulls in the models)."""
    if name == "Tokenizer":
        from vqbench.tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'vqbench' has no attribute {name!r}")


__all__ = [
    "Estimator",
    "Quantizer",
    "QuantizerOutput",
    "QuantizerParams",
    "Tokenizer",
    "VQBenchError",
    "__version__",
    "create_estimator",
    "create_quantizer",
    "list_estimators",
    "list_quantizers",
    "register_estimator",
    "register_quantizer",
]
