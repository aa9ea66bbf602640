"""Fast autoregressive decoding of a `paretoml.models.GPT`: static shapes, CUDA graphs.

Per-token Python and kernel-launch overhead, not the GPU, bounds a naive decode loop at
batch 1 (HF `generate` reaches a few % of the memory-bandwidth bound). This module runs the
model with *static* shapes so that a whole decode step can be captured once in a CUDA graph
and replayed: a preallocated KV buffer of S positions per row, per-row start positions held
in a device tensor (rows of a batch may sit at different lengths: speculative decoding
accepts a different number of tokens per row), attention over all S positions with a mask,
and sampling by inverse CDF from uniforms drawn before the replay — so a step needs no host
sync at all. On the CPU the same functions run eagerly.

    >>> out = generate(model, [prompt_ids], DecodeConfig(max_new_tokens=128))   # (1, 128) new tokens

`StaticLM` is the building block that `speculative` and `early_exit` share.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from paretoml.models.gpt import GPT, MLP, RMSNorm

__all__ = ["DecodeConfig", "Decoder", "generate", "StaticLM", "sampling_probs", "FAST"]

# Switches of the step's fast paths (A/B in the benchmark; all exact up to float rounding):
#   float_mask: the attention mask as an additive float tensor built once per step, over a KV
#     buffer padded to a multiple of 16 positions (a bool mask, or an unaligned one, costs SDPA
#     two or three conversion kernels in every layer);
#   fused_rope_kv / fused_swiglu / triton_attention: Triton kernels (CUDA only, `_decode_kernels`;
#     attention for steps of at most 16 new tokens: decoding and verification, and only for
#     power-of-two head sizes: at head size 96 the kernel pads to 128 and measured slower than SDPA);
#   skinny_fp32: float32 GEMMs of skinny_m[0] <= M <= skinny_m[1] rows through a Triton kernel
#     where it was measured faster than cuBLAS for the shape (`_decode_kernels.linear`).
FAST = {"float_mask": True, "fused_rope_kv": True, "fused_swiglu": True, "triton_attention": True,
        "skinny_fp32": False, "skinny_m": (2, 8)}  # skinny: measured no faster in a speculative round (H100)


@dataclass(frozen=True)
class DecodeConfig:
    """Sampling settings of a decode loop.

    temperature 0 is greedy; `top_k` / `top_p` filter the tempered distribution first.
    `cuda_graphs` captures each step in a CUDA graph (ignored on the CPU).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    cuda_graphs: bool = True

    def __post_init__(self):
        _check_sampling(type(self).__name__, self.max_new_tokens, self.temperature, self.top_k, self.top_p)


def _check_sampling(where: str, max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"{where}.max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"{where}.temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{where}.top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"{where}.top_p must be None or in (0, 1], got {top_p!r}")


# --- sampling: static-shape, graph-capturable -------------------------------------------


