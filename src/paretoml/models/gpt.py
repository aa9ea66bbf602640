"""A decoder-only language model in the nanoGPT mould, with a preallocated KV cache.

Two shapes from one config: GPT-2 style (LayerNorm, GELU MLP, learned positions) and
Llama style (RMSNorm, SwiGLU MLP, rotary positions). The feed-forward block is pluggable:
pass ``ffn_factory(layer_idx, config) -> nn.Module`` to put an MoE (or anything that maps
(B, T, C) → (B, T, C)) in any layer; a block may return an object with ``.out`` and
``.aux_loss`` and the losses are summed into `GPTOutput.aux_loss`.

    >>> cfg = GPTConfig(vocab_size=65, n_layer=6, n_head=6, n_embd=384, block_size=256)
    >>> model = GPT(cfg)
    >>> out = model(idx, targets)            # out.logits (B, T, V), out.loss
    >>> cache = model.new_cache(batch_size=1, max_len=512)
    >>> logits = model(prompt, cache=cache).logits          # prefill, cache.length advances
    >>> logits = model(next_token, cache=cache).logits      # one decode step
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from paretoml._validate import check_ints

__all__ = ["GPTConfig", "GPT", "GPTOutput", "KVCache"]


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the model. `mlp`/`norm`/`pos` pick GPT-2 or Llama-style parts."""

    vocab_size: int = 65
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256  # longest sequence (positions; cache length limit)
    n_kv_head: int | None = None  # grouped-query attention when < n_head
    d_ff: int | None = None  # hidden width of the MLP; default 4·n_embd (gelu) or ~8/3·n_embd (swiglu)
    mlp: str = "gelu"  # "gelu" | "swiglu"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    pos: str = "learned"  # "learned" | "rope"
    rope_base: float = 10000.0
    bias: bool = False
    dropout: float = 0.0
    tie_embeddings: bool = True

    def __post_init__(self):
        check_ints(self, ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"))
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        kv = self.kv_heads
        if not isinstance(kv, int) or kv < 1 or self.n_head % kv:
            raise ValueError(f"GPTConfig.n_kv_head must divide n_head ({self.n_head}), got {self.n_kv_head!r}")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"GPTConfig.mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"GPTConfig.norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.pos not in ("learned", "rope"):
            raise ValueError(f"GPTConfig.pos must be 'learned' or 'rope', got {self.pos!r}")
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig: rope needs an even head dim, got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.d_ff is not None and (not isinstance(self.d_ff, int) or self.d_ff < 1):
            raise ValueError(f"GPTConfig.d_ff must be None or an int >= 1, got {self.d_ff!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "gelu":
            return 4 * self.n_embd
        return 256 * math.ceil(8 * self.n_embd / 3 / 256)  # Llama's rounding

    @classmethod
    def llama(cls, **kw) -> "GPTConfig":
        """Llama-style parts (RMSNorm, SwiGLU, RoPE, untied head); shape from `kw`."""
        return cls(**{"mlp": "swiglu", "norm": "rmsnorm", "pos": "rope", "tie_embeddings": False, **kw})


@dataclass
class GPTOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # mean next-token cross-entropy when targets are given
    aux_loss: torch.Tensor | None = None  # sum of the FFN blocks' auxiliary losses (MoE)


class KVCache:
    """Preallocated keys/values of every layer: (n_layer, B, n_kv_head, max_len, head_dim).

    `length` is how many positions are filled; a forward pass with a cache appends its T
    positions. Preallocation keeps decode steps free of reallocations (and graph-capturable).
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, *, device=None, dtype=torch.float32):
        if max_len > cfg.block_size:
            raise ValueError(f"KVCache: max_len {max_len} exceeds the model's block_size {cfg.block_size}")
        shape = (cfg.n_layer, batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.max_len = max_len

    def reset(self, length: int = 0) -> None:
        """Forget positions from `length` on (e.g. rejected speculative tokens)."""
        if not 0 <= length <= self.max_len:
            raise ValueError(f"KVCache.reset: length must be in [0, {self.max_len}], got {length}")
        self.length = length


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _norm(cfg: GPTConfig) -> nn.Module:
    return RMSNorm(cfg.n_embd) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x (B, H, T, hs); cos/sin (T, hs/2). Rotate interleaved pairs (x0, x1) by the position angle.
    x0, x1 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        hs, nh, nkv = cfg.head_dim, cfg.n_head, cfg.kv_heads
        self.qkv = nn.Linear(cfg.n_embd, (nh + 2 * nkv) * hs, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x, rope=None, cache: KVCache | None = None):
        B, T, C = x.shape
        hs, nh, nkv = self.cfg.head_dim, self.cfg.n_head, self.cfg.kv_heads
        q, k, v = self.qkv(x).split([nh * hs, nkv * hs, nkv * hs], dim=-1)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)
        if rope is not None:
            q, k = _rope(q, *rope), _rope(k, *rope)
        if cache is not None:
            start = cache.length
            cache.k[self.layer_idx, :, :, start : start + T] = k
            cache.v[self.layer_idx, :, :, start : start + T] = v
            k = cache.k[self.layer_idx, :, :, : start + T]
            v = cache.v[self.layer_idx, :, :, : start + T]
        if nkv != nh:
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        S = k.shape[2]
        if T == 1:
            mask, causal = None, False  # one new query sees every cached key
        elif S == T:
            mask, causal = None, True
        else:  # T new queries after S - T cached positions: query i sees keys <= S - T + i
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """GELU MLP (GPT-2) or SwiGLU (Llama): (B, T, C) → (B, T, C)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        h = cfg.hidden
        self.up = nn.Linear(cfg.n_embd, 2 * h if self.swiglu else h, bias=cfg.bias)
        self.down = nn.Linear(h, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        u = self.up(x)
        if self.swiglu:
            gate, val = u.chunk(2, dim=-1)
            u = F.silu(gate) * val
        else:
            u = F.gelu(u, approximate="tanh")
        return self.drop(self.down(u))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int, ffn: nn.Module):
        super().__init__()
        self.ln_1, self.attn = _norm(cfg), CausalSelfAttention(cfg, layer_idx)
        self.ln_2, self.ffn = _norm(cfg), ffn

    def forward(self, x, rope=None, cache=None):
        x = x + self.attn(self.ln_1(x), rope, cache)
        out = self.ffn(self.ln_2(x))
        aux = None
        if hasattr(out, "aux_loss"):  # an MoE block returns (out, aux_loss, ...)
            out, aux = out.out, out.aux_loss
        return x + out, aux


class GPT(nn.Module):
    """Decoder-only LM. `forward(idx, targets=None, *, cache=None) -> GPTOutput`.

    Args:
        cfg: the shape.
        ffn_factory: optional ``(layer_idx, cfg) -> nn.Module`` building each layer's FFN
            (default: the dense `MLP`); return the default for layers that stay dense.
    """

    def __init__(self, cfg: GPTConfig, ffn_factory: Callable[[int, GPTConfig], nn.Module] | None = None):
        super().__init__()
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPT: expected a GPTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        make_ffn = ffn_factory or (lambda i, c: MLP(c))
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i, make_ffn(i, cfg)) for i in range(cfg.n_layer))
        self.ln_f = _norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if cfg.pos == "rope":
            inv = 1.0 / cfg.rope_base ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
            ang = torch.outer(torch.arange(cfg.block_size).float(), inv)  # (block_size, hs/2)
            self.register_buffer("rope_cos", ang.cos(), persistent=False)
            self.register_buffer("rope_sin", ang.sin(), persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def new_cache(self, batch_size: int, max_len: int | None = None, *, dtype=None) -> KVCache:
        """A KV cache on the model's device and dtype, `max_len` positions (default block_size)."""
        p = next(self.parameters())
        return KVCache(self.cfg, batch_size, max_len or self.cfg.block_size, device=p.device, dtype=dtype or p.dtype)

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token (+ learned position) embeddings of idx (B, T) placed at positions start…"""
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + idx.shape[1], device=idx.device))
        return self.drop(x)

    def rope(self, start: int, T: int):
        if self.cfg.pos != "rope":
            return None
        return self.rope_cos[start : start + T], self.rope_sin[start : start + T]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: KVCache | None = None) -> GPTOutput:
        if idx.dim() != 2:
            raise ValueError(f"GPT.forward: idx must have shape (B, T), got {tuple(idx.shape)}")
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.block_size or (cache is not None and start + T > cache.max_len):
            limit = min(self.cfg.block_size, cache.max_len if cache is not None else self.cfg.block_size)
            raise ValueError(f"GPT.forward: {start} cached + {T} new positions exceed the context of {limit}")
        x = self.embed(idx, start)
        rope = self.rope(start, T)
        aux_total = None
        for block in self.blocks:
            x, aux = block(x, rope, cache)
            if aux is not None:
                aux_total = aux if aux_total is None else aux_total + aux
        if cache is not None:
            cache.length = start + T
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return GPTOutput(logits, loss, aux_total)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Autoregressive continuation of idx (B, T) with a KV cache; temperature 0 = greedy.

        A simple reference loop (the fast decode loops live in `paretoml.infer`).
        """
        if max_new_tokens < 0:
            raise ValueError(f"GPT.generate: max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"GPT.generate: temperature must be >= 0, got {temperature}")
        cache = self.new_cache(idx.shape[0], min(self.cfg.block_size, idx.shape[1] + max_new_tokens))
        logits = self(idx, cache=cache).logits[:, -1]
        out = [idx]
        for i in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                lg = logits.float() / temperature
                if top_k is not None:
                    kth = torch.topk(lg, min(top_k, lg.size(-1))).values[:, -1:]
                    lg = lg.masked_fill(lg < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(lg, -1), 1, generator=generator)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits = self(nxt, cache=cache).logits[:, -1]
        return torch.cat(out, dim=1)

    def config_dict(self) -> dict:
        return asdict(self.cfg)
