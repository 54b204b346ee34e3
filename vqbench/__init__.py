"""vqbench: vector quantizers for image tokenizers, compared under identical settings."""

__version__ = "0.1.0"

from vqbench.errors import VQBenchError
from vqbench.quantizer import Quantizer, QuantizerOutput, QuantizerParams
from vqbench.registry import create_quantizer, list_quantizers, register_quantizer

__all__ = [
    "Quantizer",
    "QuantizerOutput",
    "QuantizerParams",
    "VQBenchError",
    "__version__",
    "create_quantizer",
    "list_quantizers",
    "register_quantizer",
]