def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """The distribution a decoder samples from: (..., V) logits → (..., V) float32 probabilities.

    Greedy (temperature 0) is the one-hot of the argmax, so that the speculative rejection
    rule needs no special case: with one-hot p and q it accepts iff the tokens agree.
    """
    lg = logits.float()
    if temperature == 0:
        return torch.zeros_like(lg).scatter_(-1, lg.argmax(-1, keepdim=True), 1.0)
    lg = lg / temperature
    if top_k is not None and top_k < lg.shape[-1]:
        kth = torch.topk(lg, top_k, dim=-1).values[..., -1:]
        lg = lg.masked_fill(lg < kth, float("-inf"))
    probs = torch.softmax(lg, -1)
    if top_p is not None and top_p < 1.0:
        # keep the smallest prefix of the sorted distribution whose mass reaches top_p
        sp, si = probs.sort(-1, descending=True)
        drop = (sp.cumsum(-1) - sp) >= top_p  # mass before this token already reaches top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, si, sp)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_from(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample: probs (..., V), uniforms u (...) in [0, 1) → token ids (...).

    Returns the first index whose CDF exceeds u·total, which always has positive mass.
    """
    cdf = probs.cumsum(-1)
    target = (u * cdf[..., -1]).unsqueeze(-1)
    return torch.searchsorted(cdf.contiguous(), target.contiguous(), right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


# --- the static-shape model --------------------------------------------------------------


@dataclass
class _StepContext:
    positions: torch.Tensor  # (B, T) absolute position of each new token
    mask: torch.Tensor  # (B, 1, T, S) bool: key position <= query position
    rope: torch.Tensor | None  # complex rotations e^{iθ} (B, T, 1, hs/2)

    def select(self, t: int) -> "_StepContext":
        """The context of query t alone (views: no kernels). GQA mask rows j·T + t ↔ query t."""
        T = self.positions.shape[1]
        return _StepContext(self.positions[:, t : t + 1], self.mask[:, :, t::T],
                            None if self.rope is None else self.rope[:, t : t + 1])


class StaticLM:
    """A GPT run with static shapes over its own KV buffer of `max_len` positions per row.

    `forward(tokens (B, T), start (B,)) -> logits (B, T, V)` writes the new tokens' keys and
    values at positions start..start+T-1 of each row and attends over positions <= each
    query's. Positions past a row's current length may hold stale values; they are masked
    until overwritten, so rolling back rejected tokens is just moving `start` back.
    The per-layer pieces (`context`, `embed`, `block`, `write_kv`, `logits`) let early exit
    run the stack layer by layer.
    """

    def __init__(self, model: GPT, batch_size: int, max_len: int):
        cfg = model.cfg
        if max_len > cfg.block_size:
            raise ValueError(f"StaticLM: max_len {max_len} exceeds the model's block_size {cfg.block_size}")
        p = next(model.parameters())
        self.model, self.cfg = model, cfg
        self.batch_size, self.max_len = batch_size, max_len
        # the buffer is padded to a multiple of 16 positions (never written past max_len, always
        # masked) so that SDPA's memory-efficient kernel takes the float mask without padding it
        S = -(-max_len // 16) * 16 if FAST["float_mask"] else max_len
        shape = (cfg.n_layer, batch_size, cfg.kv_heads, S, cfg.head_dim)
        self.k = torch.zeros(shape, device=p.device, dtype=p.dtype)
        self.v = torch.zeros(shape, device=p.device, dtype=p.dtype)
        self.key_pos = torch.arange(S, device=p.device)
        self._zero = torch.zeros((), device=p.device, dtype=p.dtype)
        self._ninf = torch.full((), float("-inf"), device=p.device, dtype=p.dtype)
        # RoPE as one complex multiply: interleaved pairs (x0, x1) are exactly complex numbers
        self.rot = None
        if cfg.pos == "rope":  # complex64 (complex128 for float64 models); there is no bf16 complex
            cos, sin = model.rope_cos, model.rope_sin
            if cos.dtype != torch.float64:
                cos, sin = cos.float(), sin.float()
            self.rot = torch.complex(cos, sin)
        # residual adds fused into the output GEMMs (x + y·Wᵀ by addmm) where the layers have no bias
        self._fuse = not cfg.bias and all(isinstance(b.ffn, MLP) for b in model.blocks)
        kern = _kernels(p)  # Triton kernels on CUDA (those that passed their check), else None
        self._kern, ok = (kern[0], {k for k, why in kern[1].items() if why is None}) if kern else (None, set())
        self._use = {"rope_kv": "rope_kv" in ok and FAST["fused_rope_kv"], "swiglu": "swiglu" in ok and FAST["fused_swiglu"],
                     "attention": f"attention_{str(p.dtype).split('.')[-1]}" in ok and FAST["triton_attention"]
                     and (cfg.head_dim & (cfg.head_dim - 1)) == 0}
        self._skinny = "skinny_linear" in ok and p.dtype == torch.float32 and FAST["skinny_fp32"]
        if self._use["rope_kv"] and self.rot is not None:
            self._cos = self.rot.real.float().contiguous()
            self._sin = self.rot.imag.float().contiguous()
        else:
            self._cos = self._sin = None

    @property
    def device(self) -> torch.device:
        return self.k.device

    def context(self, T: int, start: torch.Tensor) -> _StepContext:
        positions = start[:, None] + self.key_pos[:T]  # (B, T); key_pos is arange(S), T <= S
        mask = (self.key_pos[None, None, :] <= positions[:, :, None])[:, None]  # (B, 1, T, S)
        if FAST["float_mask"]:  # additive: SDPA would convert a bool mask in every layer
            mask = torch.where(mask, self._zero, self._ninf)
        g = self.cfg.n_head // self.cfg.kv_heads
        if g > 1:  # grouped-query attention: the g query heads of a kv head become g·T query rows
            mask = mask.repeat(1, 1, g, 1)  # (B, 1, g·T, S), row j·T + t ↔ query t
        rope = None
        if self.cfg.pos == "rope":
            rope = self.rot[positions][:, :, None]  # (B, T, 1, hs/2)
        return _StepContext(positions, mask, rope)

    def embed(self, tokens: torch.Tensor, ctx: _StepContext) -> torch.Tensor:
        x = self.model.wte(tokens)
        if self.model.wpe is not None:
            x = x + self.model.wpe(ctx.positions)
        return x  # (B, T, C)

    def _mm(self, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        """x (M, K) · wᵀ (+ r): cuBLAS, or the skinny float32 kernel for a few rows."""
        lo, hi = FAST["skinny_m"]
        if self._skinny and lo <= x.shape[0] <= hi:
            return self._kern.linear(x.contiguous(), w, r)
        return F.linear(x, w) if r is None else torch.addmm(r, x, w.t())

    def _qkv(self, i: int, h: torch.Tensor, ctx: _StepContext):
        """Layer i's q folded for grouped-query attention, (B, nkv, g·T, hs) (query head
        kv·g + j at row j·T + t); writes its k, v into the buffer at ctx.positions."""
        cfg = self.cfg
        B, T, C = h.shape
        nh, nkv, hs = cfg.n_head, cfg.kv_heads, cfg.head_dim
        lin = self.model.blocks[i].attn.qkv
        if lin.bias is None:
            qkv = self._mm(h.reshape(B * T, C), lin.weight).view(B, T, -1)
        else:
            qkv = lin(h)
        if self._use["rope_kv"]:  # rotate, write k/v, fold q: one kernel
            return self._kern.rope_kv(qkv, ctx.positions, self._cos, self._sin, self.k[i], self.v[i], nh)
        qkv = qkv.view(B, T, nh + 2 * nkv, hs)
        qk, v = qkv[:, :, : nh + nkv], qkv[:, :, nh + nkv :]
        if ctx.rope is not None:  # rotate interleaved pairs, as GPT does, q and k in one kernel
            qk = _rotate(qk, ctx.rope).type_as(h)
        q = qk[:, :, :nh].transpose(1, 2)
        idx = ctx.positions[:, None, :, None].expand(B, nkv, T, hs)
        self.k[i].scatter_(2, idx, qk[:, :, nh:].transpose(1, 2))
        self.v[i].scatter_(2, idx, v.transpose(1, 2))
        # head h uses kv head h // g: fold the g query heads of each kv head into the query axis
        return q.reshape(B, nkv, (nh // nkv) * T, hs)

    def block(self, i: int, x: torch.Tensor, ctx: _StepContext) -> torch.Tensor:
        """Transformer block i on x (B, T, C), attending over the buffer."""
        blk, cfg = self.model.blocks[i], self.cfg
        B, T, C = x.shape
        # one memory-efficient SDPA call even for GQA (enable_gqa + a mask falls back to the math
        # path): q comes folded, the g query heads of each kv head along the query axis
        qf = self._qkv(i, _norm(blk.ln_1, x), ctx)  # (B, nkv, g·T, hs)
        if self._use["attention"] and T <= 16:
            y = self._kern.attention(qf, self.k[i], self.v[i], ctx.positions, T)
        else:
            y = F.scaled_dot_product_attention(qf, self.k[i], self.v[i], attn_mask=ctx.mask)
        y = y.reshape(B, cfg.n_head, T, cfg.head_dim).transpose(1, 2).reshape(B * T, C)
        if self._fuse:  # x + y·Wᵀ in one GEMM (cuBLAS epilogue); the same rounding as two ops in float32
            x = self._mm(y, blk.attn.proj.weight, x.reshape(B * T, C)).view(B, T, C)
            mlp = blk.ffn
            u = self._mm(_norm(blk.ln_2, x).reshape(B * T, C), mlp.up.weight)
            if mlp.swiglu:
                if self._use["swiglu"]:
                    u = self._kern.swiglu(u)
                else:
                    gate, val = u.chunk(2, dim=-1)
                    u = F.silu(gate) * val
            else:
                u = F.gelu(u, approximate="tanh")
            return self._mm(u, mlp.down.weight, x.reshape(B * T, C)).view(B, T, C)
        x = x + blk.attn.proj(y.view(B, T, C))
        out = blk.ffn(_norm(blk.ln_2, x))
        if hasattr(out, "aux_loss"):  # an MoE FFN returns an object with .out
            out = out.out
        return x + out

    def write_kv(self, i: int, x: torch.Tensor, ctx: _StepContext) -> None:
        """Fill layer i's keys/values from hidden state x without running the layer (CALM's
        state propagation for skipped layers)."""
        self._qkv(i, _norm(self.model.blocks[i].ln_1, x), ctx)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        head = self.model.lm_head
        if head.bias is None:
            B, T, C = x.shape
            return self._mm(_norm(self.model.ln_f, x).reshape(B * T, C), head.weight).view(B, T, -1)
        return head(_norm(self.model.ln_f, x))

    def forward(self, tokens: torch.Tensor, start: torch.Tensor, ctx: _StepContext | None = None) -> torch.Tensor:
        """Logits (B, T, V); `ctx` (from `context(T, start)`, or a `select`ed row of a longer one)
        saves rebuilding positions, mask and rotations."""
        ctx = ctx if ctx is not None else self.context(tokens.shape[1], start)
        x = self.embed(tokens, ctx)
        for i in range(self.cfg.n_layer):
            x = self.block(i, x, ctx)
        return self.logits(x)


def _rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (..., hs) by complex rot (broadcast to (..., hs/2)); float32+ result."""
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    xc = torch.view_as_complex(xf.unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * rot).flatten(-2)


