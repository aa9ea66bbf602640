"""Speculative decoding (Leviathan et al., 2023): a cheap draft proposes, the target verifies.

Each round the draft samples γ tokens autoregressively; the target scores the pending token
and all γ proposals in one forward pass; proposal i is kept with probability
min(1, p_i(x)/q_i(x)); at the first rejection a token is drawn from the residual
norm(max(0, p − q)), and when all γ pass a bonus token comes from p_{γ+1}. The output is
distributed *exactly* as the target's own samples (greedy: identical tokens). Rows of a
batch accept different numbers of tokens: every row keeps its own length in a device
tensor and the whole round — γ draft steps, the verification pass and the acceptance rule —
is one static-shape function, captured in a single CUDA graph on the GPU, so a round costs
one graph replay and one host read of the row lengths (are all rows done?). The host keeps the
next round queued while it reads (`PIPELINE`), launching only rounds that are surely needed, so
the GPU does not idle through the read and the relaunch.

    >>> cfg = SpeculativeConfig(gamma=4, temperature=0.0, max_new_tokens=128)
    >>> res = generate(target, draft, [prompt_ids], cfg)
    >>> res.tokens            # (B, 128) new ids; res.acceptance_rate is α

Expected tokens per round (1 − α^{γ+1}) / (1 − α); speed-up over the target alone
(1 − α^{γ+1}) / ((1 − α)(γc + 1)) for a draft/target step cost ratio c: `theoretical_speedup`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paretoml.infer.decode import (Graphed, StaticLM, _check_sampling, _fill_uniform, _rows, check_context,
                                   pack_prompts, sample_from, sampling_probs, use_graphs)
from paretoml.models.gpt import GPT

__all__ = ["SpeculativeConfig", "SpeculativeResult", "SpeculativeDecoder", "generate", "theoretical_speedup", "expected_tokens_per_round"]

# On CUDA the host keeps up to PIPELINE rounds queued ahead of the one whose lengths it reads, but
# only rounds that are surely needed (some row cannot have finished before them: each round adds at
# most γ+1 tokens), so the GPU does not idle through the host's read and relaunch; 1 = wait for
# every round before launching the next.
PIPELINE = 2


@dataclass(frozen=True)
class SpeculativeConfig:
    """gamma: draft tokens per round (>= 1); sampling settings as in `DecodeConfig`
    (they define the target distribution that is reproduced exactly)."""

    gamma: int = 4
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 64
    cuda_graphs: bool = True

    def __post_init__(self):
        if not isinstance(self.gamma, int) or self.gamma < 1:
            raise ValueError(f"SpeculativeConfig.gamma must be an int >= 1 (draft tokens per round), got {self.gamma!r}")
        _check_sampling("SpeculativeConfig", self.max_new_tokens, self.temperature, self.top_k, self.top_p)


@dataclass(frozen=True)
class SpeculativeResult:
    """tokens: (B, max_new_tokens) new ids. acceptance_rate: α, the mean over verified draft
    positions of Σ_x min(p(x), q(x)) (the expected acceptance probability). tokens_per_round:
    mean tokens a row gained per target call. rounds: target calls (verification passes)."""

    tokens: torch.Tensor
    acceptance_rate: float
    tokens_per_round: float
    rounds: int


def expected_tokens_per_round(alpha: float, gamma: int) -> float:
    """(1 − α^{γ+1}) / (1 − α): mean tokens per target call for acceptance rate α."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def theoretical_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Leviathan et al.'s walltime improvement (1 − α^{γ+1}) / ((1 − α)(γc + 1))."""
    return expected_tokens_per_round(alpha, gamma) / (gamma * cost_ratio + 1)


def _check_pair(target: GPT, draft: GPT) -> None:
    for name, m in (("target", target), ("draft", draft)):
        if not isinstance(m, GPT):
            raise TypeError(f"speculative.generate: {name} must be a paretoml GPT, got {type(m).__name__}")
    vt, vd = target.cfg.vocab_size, draft.cfg.vocab_size
    if vt != vd:
        raise ValueError(f"speculative.generate: draft vocabulary ({vd}) differs from the target's ({vt}); "
                         "the draft must use the target's tokenizer")
    dt, dd = next(target.parameters()).device, next(draft.parameters()).device
    if dt != dd:
        raise ValueError(f"speculative.generate: target is on {dt} but draft on {dd}; move both to one device")


