"""CALM (Schuster et al., 2022): per-token early exit from the decoder stack, calibrated.

After layer i the hidden state is read out by an *exit head* — the model's own LM head behind a
per-layer norm (`ExitHeads`). Intermediate layers only become confident when the model is
trained for it: `exit_loss` is CALM's objective (per-layer LM losses, weights ∝ depth), to train
or fine-tune the model with (`train_exit_heads(..., finetune_model=True)`; with False only the
exit norms learn, model frozen). If a confidence measure passes a threshold that decays along
the sequence, λ_t = clip(0.9·λ + 0.1·e^{−τ t / N}), the token is emitted from layer i and the
skipped layers' keys/values are filled from the exit state (state propagation; the later tokens
attend to them). That propagation, not the exit decisions, causes most disagreements with full
depth, so `exit_loss(..., exits=random_exits(...))` also trains the model to read propagated
states. Measures: "softmax" (top-1 − top-2 probability of the exit head), "saturation"
(cos(h_i, h_{i−1}), free) and "classifier" (CALM's learned exit classifier, `train_exit_classifiers`:
P(exit token = full-depth token)). `calibrate` picks the smallest λ whose outputs stay consistent
with the full model — mean token disagreement ≤ ε — with probability ≥ 1 − δ, by Learn-then-Test
fixed-sequence testing with Hoeffding–Bentkus p-values.

    >>> heads = ExitHeads(model)
    >>> loss, per_layer = exit_loss(model, heads, x, y, exits=random_exits(x.shape, L, cfg))  # in training
    >>> cal = calibrate(model, heads, cal_prompts, EarlyExitConfig(max_new_tokens=64), epsilon=0.05, delta=0.1)
    >>> res = generate(model, heads, prompts, replace(cfg, threshold=cal.threshold))   # res.mean_layers
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from paretoml.infer.decode import (DecodeConfig, Graphed, StaticLM, _norm, _rotate, check_context,
                                   pack_prompts, use_graphs)
from paretoml.infer.decode import generate as full_generate
from paretoml.models.gpt import GPT, _norm as _make_norm

__all__ = ["EarlyExitConfig", "EarlyExitResult", "ExitHeads", "exit_weights", "exit_loss", "random_exits", "train_exit_heads",
           "train_exit_classifiers", "calibrate",
           "CalibrationResult", "generate", "hb_p_value"]

_MEASURES = ("softmax", "saturation", "classifier")


@dataclass(frozen=True)
class EarlyExitConfig:
    """threshold λ in [0, 1] (1: never exit early); measure "softmax" | "saturation" | "classifier"
    (the exit heads' learned consistency classifiers, `train_exit_classifiers`); tau: decay of
    the threshold along the sequence; min_layer: earliest layer (1-based) that may exit;
    exit_every: test every k-th layer only (each test is one host sync per token)."""

    threshold: float = 0.9
    measure: str = "softmax"
    tau: float = 4.0
    min_layer: int = 1
    exit_every: int = 1
    max_new_tokens: int = 64
    cuda_graphs: bool = True

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"EarlyExitConfig.threshold must be in [0, 1], got {self.threshold!r}")
        if self.measure not in _MEASURES:
            raise ValueError(f"EarlyExitConfig.measure must be one of {_MEASURES}, got {self.measure!r}")
        if not self.tau >= 0:
            raise ValueError(f"EarlyExitConfig.tau must be >= 0, got {self.tau!r}")
        for name in ("min_layer", "exit_every", "max_new_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"EarlyExitConfig.{name} must be an int >= 1, got {v!r}")


@dataclass(frozen=True)
class EarlyExitResult:
    """tokens (B, max_new_tokens); layers_used (B, max_new_tokens) layers run per token and
    row; mean_layers: their mean."""

    tokens: torch.Tensor
    layers_used: torch.Tensor
    mean_layers: float


class ExitHeads(nn.Module):
    """One norm per layer but the last (which uses the model's `ln_f`), in front of the shared LM head."""

    def __init__(self, model: GPT):
        super().__init__()
        if not isinstance(model, GPT):
            raise TypeError(f"ExitHeads: model must be a paretoml GPT, got {type(model).__name__}")
        self.norms = nn.ModuleList(_make_norm(model.cfg) for _ in range(model.cfg.n_layer - 1))
        # CALM's early-exit classifiers: P(exit i's token = the full model's) from the exit state
        # (normalised) and the exit's top-1 / top-1 − top-2 probabilities; zero-initialised (0.5)
        self.classifiers = nn.ModuleList(nn.Linear(model.cfg.n_embd + 2, 1) for _ in range(model.cfg.n_layer - 1))
        for c in self.classifiers:
            nn.init.zeros_(c.weight)
            nn.init.zeros_(c.bias)
        p = next(model.parameters())
        self.to(device=p.device, dtype=p.dtype)
        with torch.no_grad():  # start from the final norm: layer L's head is exactly the model's
            for n in self.norms:
                n.load_state_dict(model.ln_f.state_dict())

    def logits(self, model: GPT, i: int, h: torch.Tensor) -> torch.Tensor:
        """Exit logits after layer i (0-based) from hidden state h (..., C)."""
        norm = model.ln_f if i == len(self.norms) else self.norms[i]
        return model.lm_head(_norm(norm, h))


def exit_weights(n_layer: int) -> torch.Tensor:
    """CALM's weights of the per-layer LM losses: w_i = i / Σ_j j (i = 1..L, increasing with depth)."""
    w = torch.arange(1, n_layer + 1, dtype=torch.float32)
    return w / w.sum()


def exit_loss(model: GPT, heads: ExitHeads, x: torch.Tensor, y: torch.Tensor,
              weights: torch.Tensor | None = None, exits: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """CALM's training objective: Σ_i w_i · CE(exit head i(h_i), y) over all L layers (the last is
    the model's own head), w from `exit_weights` unless given. Runs the model in its current mode
    (dropout on in training) with gradients. Returns the loss and the per-layer losses (a
    detached (L,) tensor; no host sync). Use it in place of the plain LM loss to train (or fine-tune) a model whose intermediate
    layers can exit confidently.

    exits (B, T) long, optional: a simulated exit layer per token (0-based; ≥ L − 1 = none, see
    `random_exits`). At every layer j past a token's exit, the keys and values that later tokens
    see of it are computed from its exit state — exactly CALM's state propagation at decoding
    time — so the model learns to read propagated states (without it, the propagated keys and
    values, not the exit decisions, cause most disagreements with full depth)."""
    _check(model, heads, "early_exit.exit_loss")
    L = model.cfg.n_layer
    w = (exit_weights(L) if weights is None else torch.as_tensor(weights, dtype=torch.float32)).to(x.device)
    if w.shape != (L,):
        raise ValueError(f"exit_loss: weights must have one entry per layer ({L}), got shape {tuple(w.shape)}")
    if exits is not None and exits.shape != x.shape:
        raise ValueError(f"exit_loss: exits must have the shape of x {tuple(x.shape)}, got {tuple(exits.shape)}")
    loss, per = 0.0, []
    for i, h in enumerate(_forward_states(model, x, exits)):
        ce = F.cross_entropy(heads.logits(model, i, h).float().flatten(0, 1), y.flatten())
        loss = loss + w[i] * ce
        per.append(ce.detach())
    return loss, torch.stack(per)


def _forward_states(model: GPT, x: torch.Tensor, exits: torch.Tensor | None = None):
    """Yield the hidden state after each layer (with gradients), with simulated exits (see `exit_loss`)."""
    h = model.embed(x)
    rope = model.rope(0, x.shape[1])
    h_exit = h
    for i, blk in enumerate(model.blocks):
        if exits is None:
            h, _ = blk(h, rope)
        else:
            h = _propagated_block(model, blk, h, h_exit, exits < i, rope)
            h_exit = torch.where((exits == i)[..., None], h, h_exit)
        yield h


def random_exits(shape, n_layer: int, config: "EarlyExitConfig", p: float = 0.5,
                 generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Simulated exits for `exit_loss`: each token exits with probability p after a layer drawn
    uniformly from those `config` tests (min_layer, exit_every), else never (n_layer − 1)."""
    cands = torch.tensor(_candidates(n_layer, config) or [n_layer - 1])
    pick = cands[torch.randint(len(cands), shape, generator=generator)]
    out = torch.where(torch.rand(shape, generator=generator) < p, pick, torch.full(shape, n_layer - 1))
    return out.to(device)


def _propagated_block(model: GPT, blk, h: torch.Tensor, h_exit: torch.Tensor, use: torch.Tensor, rope):
    """A block whose keys/values come from h_exit for tokens where `use` (B, T) holds."""
    from paretoml.models.gpt import _rope

    cfg = model.cfg
    B, T, C = h.shape
    nh, nkv, hs = cfg.n_head, cfg.kv_heads, cfg.head_dim
    att = blk.attn
    xn = blk.ln_1(h)
    kvn = torch.where(use[..., None], blk.ln_1(h_exit), xn)
    wq, wkv = att.qkv.weight[: nh * hs], att.qkv.weight[nh * hs :]
    bq, bkv = (att.qkv.bias[: nh * hs], att.qkv.bias[nh * hs :]) if att.qkv.bias is not None else (None, None)
    q = F.linear(xn, wq, bq).view(B, T, nh, hs).transpose(1, 2)
    k, v = F.linear(kvn, wkv, bkv).view(B, T, 2 * nkv, hs).transpose(1, 2).split(nkv, dim=1)
    if rope is not None:
        q, k = _rope(q, *rope), _rope(k, *rope)
    if nkv != nh:
        k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=att.dropout if model.training else 0.0)
    h = h + att.proj(y.transpose(1, 2).reshape(B, T, C))
    out = blk.ffn(blk.ln_2(h))
    if hasattr(out, "aux_loss"):
        out = out.out
    return h + out


def train_exit_heads(model: GPT, heads: ExitHeads, data: torch.Tensor, *, steps: int = 200,
                     batch_size: int = 32, seq_len: int = 128, lr: float = 3e-3, finetune_model: bool = False,
                     generator: torch.Generator | None = None) -> list[float]:
    """Fit the exit heads to the data. With `finetune_model=False` the model is frozen and only the
    exit norms learn (next token, layer i weighted ∝ i, plus a KL term toward the full model's
    prediction); with True the model is fine-tuned jointly with its exits on `exit_loss` (CALM's
    recipe: intermediate layers only become confident when the stack is trained for it).
    Returns the loss per step."""
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or len(data) <= seq_len:
        raise ValueError(f"train_exit_heads: data must be a 1-D token tensor longer than seq_len={seq_len}")
    _check(model, heads, "early_exit.train_exit_heads")
    device = next(model.parameters()).device
    g = generator or torch.Generator().manual_seed(0)
    L = model.cfg.n_layer
    params = list(heads.parameters()) + (list(model.parameters()) if finetune_model else [])
    opt = torch.optim.Adam(params, lr=lr)
    w = exit_weights(L - 1).to(device)
    losses = []
    was_training = model.training
    if not finetune_model:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    else:
        model.train()
    try:
        for _ in range(steps):
            starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=g)
            ix = starts[:, None] + torch.arange(seq_len)
            x, y = data[ix].to(device), data[ix + 1].to(device)
            if finetune_model:
                loss, _ = exit_loss(model, heads, x, y)
            else:
                hs = _hidden_states(model, x)  # L × (B, T, C)
                with torch.no_grad():
                    full = F.log_softmax(model.lm_head(model.ln_f(hs[-1])).float(), -1)
                loss = 0.0
                for i in range(L - 1):
                    lg = heads.logits(model, i, hs[i]).float()
                    ce = F.cross_entropy(lg.flatten(0, 1), y.flatten())
                    kl = F.kl_div(F.log_softmax(lg, -1), full, log_target=True, reduction="batchmean") / seq_len
                    loss = loss + w[i] * (ce + kl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train(was_training)
    return losses


@torch.no_grad()
def _hidden_states(model: GPT, x: torch.Tensor) -> list[torch.Tensor]:
    h = model.embed(x)
    rope = model.rope(0, x.shape[1])
    out = []
    for blk in model.blocks:
        h, _ = blk(h, rope)
        out.append(h)
    return out


def _candidates(L: int, cfg: EarlyExitConfig) -> list[int]:
    """0-based layers after which an exit is tested (never the last)."""
    return [i for i in range(L - 1) if i + 1 >= cfg.min_layer and (i + 1) % cfg.exit_every == 0]


def _features(model: GPT, heads: ExitHeads, i: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exit i's logits (..., V) and the classifier's input (..., C + 2): the normalised state, the
    top-1 probability and the top-1 − top-2 margin."""
    hn = _norm(heads.norms[i], h)
    lg = model.lm_head(hn)
    top2 = torch.softmax(lg.float(), -1).topk(2, -1).values
    feats = torch.cat([hn.float(), top2[..., :1], top2[..., :1] - top2[..., 1:]], -1)
    return lg, feats.to(heads.classifiers[i].weight.dtype)


def train_exit_classifiers(model: GPT, heads: ExitHeads, data: torch.Tensor, *, steps: int = 200,
                           batch_size: int = 32, seq_len: int = 128, lr: float = 1e-2,
                           generator: torch.Generator | None = None) -> list[float]:
    """CALM's learned confidence: fit each exit's classifier (model and exit norms frozen) to
    predict whether the exit's argmax equals the full model's (binary cross-entropy, summed over
    exits), the event that calibration's consistency risk counts. Returns the loss per step."""
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or len(data) <= seq_len:
        raise ValueError(f"train_exit_classifiers: data must be a 1-D token tensor longer than seq_len={seq_len}")
    _check(model, heads, "early_exit.train_exit_classifiers")
    device = next(model.parameters()).device
    g = generator or torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(heads.classifiers.parameters(), lr=lr)
    was = model.training
    model.eval()
    losses = []
    try:
        for _ in range(steps):
            ix = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=g)[:, None] + torch.arange(seq_len)
            with torch.no_grad():
                hs = _hidden_states(model, data[ix].to(device))
                final = heads.logits(model, len(hs) - 1, hs[-1]).argmax(-1)
                inputs = [_features(model, heads, i, hs[i]) for i in range(len(hs) - 1)]
            loss = 0.0
            for i, (lg, feats) in enumerate(inputs):
                label = (lg.argmax(-1) == final).to(feats.dtype)
                loss = loss + F.binary_cross_entropy_with_logits(heads.classifiers[i](feats)[..., 0], label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was)
    return losses


def _confidence(model: GPT, heads: ExitHeads, i: int, x: torch.Tensor, prev: torch.Tensor,
                measure: str) -> torch.Tensor:
    """Per-row confidence (B,) of exiting after layer i with state x (B, 1, C); prev: the layer's input."""
    if measure == "saturation":
        return F.cosine_similarity(x.float(), prev.float(), dim=-1)[:, 0]
    if measure == "classifier":
        _, feats = _features(model, heads, i, x)
        return torch.sigmoid(heads.classifiers[i](feats).float())[:, 0, 0]
    top2 = torch.softmax(heads.logits(model, i, x).float(), -1).topk(2, -1).values[:, 0]
    return top2[:, 0] - top2[:, 1]


class _KVFill:
    """State propagation for CALM in one GEMM: keys/values of layers i+1..L−1 from the exit state.

    Layer j's K/V are W_j·(norm_j(x)) + b_j; with norm_j(x) = x̂ ⊙ γ_j + β_j (x̂ the normalised x,
    one eps for all layers) that is (W_j ⊙ γ_j) x̂ + (W_j β_j + b_j): the K/V rows of all layers,
    scaled by their norm weights, stack into one (Σ_j 2·nkv·hs, C) matrix whose row blocks from
    layer i+1 on serve an exit after layer i. One normalisation, one GEMM, one rotation and two
    scatters replace (L−1−i) × five kernels."""

    def __init__(self, lm: StaticLM):
        m, cfg = lm.model, lm.cfg
        self.lm, self.kv = lm, 2 * cfg.kv_heads * cfg.head_dim
        qdim = cfg.n_head * cfg.head_dim
        ws, bs = [], []
        for blk in m.blocks:
            ln, lin = blk.ln_1, blk.attn.qkv
            W = lin.weight[qdim:]  # (2·nkv·hs, C): the K and V rows
            b = lin.bias[qdim:] if lin.bias is not None else torch.zeros_like(W[:, 0])
            gamma = ln.weight if ln.weight is not None else torch.ones_like(W[0])
            beta = getattr(ln, "bias", None)
            ws.append(W * gamma[None])
            bs.append(b + (W @ beta if beta is not None else 0))
        self.W, self.b = torch.cat(ws).detach(), torch.cat(bs).detach()
        eps = {getattr(blk.ln_1, "eps", None) for blk in m.blocks}
        self.eps = eps.pop() if len(eps) == 1 else None  # None: norms differ, fall back per layer
        self.rms = cfg.norm == "rmsnorm"

    def __call__(self, i: int, x: torch.Tensor, ctx) -> None:
        lm, cfg = self.lm, self.lm.cfg
        L = cfg.n_layer
        if i + 1 >= L:
            return
        if self.eps is None:
            for j in range(i + 1, L):
                lm.write_kv(j, x, ctx)
            return
        B, T, C = x.shape
        xh = F.rms_norm(x, (C,), None, self.eps) if self.rms else F.layer_norm(x, (C,), None, None, self.eps)
        n = L - 1 - i
        kv = F.linear(xh, self.W[(i + 1) * self.kv :], self.b[(i + 1) * self.kv :])  # (B, T, n·2·nkv·hs)
        kv = kv.view(B, T, n, 2, cfg.kv_heads, cfg.head_dim)
        k, v = kv[:, :, :, 0], kv[:, :, :, 1]  # (B, T, n, nkv, hs)
        if ctx.rope is not None:
            k = _rotate(k, ctx.rope[:, :, None]).type_as(x)
        idx = ctx.positions[None, :, None, :, None].expand(n, B, cfg.kv_heads, T, cfg.head_dim)
        lm.k[i + 1 :].scatter_(3, idx, k.permute(2, 0, 3, 1, 4))
        lm.v[i + 1 :].scatter_(3, idx, v.permute(2, 0, 3, 1, 4))


class _Runner:
    """Static buffers and the graphed pieces of one early-exit decode step (B = 1 for per-sequence
    exits): one graph per segment of layers between tested layers (the first also embeds the
    token, the last also emits the full-depth token), one host sync per tested layer, one graph per
    exit point (fused K/V fill + argmax)."""

    @torch.no_grad()
    def __init__(self, model: GPT, heads: ExitHeads, B: int, S: int, cfg: EarlyExitConfig):
        dev = next(model.parameters()).device
        self.model, self.heads, self.cfg = model, heads, cfg
        L = model.cfg.n_layer
        self.candidates = _candidates(L, cfg)
        ends = self.candidates + [L - 1]
        self.segments = list(zip([0] + [e + 1 for e in ends[:-1]], ends))  # inclusive (first, last) layers
        self.lm = StaticLM(model, B, S)
        self.fill = _KVFill(self.lm)
        self.seq = torch.zeros(B, S + 1, dtype=torch.long, device=dev)
        self.n = torch.full((B,), 2, dtype=torch.long, device=dev)
        self.x = torch.zeros(B, 1, model.cfg.n_embd, device=dev, dtype=self.lm.k.dtype)
        self.conf = torch.zeros((), device=dev)
        self.ctx = self.lm.context(1, self.n - 1)  # static tensors, refreshed by the first segment
        graphs = use_graphs(dev, cfg.cuda_graphs)
        pool = torch.cuda.graph_pool_handle() if graphs else None
        # the last segment ends the token at full depth: its exit is in the same graph (one launch less)
        self.segment = [Graphed(lambda a=a, b=b: self._segment(a, b), graphs, pool) for a, b in self.segments[:-1]]
        self.exit = {}
        for i in self.candidates:  # capture runs _exit (n += 1) a few times: keep positions in range
            self.n.fill_(2)
            self.exit[i] = Graphed(lambda i=i: self._exit(i), graphs, pool)
        a, b = self.segments[-1]
        self.n.fill_(2)
        self.segment.append(Graphed(lambda: (self._segment(a, b), self._exit(b)), graphs, pool))

    def _embed(self):
        c = self.lm.context(1, self.n - 1)
        self.ctx.positions.copy_(c.positions)
        self.ctx.mask.copy_(c.mask)
        if c.rope is not None:
            self.ctx.rope.copy_(c.rope)
        self.x.copy_(self.lm.embed(self.seq.gather(1, (self.n - 1)[:, None]), self.ctx))

    def _segment(self, a: int, b: int):
        if a == 0:
            self._embed()
        x = self.x
        for i in range(a, b + 1):
            prev, x = x, self.lm.block(i, x, self.ctx)
        self.x.copy_(x)
        if b == self.model.cfg.n_layer - 1:
            return
        self.conf.copy_(_confidence(self.model, self.heads, b, x, prev, self.cfg.measure).min())  # batch exits together

    def _exit(self, i: int):
        self.fill(i, self.x, self.ctx)  # skipped layers' K/V from the exit state
        nxt = self.heads.logits(self.model, i, self.x)[:, 0].argmax(-1)
        self.seq.scatter_(1, self.n[:, None], nxt[:, None])
        self.n.add_(1)


def _threshold(cfg: EarlyExitConfig, t: int) -> float:
    if cfg.threshold >= 1.0:  # 1 means "never exit early", also after the decay
        return 1.0
    return min(1.0, max(0.0, 0.9 * cfg.threshold + 0.1 * math.exp(-cfg.tau * t / cfg.max_new_tokens)))


def _check(model, heads, where: str) -> None:
    if not isinstance(model, GPT):
        raise TypeError(f"{where}: model must be a paretoml GPT, got {type(model).__name__}")
    if not isinstance(heads, ExitHeads) or len(heads.norms) != model.cfg.n_layer - 1:
        raise ValueError(f"{where}: heads must be the ExitHeads built for this model "
                         f"({model.cfg.n_layer - 1} norms)")


@torch.no_grad()
def _decode(r: _Runner, padded: torch.Tensor, lengths: torch.Tensor, cfg: EarlyExitConfig,
            forced: torch.Tensor | None = None) -> EarlyExitResult:
    """One decode on a runner whose graphs are captured already (the threshold lives on the host;
    the batch exits together).

    With `forced` (B, max_new_tokens) the model is fed those tokens instead of its own
    (teacher forcing on the full model's output): the returned tokens are then the per-step
    predictions, and their agreement with `forced` is the per-token consistency.
    """
    B, L = padded.shape
    device = padded.device
    r.seq.zero_()
    r.seq[:B, :L] = padded
    r.n.copy_(lengths)
    r.lm.forward(padded, torch.zeros(B, dtype=torch.long, device=device))  # prefill at full depth
    last = r.segments[-1][1]
    used, preds = [], []
    for t in range(cfg.max_new_tokens):
        lam = _threshold(cfg, t)
        exit_at = last
        for k, (a, b) in enumerate(r.segments):
            r.segment[k]()  # the last one also emits the full-depth token
            if b != last and lam < 1.0 and float(r.conf) >= lam:  # host sync per tested layer
                exit_at = b
                r.exit[b]()
                break
        used.append(exit_at + 1)
        if forced is not None:
            pos = (r.n - 1)[:, None]
            preds.append(r.seq.gather(1, pos)[:, 0])
            r.seq.scatter_(1, pos, forced[:, t : t + 1])
    layers = torch.tensor(used, dtype=torch.float32)[None].expand(B, -1)
    if forced is not None:
        return EarlyExitResult(torch.stack(preds, 1), layers, float(layers.mean()))
    idx = lengths[:, None] + torch.arange(cfg.max_new_tokens, device=device)
    return EarlyExitResult(r.seq.gather(1, idx), layers, float(layers.mean()))


@torch.no_grad()
def _decode_rows(model: GPT, heads: ExitHeads, padded: torch.Tensor, lengths: torch.Tensor,
                 cfg: EarlyExitConfig, forced: torch.Tensor | None = None) -> EarlyExitResult:
    """Per-row exits for a whole batch, without host syncs: every layer runs for every row, but
    a row that has exited keeps its exit state, which feeds the later layers' K/V writes (exactly
    CALM's state propagation) while their outputs are discarded. The same tokens and exit layers
    as decoding each row alone with `_decode` (a test checks it); the cost is full depth, so this
    serves calibration and batched per-sequence exits, not speed. `forced` as in `_decode`."""
    B, P = padded.shape
    device = padded.device
    L, N = model.cfg.n_layer, cfg.max_new_tokens
    lm = StaticLM(model, B, P + N)
    seq = torch.zeros(B, P + N + 1, dtype=torch.long, device=device)
    seq[:, :P] = padded
    n = lengths.clone()
    lm.forward(padded, torch.zeros(B, dtype=torch.long, device=device))
    cands = set(_candidates(L, cfg))
    preds, used = [], []
    rows = torch.arange(B, device=device)
    for t in range(N):
        lam = _threshold(cfg, t)
        ctx = lm.context(1, n - 1)
        x = lm.embed(seq[rows, n - 1][:, None], ctx)
        exited = torch.zeros(B, dtype=torch.bool, device=device)
        h_exit = torch.zeros_like(x)
        pred = torch.zeros(B, dtype=torch.long, device=device)
        layers = torch.full((B,), L, dtype=torch.long, device=device)
        for i in range(L):
            x_in = torch.where(exited[:, None, None], h_exit, x)
            x = lm.block(i, x_in, ctx)
            if i in cands and lam < 1.0:
                conf = _confidence(model, heads, i, x, x_in, cfg.measure)
                new = ~exited & (conf >= lam)
                pred = torch.where(new, heads.logits(model, i, x)[:, 0].argmax(-1), pred)
                layers = torch.where(new, i + 1, layers)
                h_exit = torch.where(new[:, None, None], x, h_exit)
                exited = exited | new
        pred = torch.where(exited, pred, lm.logits(x)[:, 0].argmax(-1))
        preds.append(pred)
        used.append(layers)
        seq[rows, n] = forced[:, t] if forced is not None else pred
        n = n + 1
    layers = torch.stack(used, 1).float()
    return EarlyExitResult(torch.stack(preds, 1), layers, float(layers.mean()))


@torch.no_grad()
def generate(model: GPT, heads: ExitHeads, prompts, config: EarlyExitConfig = EarlyExitConfig()) -> EarlyExitResult:
    """Greedy decoding with per-token, per-sequence early exit. One prompt runs the fast path
    (graphed segments, the skipped layers really skipped); several run every layer with per-row
    exit masks (the same tokens as one at a time, no speed-up). Returns tokens and the layers
    used per token."""
    _check(model, heads, "early_exit.generate")
    device = next(model.parameters()).device
    padded, lengths = pack_prompts(prompts, model.cfg.vocab_size, "early_exit.generate", device)
    S = check_context("early_exit.generate", model, padded.shape[1], config.max_new_tokens, "max_new_tokens")
    if padded.shape[0] > 1:
        return _decode_rows(model, heads, padded, lengths, config)
    return _decode(_Runner(model, heads, 1, S, config), padded, lengths, config)


@dataclass(frozen=True)
class CalibrationResult:
    """threshold: the smallest λ certified (1.0 if none); risks / p_values per λ tried, in
    the order tested (descending λ); mean_layers per λ."""

    threshold: float
    thresholds: list[float]
    risks: list[float]
    p_values: list[float]
    mean_layers: list[float]


def hb_p_value(risk: float, n: int, epsilon: float) -> float:
    """Hoeffding–Bentkus p-value of H₀: mean risk > ε given the empirical mean `risk` of n
    i.i.d. losses in [0, 1] (Bates et al.'s RCPS / Learn-then-Test):
    min(exp(−n·h(min(R̂, ε), ε)), e·P(Binomial(n, ε) ≤ ⌈n·R̂⌉)), h(a, b) = a·ln(a/b) + (1−a)·ln((1−a)/(1−b))."""
    from scipy.stats import binom

    a = min(risk, epsilon)
    h = (a * math.log(a / epsilon) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - epsilon))
    return float(min(math.exp(-n * h), math.e * binom.cdf(math.ceil(n * risk - 1e-9), n, epsilon), 1.0))


@torch.no_grad()
def calibrate(model: GPT, heads: ExitHeads, prompts, config: EarlyExitConfig = EarlyExitConfig(), *,
              epsilon: float = 0.05, delta: float = 0.1, thresholds=None,
              batch_size: int = 256) -> CalibrationResult:
    """Learn-then-Test: the smallest threshold with mean disagreement ≤ ε w.p. ≥ 1 − δ.

    Risk of a prompt = fraction of its `max_new_tokens` steps where the early-exit prediction
    differs from the full model's greedy token, both fed the full model's output so far
    (per-token consistency; free-running outputs diverge wholesale after one difference). For λ
    from high to low (fixed-sequence testing, no multiplicity correction needed)
    the Hoeffding–Bentkus p-value of H₀: R(λ) > ε (`hb_p_value`) is compared with δ; testing stops
    at the first λ not rejected. Prompts run `batch_size` at a time with per-row exits (`_decode_rows`).
    """
    _check(model, heads, "early_exit.calibrate")
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"calibrate: epsilon must be in (0, 1), got {epsilon!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"calibrate: delta must be in (0, 1), got {delta!r}")
    lams = sorted(thresholds if thresholds is not None else [0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
                  reverse=True)
    if not lams or any(not 0.0 <= x <= 1.0 for x in lams):
        raise ValueError(f"calibrate: thresholds must be a non-empty list in [0, 1], got {thresholds!r}")
    device = next(model.parameters()).device
    padded, lengths = pack_prompts(prompts, model.cfg.vocab_size, "early_exit.calibrate", device)
    rows = [padded[i, : lengths[i]] for i in range(len(padded))]
    n = len(rows)
    check_context("early_exit.calibrate", model, padded.shape[1], config.max_new_tokens, "max_new_tokens")
    full = full_generate(model, rows, DecodeConfig(max_new_tokens=config.max_new_tokens, cuda_graphs=config.cuda_graphs))
    best, risks, pvals, layers = None, [], [], []
    for lam in lams:
        cfg = replace(config, threshold=lam)
        errs, lay = [], []
        for j in range(0, n, batch_size):  # per-row exits, teacher-forced on the full model's output
            sl = slice(j, j + batch_size)
            o = _decode_rows(model, heads, padded[sl], lengths[sl], cfg, forced=full[sl])
            errs.append((o.tokens != full[sl]).float().mean(1))
            lay.append(o.layers_used.mean(1))
        risk = torch.cat(errs).mean().item()
        layers.append(torch.cat(lay).mean().item())
        p = hb_p_value(risk, n, epsilon)
        risks.append(risk)
        pvals.append(p)
        if p > delta:
            break
        best = lam
    if best is None:
        best = 1.0
        warnings.warn(f"early_exit.calibrate: no threshold certified at ε={epsilon}, δ={delta} with {n} prompts; "
                      "returning 1.0 (never exit early). Use more calibration prompts or a larger ε.", stacklevel=2)
    return CalibrationResult(best, lams[: len(risks)], risks, pvals, layers)
