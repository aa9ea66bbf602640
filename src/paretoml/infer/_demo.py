"""`paretoml demo` variants for the inference-efficiency techniques on the digits classifier:
a confidence cascade (small MLP → best MLP) and an early-exit MLP (exit heads after every
hidden layer, threshold calibrated on the validation split)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paretoml.infer.cascade import Cascade


def _logits_fn(model: nn.Module):
    model.eval()

    def f(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return f


def build_cascade(ctx) -> list:
    """Smallest size-sweep MLP answers; defers to the best one when its max probability is
    under a threshold calibrated on the validation split to reach the large model's accuracy."""
    from paretoml.demo import Variant
    from paretoml.frontier import param_count, serialized_bytes

    if len(ctx.teachers) < 2:
        return []
    h_small = min(ctx.teachers)
    h_large, large = ctx.best_teacher()
    if h_small == h_large:
        return []
    small = ctx.teachers[h_small][0]
    cas = Cascade(_logits_fn(small), _logits_fn(large), rule="max_prob")
    xv, yv = torch.from_numpy(ctx.x_val), torch.from_numpy(ctx.y_val).long()
    acc_large = float((large(xv).argmax(-1) == yv).float().mean())
    cas.calibrate(xv, yv, target_accuracy=acc_large)

    def predict(x: np.ndarray) -> np.ndarray:
        return cas.predict(torch.from_numpy(x)).predictions.numpy()

    cfg = {"technique": "confidence cascade", "small_hidden": h_small, "large_hidden": h_large, "rule": "max_prob",
           "threshold": cas.threshold,
           "val_deferral": float(cas.predict(xv).deferral_rate)}
    return [Variant(f"cascade-h{h_small}->h{h_large}", predict, cfg, param_count(small) + param_count(large),
                    serialized_bytes(small) + serialized_bytes(large))]


class _ExitMLP(nn.Module):
    """Hidden layers with a linear exit head after each; forward returns every head's logits."""

    def __init__(self, d_in: int, hidden: int, n_classes: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d_in if i == 0 else hidden, hidden) for i in range(depth))
        self.heads = nn.ModuleList(nn.Linear(hidden, n_classes) for _ in range(depth))
        self.threshold = 1.0

    def forward(self, x):  # (B, d_in) -> list of depth × (B, C)
        out = []
        for layer, head in zip(self.layers, self.heads):
            x = F.relu(layer(x))
            out.append(head(x))
        return out

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example exit at the first head whose max probability >= threshold; only the
        rows still running go through the next layer. Returns (classes, layers used)."""
        lam = self.threshold if threshold is None else threshold
        pred = torch.empty(len(x), dtype=torch.long)
        used = torch.full((len(x),), len(self.layers))
        rows = torch.arange(len(x))
        for i, (layer, head) in enumerate(zip(self.layers, self.heads)):
            x = F.relu(layer(x))
            p = torch.softmax(head(x), -1)
            conf, cls = p.max(-1)
            done = conf >= lam if i < len(self.layers) - 1 else torch.ones_like(conf, dtype=torch.bool)
            pred[rows[done]] = cls[done]
            used[rows[done]] = i + 1
            x, rows = x[~done], rows[~done]
            if len(rows) == 0:
                break
        return pred, used


def build_early_exit(ctx) -> list:
    """A 3-hidden-layer MLP with exit heads, trained jointly; the exit threshold is the lowest
    whose predictions agree with full depth on >= 99% of the validation split."""
    from paretoml.demo import Variant
    from paretoml.frontier import param_count, serialized_bytes

    cfg, width, depth = ctx.cfg, 64, 3
    torch.manual_seed(cfg.seed + 2)
    model = _ExitMLP(ctx.x_train.shape[1], width, 10, depth)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    x, y = torch.from_numpy(ctx.x_train), torch.from_numpy(ctx.y_train).long()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = sum(F.cross_entropy(lg, y[idx]) for lg in model(x[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    xv = torch.from_numpy(ctx.x_val)
    full, _ = model.predict(xv, threshold=1.01)  # never exits early
    model.threshold = 1.0
    for lam in (0.999, 0.99, 0.98, 0.95, 0.9, 0.8, 0.7):
        pred, _ = model.predict(xv, threshold=lam)
        if float((pred == full).float().mean()) < 0.99:
            break
        model.threshold = lam
    _, used = model.predict(xv)

    def predict(xn: np.ndarray) -> np.ndarray:
        return model.predict(torch.from_numpy(xn))[0].numpy()

    conf = {"technique": "early exit", "hidden": width, "depth": depth, "threshold": model.threshold,
            "val_mean_layers": float(used.float().mean())}
    return [Variant(f"early-exit-h{width}x{depth}", predict, conf, param_count(model), serialized_bytes(model),
                    module=model)]