class _Round:
    """Buffers and the static-shape round function for a batch of B rows."""

    def __init__(self, target: GPT, draft: GPT, B: int, S: int, cfg: SpeculativeConfig):
        dev = next(target.parameters()).device
        self.cfg, self.B = cfg, B
        g = cfg.gamma
        self.tlm, self.dlm = StaticLM(target, B, S), StaticLM(draft, B, S)
        self.seq = torch.zeros(B, S + g + 2, dtype=torch.long, device=dev)  # tokens so far
        self.n = torch.full((B,), 2, dtype=torch.long, device=dev)  # tokens per row (pending = n-1)
        self.limit = torch.full((B,), 3, dtype=torch.long, device=dev)  # stop once n >= limit
        self.u = torch.zeros(B, 2 * g + 1, device=dev)  # uniforms: γ draft, γ accept, 1 residual
        self.stats = torch.zeros(1, dtype=torch.float64, device=dev)  # Σβ (sampled: Σ_x min(p, q) verified)
        self.ar = torch.arange(g + 1, device=dev)

    def probs(self, logits):
        c = self.cfg
        return sampling_probs(logits, c.temperature, c.top_k, c.top_p)

    def __call__(self):
        g, B = self.cfg.gamma, self.B
        seq, u = self.seq, self.u
        if B == 1:  # the host stops as soon as the row is done: no per-row masking needed
            active, n = None, self.n
        else:
            active = self.n < self.limit  # (B,)
            # finished rows recompute harmless junk at fixed in-range positions
            n = torch.where(active, self.n, torch.full_like(self.n, 2))
        # Draft: its cache is valid up to n-3 at least, so the first step feeds the last two
        # tokens (re-writing position n-2 costs nothing at T=2 and covers a bonus token).
        s0 = (n - 2).clamp_min(0)
        lg = self.dlm.forward(seq.gather(1, s0[:, None] + self.ar[:2]), s0)  # (B, 2, V)
        lg = lg.gather(1, (n - 1 - s0)[:, None, None].expand(B, 1, lg.shape[-1]))[:, 0]
        if self.cfg.temperature == 0:
            return self._greedy(n, active, lg)
        qs, ds = [], []
        dctx = self.dlm.context(g - 1, n) if g > 1 else None  # draft steps 1..γ−1: one context, sliced
        for j in range(g):
            if j:
                lg = self.dlm.forward(ds[-1][:, None], n, dctx.select(j - 1))[:, 0]  # ctx gives positions
            q = self.probs(lg)  # (B, V)
            qs.append(q)
            ds.append(sample_from(q, u[:, j]))
        d, q = torch.stack(ds, 1), torch.stack(qs, 1)  # (B, γ), (B, γ, V)
        # Target: pending token + γ proposals in one pass → p_1..p_{γ+1}
        pend = seq.gather(1, (n - 1)[:, None])
        p = self.probs(self.tlm.forward(torch.cat([pend, d], 1), n - 1))  # (B, γ+1, V)
        pd = p[:, :g].gather(2, d[..., None])[..., 0]
        qd = q.gather(2, d[..., None])[..., 0]
        ok = u[:, g : 2 * g] * qd < pd  # accept with prob min(1, p/q); qd > 0 for sampled d
        a = ok.long().cumprod(1).sum(1)  # (B,) accepted prefix length
        # residual at the first rejection (q padded with 0 at γ → plain p_{γ+1} when all pass)
        qpad = torch.cat([q, torch.zeros_like(q[:, :1])], 1)
        ia = a[:, None, None].expand(B, 1, p.shape[-1])
        pa, qa = p.gather(1, ia)[:, 0], qpad.gather(1, ia)[:, 0]
        r = (pa - qa).clamp_min(0)
        r = torch.where(r.sum(-1, keepdim=True) > 0, r, pa)  # p == q exactly: nothing to correct
        t = sample_from(r, u[:, 2 * g])
        cand = torch.cat([d, torch.zeros_like(d[:, :1])], 1).scatter_(1, a[:, None], t[:, None])
        self._advance(n, a, cand, active)
        # α: Σ_x min(p, q) over the draft positions the target verified (j <= a, j < γ)
        beta = torch.minimum(p[:, :g], q).sum(-1)  # (B, γ)
        verified = torch.arange(g, device=a.device)[None] <= a[:, None]
        if active is not None:
            verified = verified & active[:, None]
        self.stats[0] += (beta * verified).sum().double()
        return None

    def _advance(self, n, a, cand, active):
        """Write the accepted tokens + the target's token and move each row's length on."""
        pos = n[:, None] + self.ar  # (B, γ+1)
        if active is None:
            self.seq.scatter_(1, pos, cand)
            self.n.add_(a + 1)
        else:
            self.seq.scatter_(1, pos, torch.where(active[:, None], cand, self.seq.gather(1, pos)))
            self.n.copy_(torch.where(active, n + a + 1, self.n))

    def _greedy(self, n, active, lg):
        """The same round for temperature 0 with argmaxes instead of one-hot distributions
        (identical decisions, ~60 fewer small kernels per round)."""
        g, seq = self.cfg.gamma, self.seq
        ds = [lg.argmax(-1)]
        dctx = self.dlm.context(g - 1, n) if g > 1 else None  # draft steps 1..γ−1: one context, sliced
        for j in range(1, g):
            ds.append(self.dlm.forward(ds[-1][:, None], n, dctx.select(j - 1))[:, 0].argmax(-1))
        d = torch.stack(ds, 1)  # (B, γ)
        pend = seq.gather(1, (n - 1)[:, None])
        top = self.tlm.forward(torch.cat([pend, d], 1), n - 1).argmax(-1)  # (B, γ+1)
        a = (top[:, :g] == d).cumprod(1).sum(1)  # accepted prefix length
        # the accepted draft tokens *are* the target's argmaxes, so the target's γ+1 argmaxes are the
        # accepted prefix followed by its own token; what lies past it is overwritten by later rounds
        self._advance(n, a, top, active)
        return None  # the host reads the lengths: accepted counts and "done" follow from them


