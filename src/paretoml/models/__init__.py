"""Reference models used by techniques, benchmarks and the demo."""

from paretoml.models.mlp import MLP

__all__ = ["MLP"]
