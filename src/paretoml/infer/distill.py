"""DistillSpec (Zhou et al., 2023): distil the draft toward the target before speculative decoding.

Speculative decoding's acceptance rate is α = E[Σ_x min(p(x), q(x))] = 1 − E[TV(p, q)], so a
draft trained to *match the target* (not the data) on the contexts it will actually see
(its own samples: on-policy) gets accepted more often. Each step mixes sequences the draft
generates (fraction `on_policy_fraction`) with windows of the training data, and minimises a
divergence between the target's and the draft's next-token distributions at every position:
forward KL(p‖q), reverse KL(q‖p), Jensen–Shannon (β = ½) or total variation (the quantity
that sets α directly).

    >>> cfg = DistillSpecConfig(divergence="tvd", on_policy_fraction=0.5, steps=300)
    >>> distill_draft(target, draft, train_ids, cfg)        # trains `draft` in place

DistillSpec's finding is that the divergence and the data should match the decoding mode.
For *greedy* speculative decoding only the target's argmax matters (a proposal is accepted iff
it equals it) and the contexts the draft sees are the target's own greedy output, so
`DistillSpecConfig(divergence="fkl", target_temperature=0, sample_temperature=0,
sample_model="target")` distils toward the target's argmax (forward KL to a one-hot = cross-
entropy) on greedy sequences; `sample_model="draft"` keeps the sequences on-policy (the draft's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from paretoml.infer.decode import DecodeConfig, Decoder
from paretoml.models.gpt import GPT

__all__ = ["DistillSpecConfig", "DistillSpecResult", "distill_draft", "divergence"]

_DIVERGENCES = ("fkl", "rkl", "jsd", "tvd")


@dataclass(frozen=True)
class DistillSpecConfig:
    """divergence: "fkl" | "rkl" | "jsd" | "tvd". on_policy_fraction: share of each batch that
    is generated (the rest are data windows). Generated sequences are `prompt_len` data tokens +
    `gen_len` tokens that `sample_model` ("draft": on-policy; "target": the teacher's output)
    decodes at `sample_temperature` (0 = greedy); data windows are `prompt_len + gen_len` data
    tokens. target_temperature: the target distribution p = softmax(logits / τ) that the draft
    matches (0 = its argmax as a one-hot; then only "fkl" (cross-entropy) and "tvd" are finite)."""

    divergence: str = "tvd"
    on_policy_fraction: float = 0.5
    steps: int = 200
    batch_size: int = 32
    prompt_len: int = 32
    gen_len: int = 64
    lr: float = 1e-3
    sample_temperature: float = 1.0
    target_temperature: float = 1.0
    sample_model: str = "draft"
    seed: int = 0

    def __post_init__(self):
        if self.divergence not in _DIVERGENCES:
            raise ValueError(f"DistillSpecConfig.divergence must be one of {_DIVERGENCES}, got {self.divergence!r}")
        if not 0.0 <= self.on_policy_fraction <= 1.0:
            raise ValueError(f"DistillSpecConfig.on_policy_fraction must be in [0, 1], got {self.on_policy_fraction!r}")
        for name in ("steps", "batch_size", "prompt_len", "gen_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DistillSpecConfig.{name} must be an int >= 1, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"DistillSpecConfig.lr must be > 0, got {self.lr!r}")
        if not self.sample_temperature >= 0:
            raise ValueError(f"DistillSpecConfig.sample_temperature must be >= 0 (0 = greedy), "
                             f"got {self.sample_temperature!r}")
        if not self.target_temperature >= 0:
            raise ValueError(f"DistillSpecConfig.target_temperature must be >= 0 (0 = argmax), "
                             f"got {self.target_temperature!r}")
        if self.target_temperature == 0 and self.divergence not in ("fkl", "tvd"):
            raise ValueError(f"DistillSpecConfig.target_temperature = 0 (a one-hot target) needs divergence "
                             f"'fkl' or 'tvd'; {self.divergence!r} is infinite there")
        if self.sample_model not in ("draft", "target"):
            raise ValueError(f"DistillSpecConfig.sample_model must be 'draft' or 'target', got {self.sample_model!r}")


@dataclass(frozen=True)
class DistillSpecResult:
    """losses: the divergence at every step (mean over positions)."""

    losses: list[float]


def divergence(kind: str, target_logits: torch.Tensor, draft_logits: torch.Tensor,
               target_temperature: float = 1.0) -> torch.Tensor:
    """Mean over positions of D(p, q), p = softmax(target_logits / target_temperature) (the
    one-hot of the argmax at temperature 0), q = softmax(draft_logits); (..., V) logits."""
    if kind not in _DIVERGENCES:
        raise ValueError(f"divergence: kind must be one of {_DIVERGENCES}, got {kind!r}")
    lq = F.log_softmax(draft_logits.float(), -1)
    if target_temperature == 0:
        top = target_logits.argmax(-1, keepdim=True)
        if kind == "fkl":  # KL(one-hot ‖ q) = −log q(argmax)
            return -lq.gather(-1, top).mean()
        if kind == "tvd":  # ½‖one-hot − q‖₁ = 1 − q(argmax)
            return (1 - lq.gather(-1, top).exp()).mean()
        raise ValueError(f"divergence: {kind!r} toward a one-hot target (temperature 0) is infinite; use 'fkl' or 'tvd'")
    lp = F.log_softmax(target_logits.float() / target_temperature, -1)
    p, q = lp.exp(), lq.exp()
    if kind == "fkl":
        d = (p * (lp - lq)).sum(-1)
    elif kind == "rkl":
        d = (q * (lq - lp)).sum(-1)
    elif kind == "jsd":
        lm = torch.logsumexp(torch.stack([lp, lq]), 0) - torch.log(torch.tensor(2.0, device=lp.device))
        d = 0.5 * (p * (lp - lm)).sum(-1) + 0.5 * (q * (lq - lm)).sum(-1)
    else:
        d = 0.5 * (p - q).abs().sum(-1)
    return d.mean()


class _Sampler:
    """Generated sequences for the distillation batches, from a graphed `Decoder` built once.

    The draft's graphs read its parameters in place, so optimiser steps are seen: each call
    decodes `n` fresh prompts (on-policy). The frozen target's sequences do not change during
    distillation, so they are decoded `pool` rows at a time (large batches, few steps) and served
    `n` per call — the same i.i.d. draws, far cheaper."""

    def __init__(self, model: GPT, cfg: DistillSpecConfig, n: int, pool: int):
        self.n, self.cfg, self.model = n, cfg, model
        self.rows = max(n, pool)
        self.buf, self.used = None, 0
        if n:
            self.dec = Decoder(model, self.rows, cfg.prompt_len + cfg.gen_len,
                               DecodeConfig(max_new_tokens=cfg.gen_len, temperature=cfg.sample_temperature))

    def __call__(self, data: torch.Tensor, g: torch.Generator, device) -> torch.Tensor:
        cfg = self.cfg
        if self.buf is None or self.used + self.n > self.rows:
            starts = torch.randint(len(data) - cfg.prompt_len, (self.rows,), generator=g)
            prompts = data[starts[:, None] + torch.arange(cfg.prompt_len)].to(device)
            self.model.eval()
            self.buf = torch.cat([prompts, self.dec.generate(prompts, generator=g)], 1)
            self.used = 0
        out = self.buf[self.used : self.used + self.n]
        self.used += self.n
        return out


def _batch(sampler: _Sampler, data: torch.Tensor, cfg: DistillSpecConfig, g: torch.Generator, device):
    T = cfg.prompt_len + cfg.gen_len
    starts = torch.randint(len(data) - T, (cfg.batch_size,), generator=g)
    x = data[starts[:, None] + torch.arange(T)].to(device)  # (B, T) data windows
    if sampler.n:
        x[: sampler.n] = sampler(data, g, device)
    return x


def distill_draft(target: GPT, draft: GPT, data: torch.Tensor, config: DistillSpecConfig = DistillSpecConfig(),
                  *, generator: torch.Generator | None = None) -> DistillSpecResult:
    """Train `draft` (in place) to match `target` on a mix of its own samples and data.

    Args:
        target: the frozen teacher (a `GPT`).
        draft: the student, same vocabulary and device.
        data: 1-D int64 token stream (the target's training text) for prompts and off-policy windows.
        config: divergence, on-policy share, optimisation settings.
        generator: CPU random source for window positions and draft samples (default: seeded from config).
    """
    for name, m in (("target", target), ("draft", draft)):
        if not isinstance(m, GPT):
            raise TypeError(f"distill_draft: {name} must be a paretoml GPT, got {type(m).__name__}")
    if target.cfg.vocab_size != draft.cfg.vocab_size:
        raise ValueError(f"distill_draft: draft vocabulary ({draft.cfg.vocab_size}) differs from the target's "
                         f"({target.cfg.vocab_size})")
    cfg = config
    T = cfg.prompt_len + cfg.gen_len
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or len(data) <= T:
        got = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"distill_draft: data must be a 1-D token tensor longer than prompt_len + gen_len = {T}, "
                         f"got {got}")
    if T > min(target.cfg.block_size, draft.cfg.block_size):
        raise ValueError(f"distill_draft: prompt_len + gen_len = {T} exceeds a model's block_size")
    device = next(draft.parameters()).device
    g = generator or torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(draft.parameters(), lr=cfg.lr, weight_decay=0.0)
    target.eval()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    losses = []
    n_gen = round(cfg.on_policy_fraction * cfg.batch_size)
    if cfg.sample_model == "draft":
        sampler = _Sampler(draft, cfg, n_gen, n_gen)
    else:  # the frozen teacher: decode its sequences in large batches
        sampler = _Sampler(target, cfg, n_gen, min(512, n_gen * cfg.steps))
    for step in range(cfg.steps):
        x = _batch(sampler, data, cfg, g, device)
        with torch.no_grad(), amp:
            p_logits = target(x).logits
        draft.train()
        with amp:
            loss = divergence(cfg.divergence, p_logits, draft(x).logits, cfg.target_temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    draft.eval()
    return DistillSpecResult(losses)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
