"""Reference models used by techniques, benchmarks and the demo."""

from paretoml.models.gpt import GPT, GPTConfig, GPTOutput, KVCache
from paretoml.models.mlp import MLP

__all__ = ["GPT", "GPTConfig", "GPTOutput", "KVCache", "MLP"]
