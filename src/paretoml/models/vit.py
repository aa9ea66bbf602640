"""A small Vision Transformer (Dosovitskiy et al. 2021) for tiny images, with a pluggable FFN.

Patches → linear embedding + learned positions → pre-norm blocks → mean-pooled head. As in
`paretoml.models.gpt`, ``ffn_factory(layer_idx, d_model) -> nn.Module`` may put a
mixture of experts in any block (V-MoE puts one in every other block); a block's FFN may
return an object with ``.out`` and ``.aux_loss`` and the losses are summed.

    >>> model = ViT(ViTConfig(image_size=8, patch_size=2, num_classes=10))
    >>> out = model(images)          # images (B, C, H, W) → out.logits (B, 10), out.aux_loss
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from paretoml._validate import check_ints

__all__ = ["ViTConfig", "ViT", "ViTOutput"]


@dataclass(frozen=True)
class ViTConfig:
    """Shape of the model; `image_size` must be a multiple of `patch_size`."""

    image_size: int = 8
    patch_size: int = 2
    in_channels: int = 1
    num_classes: int = 10
    d_model: int = 64
    depth: int = 4
    n_head: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        check_ints(self, ("image_size", "patch_size", "in_channels", "num_classes", "d_model", "depth",
                          "n_head", "mlp_ratio"))
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.d_model % self.n_head:
            raise ValueError(f"ViTConfig: d_model {self.d_model} must be divisible by n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ViTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class ViTOutput:
    logits: torch.Tensor  # (B, num_classes)
    aux_loss: torch.Tensor | None = None  # sum of the FFN blocks' auxiliary losses (MoE)


class _MLP(nn.Module):
    def __init__(self, d: int, hidden: int, dropout: float):
        super().__init__()
        self.up, self.down, self.drop = nn.Linear(d, hidden), nn.Linear(hidden, d), nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.down(F.gelu(self.up(x), approximate="tanh")))


class _Block(nn.Module):
    def __init__(self, cfg: ViTConfig, ffn: nn.Module):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = nn.MultiheadAttention(cfg.d_model, cfg.n_head, dropout=cfg.dropout, batch_first=True)
        self.ln_2, self.ffn = nn.LayerNorm(cfg.d_model), ffn

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        out = self.ffn(self.ln_2(x))
        aux = None
        if hasattr(out, "aux_loss"):
            out, aux = out.out, out.aux_loss
        return x + out, aux


class ViT(nn.Module):
    """`forward(images) -> ViTOutput`; images (B, C, H, W) or flat (B, C*H*W)."""

    def __init__(self, cfg: ViTConfig = ViTConfig(), ffn_factory: Callable[[int, int], nn.Module] | None = None):
        super().__init__()
        if not isinstance(cfg, ViTConfig):
            raise TypeError(f"ViT: expected a ViTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        p = cfg.patch_size
        self.patch = nn.Linear(cfg.in_channels * p * p, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(1, cfg.num_patches, cfg.d_model) * 0.02)
        make = ffn_factory or (lambda i, d: _MLP(d, cfg.mlp_ratio * d, cfg.dropout))
        self.blocks = nn.ModuleList(_Block(cfg, make(i, cfg.d_model)) for i in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.num_classes)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, num_patches, C*p*p), patches in row-major order."""
        c, s, p = self.cfg.in_channels, self.cfg.image_size, self.cfg.patch_size
        if images.dim() == 2 and images.shape[1] == c * s * s:
            images = images.view(-1, c, s, s)
        if images.dim() != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise ValueError(f"ViT: expected images (B, {c}, {s}, {s}) or (B, {c * s * s}), got {tuple(images.shape)}")
        B = images.shape[0]
        x = images.unfold(2, p, p).unfold(3, p, p)  # (B, C, s/p, s/p, p, p)
        return x.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, c * p * p)

    def forward(self, images: torch.Tensor) -> ViTOutput:
        x = self.patch(self.patches(images)) + self.pos  # (B, P, d)
        aux_total = None
        for block in self.blocks:
            x, aux = block(x)
            if aux is not None:
                aux_total = aux if aux_total is None else aux_total + aux
        return ViTOutput(self.head(self.ln_f(x).mean(1)), aux_total)
