"""The vqbench version (one place; the package and the run records read it)."""

__version__ = "0.2.0"
