"""Reference models used by techniques, benchmarks and the demo."""

from paretoml.models.gpt import GPT, GPTConfig, GPTOutput, KVCache
from paretoml.models.mlp import MLP
from paretoml.models.vit import ViT, ViTConfig, ViTOutput

__all__ = ["GPT", "GPTConfig", "GPTOutput", "KVCache", "MLP", "ViT", "ViTConfig", "ViTOutput"]