class SpeculativeDecoder:
    """Speculative decoding with the round graph captured once, reusable across calls of one shape.

    Args:
        target, draft: `GPT`s with one vocabulary, on one device, in eval mode.
        batch_size: rows per call.
        max_len: longest prompt + max_new_tokens + gamma that calls may need (<= both block sizes).
        config: γ and sampling settings.
    """

    def __init__(self, target: GPT, draft: GPT, batch_size: int, max_len: int,
                 config: SpeculativeConfig = SpeculativeConfig()):
        _check_pair(target, draft)
        self.target, self.config, self.batch_size, self.max_len = target, config, batch_size, max_len
        self.device = next(target.parameters()).device
        self.round = _Round(target, draft, batch_size, max_len, config)
        with torch.no_grad():
            self.graphed = Graphed(self.round, use_graphs(self.device, config.cuda_graphs))

    def _pipelined(self, limit: list[int], hist: list[list[int]], generator) -> int:
        """Launch rounds ahead of the host's reads of the lengths (pinned copy + event per round);
        appends each round's lengths to `hist`, returns the number of rounds."""
        cfg, rnd = self.config, self.round
        need = cfg.max_new_tokens + 1  # every round adds >= 1 token to each unfinished row
        cuda = self.device.type == "cuda"
        if getattr(self, "_host", None) is None or self._host.shape[0] < need:
            self._host = torch.empty((need, self.batch_size), dtype=torch.long, pin_memory=cuda)
            self._events = [torch.cuda.Event() if cuda else None for _ in range(need)]
        host, events, step = self._host, self._events, cfg.gamma + 1
        launched = read = 0
        known = hist[-1]
        while True:
            while launched - read < PIPELINE and any(k + (launched - read) * step < lim
                                                     for k, lim in zip(known, limit)):
                if cfg.temperature > 0:
                    _fill_uniform(rnd.u, generator)
                self.graphed()
                host[launched].copy_(rnd.n, non_blocking=cuda)
                if cuda:
                    events[launched].record()
                launched += 1
            if read == launched:
                return launched
            if cuda:
                events[read].synchronize()
            known = host[read].tolist()
            hist.append(known)
            read += 1

    @torch.no_grad()
    def generate(self, prompts, *, generator: torch.Generator | None = None) -> SpeculativeResult:
        cfg, rnd = self.config, self.round
        padded, lengths = pack_prompts(prompts, self.target.cfg.vocab_size, "speculative.generate", self.device)
        B, L = padded.shape
        if B != self.batch_size:
            raise ValueError(f"SpeculativeDecoder.generate: built for {self.batch_size} prompts, got {B}")
        if L + cfg.max_new_tokens + cfg.gamma > self.max_len:
            raise ValueError(f"SpeculativeDecoder.generate: prompt ({L}) + max_new_tokens + gamma exceed the "
                             f"decoder's max_len {self.max_len}")
        rnd.seq.zero_()
        rnd.seq[:, :L] = padded
        rnd.n.copy_(lengths)
        rnd.limit.copy_(lengths + cfg.max_new_tokens)
        rnd.stats.zero_()
        zero = torch.zeros(B, dtype=torch.long, device=self.device)
        rnd.tlm.forward(padded, zero)  # prefill both caches (right padding is overwritten later)
        rnd.dlm.forward(padded, zero)
        limit = (lengths + cfg.max_new_tokens).tolist()
        hist = [lengths.tolist()]
        if PIPELINE <= 1:
            rounds = 0
            while True:
                if cfg.temperature > 0:
                    _fill_uniform(rnd.u, generator)
                self.graphed()
                rounds += 1
                n_now = rnd.n.tolist()  # the one host sync per round; little host work before the next launch
                hist.append(n_now)
                if all(v >= lim for v, lim in zip(n_now, limit)):
                    break
        else:
            rounds = self._pipelined(limit, hist, generator)
        acc = [0, 0, 0, 0]  # Σ accepted, Σ verified, Σ(a+1), row-rounds, from the lengths after each round
        for prev, now in zip(hist, hist[1:]):
            for p, q, lim in zip(prev, now, limit):
                if p < lim:
                    a = q - p - 1
                    acc[0] += a
                    acc[1] += min(a + 1, cfg.gamma)  # draft positions the target verified
                    acc[2] += a + 1
                    acc[3] += 1
        idx = lengths[:, None] + torch.arange(cfg.max_new_tokens, device=self.device)
        # α: greedy, accepted / verified draft positions; sampled, the mean of Σ_x min(p, q) over them
        s = [acc[0] if cfg.temperature == 0 else float(rnd.stats[0]), acc[1], acc[2], acc[3]]
        return SpeculativeResult(rnd.seq.gather(1, idx), s[0] / max(s[1], 1.0), s[2] / max(s[3], 1.0), rounds)


@torch.no_grad()
def generate(target: GPT, draft: GPT, prompts, config: SpeculativeConfig = SpeculativeConfig(), *,
             generator: torch.Generator | None = None) -> SpeculativeResult:
    """Speculative decoding of `config.max_new_tokens` tokens after each prompt.

    Args:
        target: the model whose distribution the output follows exactly.
        draft: a cheaper `GPT` with the same vocabulary, on the same device.
        prompts: list of 1-D id sequences (lengths may differ) or a (B, T) tensor.
        config: γ and sampling settings.
        generator: random source (on the models' device or the CPU).
    """
    _check_pair(target, draft)
    cfg = config
    device = next(target.parameters()).device
    padded, lengths = pack_prompts(prompts, target.cfg.vocab_size, "speculative.generate", device)
    B, L = padded.shape
    for m in (target, draft):
        check_context("speculative.generate", m, L, cfg.max_new_tokens + cfg.gamma, "max_new_tokens + gamma")
    dec = SpeculativeDecoder(target, draft, B, L + cfg.max_new_tokens + cfg.gamma, cfg)
    return dec.generate(_rows(padded, lengths), generator=generator)