_KERNELS: dict = {}  # device -> (the Triton kernel module, {kernel: None if it passed its check, else why})


def _kernels(p: torch.Tensor):
    """The Triton kernel module for a CUDA model of float32/bf16/fp16 weights, else None. Each
    kernel is checked against torch once per device (`selftest`); one that fails (no Triton, a
    compile error, a mismatch) is replaced by the plain torch path, with a warning."""
    if p.device.type != "cuda" or p.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    if p.device not in _KERNELS:
        import warnings

        try:
            from paretoml.infer import _decode_kernels

            status = _decode_kernels.selftest(p.device)
        except Exception as e:  # noqa: BLE001 — e.g. no Triton
            _decode_kernels, status = None, {"all": f"{type(e).__name__}: {e}"}
        for name, why in status.items():
            if why is not None:
                warnings.warn(f"paretoml.infer.decode: Triton kernel {name} unavailable ({why}); using the plain "
                              "torch path for it", RuntimeWarning, stacklevel=3)
        _KERNELS[p.device] = (_decode_kernels, status)
    return _KERNELS[p.device]


def _norm(mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(mod, RMSNorm):  # one fused kernel instead of five
        return F.rms_norm(x, (x.shape[-1],), mod.weight, mod.eps)
    return mod(x)


# --- graph capture -----------------------------------------------------------------------


class Graphed:
    """`fn()` captured in a CUDA graph when `enabled` (replay on call), else run eagerly.

    fn reads and writes only static tensors. Capture runs fn a few times on whatever the
    buffers hold, so capture graphs *before* loading real state into the buffers.
    """

    def __init__(self, fn: Callable[[], object], enabled: bool, pool=None):
        self.fn, self.graph, self.out = fn, None, None
        if enabled:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm-up off the capture: cuBLAS handles, lazy inits
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            self.graph = torch.cuda.CUDAGraph()
            # Decoders hold reference cycles (graph → bound method → decoder): if the cyclic garbage
            # collector freed an old decoder's graph *during* this capture, the capture would be
            # invalidated (seen on the H100 when decoders were built in a loop; torch no longer
            # collects before capturing). Collect first, and not at all while capturing.
            gc.collect()
            enabled = gc.isenabled()
            gc.disable()
            try:
                with torch.cuda.graph(self.graph, pool=pool):
                    self.out = fn()
            finally:
                if enabled:
                    gc.enable()

    def __call__(self):
        if self.graph is None:
            return self.fn()
        self.graph.replay()
        return self.out


def use_graphs(device: torch.device, requested: bool) -> bool:
    return requested and device.type == "cuda"


# --- prompts ------------------------------------------------------------------------------


def pack_prompts(prompts, vocab_size: int, where: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of 1-D id sequences (or a (B, T) tensor) → right-padded (B, Lmax) and lengths (B,)."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.numel() == 0:
            raise ValueError(f"{where}: a prompt tensor must have shape (B, T) with B, T >= 1, "
                             f"got {tuple(prompts.shape)}")
        t = prompts.long()
        if int(t.min()) < 0 or int(t.max()) >= vocab_size:
            raise ValueError(f"{where}: prompts have ids outside [0, {vocab_size}); were they encoded "
                             "with the model's tokenizer?")
        return t.to(device), torch.full((t.shape[0],), t.shape[1], dtype=torch.long, device=device)
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(f"{where}: prompts must be a non-empty list of token-id sequences, got {prompts!r:.60}")
    rows = []
    for i, p in enumerate(prompts):
        t = torch.as_tensor(p, dtype=torch.long).reshape(-1)
        if t.numel() == 0:
            raise ValueError(f"{where}: prompt {i} is empty; give at least one token (e.g. a BOS or newline id)")
        if int(t.min()) < 0 or int(t.max()) >= vocab_size:
            raise ValueError(f"{where}: prompt {i} has ids outside [0, {vocab_size}); was it encoded "
                             "with the model's tokenizer?")
        rows.append(t)
    lengths = torch.tensor([len(r) for r in rows])
    padded = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = r
    return padded.to(device), lengths.to(device)


def check_context(where: str, model: GPT, longest_prompt: int, extra: int, what: str) -> int:
    need = longest_prompt + extra
    if need > model.cfg.block_size:
        raise ValueError(f"{where}: the longest prompt ({longest_prompt} tokens) + {what} ({extra}) = {need} "
                         f"positions exceed the model's context of {model.cfg.block_size}; shorten the prompt "
                         "or lower max_new_tokens")
    return need


# --- target-only decoding -----------------------------------------------------------------


class Decoder:
    """Target-only decoding with graphs captured once, reusable for many calls of one shape.

    Args:
        model: a `GPT` in eval mode.
        batch_size: rows per call (prompts given to `generate` must number exactly this).
        max_len: longest prompt + max_new_tokens that calls may need (<= block_size).
        config: sampling settings.
    """

    def __init__(self, model: GPT, batch_size: int, max_len: int, config: DecodeConfig = DecodeConfig()):
        if not isinstance(model, GPT):
            raise TypeError(f"decode.generate: model must be a paretoml GPT, got {type(model).__name__}")
        self.model, self.config, self.batch_size = model, config, batch_size
        self.device = next(model.parameters()).device
        self.lm = StaticLM(model, batch_size, max_len)
        B, S = batch_size, max_len
        self.seq = torch.zeros(B, S + 1, dtype=torch.long, device=self.device)
        self.n = torch.full((B,), 2, dtype=torch.long, device=self.device)  # valid junk for capture
        self.u = torch.zeros(B, device=self.device)
        with torch.no_grad():
            self.step = Graphed(self._step, use_graphs(self.device, config.cuda_graphs))

    def _step(self):
        cfg = self.config
        tok = self.seq.gather(1, (self.n - 1)[:, None])
        lg = self.lm.forward(tok, self.n - 1)[:, 0]
        if cfg.temperature > 0:
            nxt = sample_from(sampling_probs(lg, cfg.temperature, cfg.top_k, cfg.top_p), self.u)
        else:
            nxt = lg.argmax(-1)
        self.seq.scatter_(1, self.n[:, None], nxt[:, None])
        self.n.add_(1)

    @torch.no_grad()
    def generate(self, prompts, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """New ids (B, max_new_tokens) after each prompt."""
        padded, lengths = pack_prompts(prompts, self.model.cfg.vocab_size, "decode.generate", self.device)
        B, L = padded.shape
        n_new = self.config.max_new_tokens
        if B != self.batch_size:
            raise ValueError(f"Decoder.generate: built for {self.batch_size} prompts, got {B}")
        if L + n_new > self.lm.max_len:
            raise ValueError(f"Decoder.generate: prompt ({L}) + max_new_tokens ({n_new}) exceed the decoder's "
                             f"max_len {self.lm.max_len}")
        self.seq.zero_()
        self.seq[:, :L] = padded
        self.n.copy_(lengths)
        self.lm.forward(padded, torch.zeros(B, dtype=torch.long, device=self.device))  # prefill
        for _ in range(n_new):
            if self.config.temperature > 0:
                _fill_uniform(self.u, generator)
            self.step()
        idx = lengths[:, None] + torch.arange(n_new, device=self.device)
        return self.seq.gather(1, idx)


@torch.no_grad()
def generate(model: GPT, prompts, config: DecodeConfig = DecodeConfig(), *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Decode `config.max_new_tokens` tokens after each prompt; returns the new ids (B, max_new_tokens).

    Args:
        model: a `GPT` (eval mode is set by the caller; dropout must be off for exact decoding).
        prompts: list of 1-D id sequences (lengths may differ) or a (B, T) tensor.
        config: sampling settings.
        generator: random source for sampling (on the model's device or the CPU).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"decode.generate: model must be a paretoml GPT, got {type(model).__name__}")
    device = next(model.parameters()).device
    padded, lengths = pack_prompts(prompts, model.cfg.vocab_size, "decode.generate", device)
    S = check_context("decode.generate", model, padded.shape[1], config.max_new_tokens, "max_new_tokens")
    return Decoder(model, padded.shape[0], S, config).generate(_rows(padded, lengths), generator=generator)


def _rows(padded: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    if bool((lengths == padded.shape[1]).all()):
        return padded
    return [padded[i, : int(lengths[i])] for i in range(len(padded))]


def _fill_uniform(u: torch.Tensor, generator: torch.Generator | None) -> None:
    if generator is None or generator.device.type == u.device.type:
        u.uniform_(generator=generator)
    else:
        u.copy_(torch.rand(u.shape, generator=generator))
