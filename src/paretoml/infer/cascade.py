"""Confidence cascades: a small model answers when confident, otherwise defers to a large one.

Post-hoc deferral rules, no retraining (Gupta et al., ICLR 2024, "Language model cascades:
token-level uncertainty and beyond"). Per position the small model's confidence is the max
probability ("max_prob"), the top-1 − top-2 margin ("margin") or the negative entropy
("entropy"); for sequence outputs the per-token log-probabilities are reduced by a quantile
("quantile", Chow-Quantile; q = 0 is the least confident token) — the mean (Chow-Sum/Average)
is length-biased. `calibrate` picks the smallest deferral that reaches a target quality on
held-out data.

Chow's rule (defer the least confident first) is not optimal when the large model is also
unsure there: deferring helps where the large model is right *and* the small one wrong. The
"learned" rule (a post-hoc estimator of that gain, Narasimhan et al. 2022; Gupta et al. 2024)
fits E[1(large right) − 1(small right) | small model's probabilities] on held-out data by
least squares over simple features (sorted top-5 probabilities, entropy, their squares) and
defers where the estimated gain is largest (`fit_rule`, then `calibrate`).

    >>> cas = Cascade(small, large, rule="max_prob")
    >>> cas.calibrate(x_val, y_val, target_accuracy=acc_large_val)   # sets cas.threshold
    >>> out = cas.predict(x_test)       # out.predictions, out.deferred (runs `large` on deferred rows only)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Cascade", "CascadeOutput", "confidence", "gain_features", "deferral_threshold"]

_RULES = ("max_prob", "margin", "entropy", "quantile", "mean", "learned")


def confidence(logits: torch.Tensor, rule: str = "max_prob", quantile: float = 0.0,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Confidence per example: logits (N, K) or per-token (N, T, K) → (N,). Higher = surer.

    Per-token scores are reduced over T: by their `quantile` for "quantile" (of the top-token
    log-probability; Chow-Quantile), by the mean for "mean" (Chow-Average, length-biased) and by
    the minimum for the other rules. `lengths` (N,) ints in [1, T]: only each example's first
    `lengths[i]` positions count (outputs of different lengths padded to T).
    """
    if rule not in _RULES:
        raise ValueError(f"confidence: rule must be one of {_RULES}, got {rule!r}")
    if rule == "learned":
        raise ValueError("confidence: the 'learned' rule needs fitted weights; use Cascade(..., rule='learned') "
                         "and Cascade.fit_rule")
    if logits.dim() not in (2, 3):
        raise ValueError(f"confidence: logits must have shape (N, K) or (N, T, K), got {tuple(logits.shape)}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"confidence: quantile must be in [0, 1], got {quantile!r}")
    lp = torch.log_softmax(logits.float(), -1)
    if logits.dim() == 2:
        lp = lp[:, None]
    n, t = lp.shape[:2]
    if lengths is None:
        lengths = torch.full((n,), t, dtype=torch.long, device=lp.device)
    lengths = torch.as_tensor(lengths, device=lp.device).long()
    if lengths.shape != (n,) or bool(((lengths < 1) | (lengths > t)).any()):
        raise ValueError(f"confidence: lengths must be ({n},) ints in [1, {t}], got {tuple(lengths.shape)} "
                         f"with values {lengths.min().item() if lengths.numel() else None}.."
                         f"{lengths.max().item() if lengths.numel() else None}")
    valid = torch.arange(t, device=lp.device)[None, :] < lengths[:, None]  # (N, T)
    if rule in ("quantile", "mean"):
        top = lp.max(-1).values
        if rule == "mean":
            return (top * valid).sum(-1) / lengths
        # per-row quantile over the valid positions (linear interpolation, as torch.quantile)
        srt = top.masked_fill(~valid, float("inf")).sort(-1).values
        pos = quantile * (lengths - 1).to(top.dtype)
        lo = pos.floor().long()
        hi = pos.ceil().long()
        a, b = srt.gather(1, lo[:, None])[:, 0], srt.gather(1, hi[:, None])[:, 0]
        return a + (pos - lo.to(top.dtype)) * (b - a)
    p = lp.exp()
    if rule == "max_prob":
        s = p.max(-1).values
    elif rule == "margin":
        top = p.topk(2, -1).values
        s = top[..., 0] - top[..., 1]
    else:
        s = (p * lp).sum(-1)  # −entropy
    return s.masked_fill(~valid, float("inf")).min(-1).values


def deferral_threshold(conf: torch.Tensor, ok_small: torch.Tensor, ok_large: torch.Tensor,
                       target_accuracy: float) -> tuple[float, list[tuple[float, float]]]:
    """Smallest deferral, least confident first, whose accuracy reaches `target_accuracy`.

    conf (N,) the small model's confidence; ok_small / ok_large (N,) bool: each model right.
    Returns (threshold: defer where conf < threshold — the midpoint between the last deferred
    and the first kept confidence, inf if even full deferral misses the target —, curve: the
    (deferral rate, accuracy) of every k = 0..N)."""
    n = len(conf)
    if not (len(ok_small) == len(ok_large) == n) or n == 0:
        raise ValueError(f"deferral_threshold: need equal, non-empty conf / ok_small / ok_large, "
                         f"got {n}, {len(ok_small)}, {len(ok_large)}")
    if not 0.0 <= target_accuracy <= 1.0:
        raise ValueError(f"deferral_threshold: target_accuracy must be in [0, 1], got {target_accuracy!r}")
    order = conf.argsort()  # least confident first
    ok_s = ok_small.to(conf.device)[order].float()
    ok_l = ok_large.to(conf.device)[order].float()
    # accuracy when deferring the k least confident: Σ_{<k} ok_l + Σ_{>=k} ok_s
    acc = (torch.cat([ok_l.new_zeros(1), ok_l.cumsum(0)])
           + torch.cat([ok_s.flip(0).cumsum(0).flip(0), ok_s.new_zeros(1)])) / n  # (n+1,)
    curve = [(k / n, float(acc[k])) for k in range(n + 1)]
    hit = (acc >= target_accuracy - 1e-12).nonzero()
    k = int(hit[0]) if len(hit) else n
    c = conf[order]
    if k == 0:
        thr = float(c[0]) - 1e-6
    elif k == n:
        thr = float("inf")
    else:
        thr = float((c[k - 1] + c[k]) / 2) if c[k] > c[k - 1] else float(c[k]) + 1e-9
    return thr, curve


def gain_features(logits: torch.Tensor) -> torch.Tensor:
    """Features of the small model's logits (N, K) for the learned rule: sorted top-5
    probabilities, entropy, and their squares, plus a constant → (N, 13) float64."""
    if logits.dim() != 2:
        raise ValueError(f"gain_features: the learned rule takes logits (N, K), got {tuple(logits.shape)}")
    lp = torch.log_softmax(logits.double(), -1)
    p = lp.exp()
    k = min(5, p.shape[-1])
    top = torch.nn.functional.pad(p.topk(k, -1).values, (0, 5 - k))
    f = torch.cat([top, -(p * lp).sum(-1, keepdim=True)], -1)
    return torch.cat([torch.ones_like(f[:, :1]), f, f * f], -1)


@dataclass(frozen=True)
class CascadeOutput:
    """predictions (N,) class ids; deferred (N,) bool; confidence (N,) of the small model."""

    predictions: torch.Tensor
    deferred: torch.Tensor
    confidence: torch.Tensor

    @property
    def deferral_rate(self) -> float:
        return float(self.deferred.float().mean())


class Cascade:
    """small → large deferral cascade over callables that map a batch to logits (N, K).

    Args:
        small: the cheap model (any callable, e.g. an `nn.Module` in eval mode).
        large: the expensive model; called only on the deferred rows.
        rule: "max_prob" | "margin" | "entropy" | "quantile" | "learned" (call `fit_rule` first).
        threshold: defer when the small model's confidence < threshold (None: calibrate first).
        quantile: for rule "quantile".
    """

    def __init__(self, small: Callable, large: Callable, rule: str = "max_prob",
                 threshold: float | None = None, *, quantile: float = 0.0):
        if not callable(small) or not callable(large):
            raise TypeError("Cascade: small and large must be callables mapping inputs to logits")
        if rule not in _RULES:
            raise ValueError(f"Cascade: rule must be one of {_RULES}, got {rule!r}")
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"Cascade: quantile must be in [0, 1], got {quantile!r}")
        self.small, self.large, self.rule, self.quantile = small, large, rule, quantile
        self.threshold = threshold
        self.weights_: torch.Tensor | None = None  # the learned rule's gain regression, set by fit_rule
        self.curve_: list[tuple[float, float]] | None = None  # (deferral rate, accuracy), set by calibrate

    def _confidence(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rule != "learned":
            return confidence(logits, self.rule, self.quantile)
        if self.weights_ is None:
            raise ValueError("Cascade: the 'learned' rule is not fitted; call fit_rule(x, y) on held-out data first")
        return -(gain_features(logits) @ self.weights_).float()  # high estimated gain = low confidence

    @torch.no_grad()
    def fit_rule(self, x, y: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
        """Fit the learned rule on held-out (x, y): ridge least squares of the deferral gain
        1(large right) − 1(small right) on `gain_features` of the small model's logits.
        Returns the weights (also kept as `weights_`)."""
        if self.rule != "learned":
            raise ValueError(f"Cascade.fit_rule: only the 'learned' rule is fitted, this cascade uses {self.rule!r}")
        y = torch.as_tensor(y)
        ls, ll = self.small(x), self.large(x)
        if len(y) != len(ls) or len(y) == 0:
            raise ValueError(f"Cascade.fit_rule: got {len(y)} labels for {len(ls)} examples (need equal, >= 1)")
        f = gain_features(ls)
        gain = ((ll.argmax(-1) == y).double() - (ls.argmax(-1) == y).double()).to(f.device)
        a = f.T @ f + ridge * len(f) * torch.eye(f.shape[1], dtype=f.dtype, device=f.device)
        self.weights_ = torch.linalg.solve(a, f.T @ gain)
        return self.weights_

    @torch.no_grad()
    def predict(self, x) -> CascadeOutput:
        """Small model on every row; large model only where confidence < threshold."""
        if self.threshold is None:
            raise ValueError("Cascade.predict: no threshold; pass one to Cascade(...) or call calibrate() first")
        ls = self.small(x)
        conf = self._confidence(ls)
        pred = ls.argmax(-1)
        defer = conf < self.threshold
        if bool(defer.any()):
            idx = defer.nonzero()[:, 0]
            pred = pred.clone()
            pred[idx] = self.large(x[idx]).argmax(-1)
        return CascadeOutput(pred, defer, conf)

    @torch.no_grad()
    def calibrate(self, x, y: torch.Tensor, target_accuracy: float) -> float:
        """Smallest deferral whose cascade accuracy on (x, y) reaches `target_accuracy`.

        Defers the least confident rows first; sets and returns `threshold` (the midpoint
        between the last deferred and the first kept confidence) and stores the whole
        deferral curve in `curve_`. If even full deferral misses the target, defers all.
        """
        if not 0.0 <= target_accuracy <= 1.0:
            raise ValueError(f"Cascade.calibrate: target_accuracy must be in [0, 1], got {target_accuracy!r}")
        y = torch.as_tensor(y)
        ls, ll = self.small(x), self.large(x)
        if len(y) != len(ls) or len(y) == 0:
            raise ValueError(f"Cascade.calibrate: got {len(y)} labels for {len(ls)} examples (need equal, >= 1)")
        y = y.to(ls.device)
        self.threshold, self.curve_ = deferral_threshold(self._confidence(ls), ls.argmax(-1) == y,
                                                         ll.argmax(-1).to(ls.device) == y, target_accuracy)
        return self.threshold
