"""vqbench: vector quantizers for image tokenizers, compared under identical settings."""

__version__ = "0.1.0"

from vqbench.errors import VQBenchError
from vqbench.estimator import Estimator
from vqbench.quantizer import Quantizer, QuantizerOutput, QuantizerParams
from vqbench.registry import (
    create_estimator,
    create_quantizer,
    list_estimators,
    list_quantizers,
    register_estimator,
    register_quantizer,
)

__all__ = [
    "Estimator",
    "Quantizer",
    "QuantizerOutput",
    "QuantizerParams",
    "VQBenchError",
    "__version__",
    "create_estimator",
    "create_quantizer",
    "list_estimators",
    "list_quantizers",
    "register_estimator",
    "register_quantizer",
]
