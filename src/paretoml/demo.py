"""`paretoml demo`: the whole job on an embedded dataset, in about a minute on 2 cores.

Data: scikit-learn's 8×8 handwritten digits (1,797 real images, shipped with scikit-learn),
a seeded stratified train/test split. Variants come from a list of builders, each a function
``(ctx) -> list[Variant]`` that may use what earlier builders produced (the distilled
student needs the best teacher). Every variant is measured the same way — test accuracy,
single-example latency, batch throughput, parameters and serialized bytes — and the Pareto
front of latency vs accuracy is printed and written to ``report/``.

To add a technique to the demo, write a builder and append it to `BUILDERS`.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paretoml._validate import check_ints
from paretoml.arch import moe as _moe
from paretoml.frontier import Point, latency, param_count, serialized_bytes
from paretoml.infer import _demo as _decoding_demo
from paretoml.infer import quantize as _quantize
from paretoml.models import MLP

__all__ = ["DemoConfig", "Variant", "DemoContext", "BUILDERS", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo; `quick()` gives a seconds-long version for tests."""

    hidden_sizes: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    test_fraction: float = 0.25
    student_hidden: int = 16
    kd_temperature: float = 4.0
    kd_alpha: float = 0.7
    latency_repeats: int = 200
    throughput_repeats: int = 20
    threads: int = 1  # every variant and the peer are measured with the same thread count

    def __post_init__(self):
        if not self.hidden_sizes or any(not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise ValueError(f"DemoConfig.hidden_sizes must be a non-empty tuple of ints >= 1, got {self.hidden_sizes!r}")
        check_ints(self, ("epochs", "batch_size", "student_hidden", "latency_repeats", "throughput_repeats", "threads"))
        if not 0.05 <= self.test_fraction <= 0.5:
            raise ValueError(f"DemoConfig.test_fraction must be in [0.05, 0.5], got {self.test_fraction!r}")
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise ValueError(f"DemoConfig.kd_alpha must be in [0, 1], got {self.kd_alpha!r}")
        if self.kd_temperature <= 0:
            raise ValueError(f"DemoConfig.kd_temperature must be > 0, got {self.kd_temperature!r}")
        if self.lr <= 0:
            raise ValueError(f"DemoConfig.lr must be > 0, got {self.lr!r}")

    def quick(self) -> "DemoConfig":
        return replace(self, hidden_sizes=(16, 64), epochs=8, latency_repeats=20, throughput_repeats=3)


@dataclass
class Variant:
    """A model to measure: `predict` maps a float32 (B, 64) array to (B,) class ids."""

    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    config: dict[str, Any]
    params: int
    nbytes: int
    peer: bool = False
    module: nn.Module | None = None


@dataclass
class DemoContext:
    """Data and what earlier builders produced (later builders may read it)."""

    cfg: DemoConfig
    x_train: np.ndarray  # (N, 64) float32, standardised; models train on this
    y_train: np.ndarray
    x_test: np.ndarray  # held out: reported accuracy only
    y_test: np.ndarray
    x_val: np.ndarray  # carved from the train split: model selection (best teacher) only
    y_val: np.ndarray
    teachers: dict[int, tuple[nn.Module, float]] = field(default_factory=dict)  # hidden -> (model, val acc)

    def best_teacher(self) -> tuple[int, nn.Module]:
        h = max(self.teachers, key=lambda k: (self.teachers[k][1], -k))
        return h, self.teachers[h][0]


def load_digits_split(cfg: DemoConfig):
    """Standardised digits, stratified split; the scaler is fitted on the train part only."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32), y, test_size=cfg.test_fraction, random_state=cfg.seed, stratify=y
    )
    # Pixels that are constant in train (always 0 at the border) keep scale 1: dividing by a
    # ~0 std would blow a rare non-zero test pixel up to ~1e6.
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std < 1e-3, 1.0, std).astype(np.float32)
    return (x_tr - mean) / std, y_tr, (x_te - mean) / std, y_te


def _torch_predict(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).argmax(-1).numpy()

    return predict


def _train(model: nn.Module, ctx: DemoContext, teacher: nn.Module | None = None, seed: int = 0) -> nn.Module:
    """Minibatch Adam on cross-entropy; with a teacher, Hinton distillation:
    loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE(s, y)."""
    cfg = ctx.cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(ctx.x_train)
    y = torch.from_numpy(ctx.y_train).long()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    soft = None
    if teacher is not None:
        teacher.eval()
        with torch.no_grad():
            soft = F.log_softmax(teacher(x) / cfg.kd_temperature, -1)  # (N, C)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            if soft is not None:
                t = cfg.kd_temperature
                kd = F.kl_div(F.log_softmax(logits / t, -1), soft[idx], log_target=True, reduction="batchmean")
                loss = cfg.kd_alpha * t * t * kd + (1 - cfg.kd_alpha) * loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def _accuracy(predict, x, y) -> float:
    return float((predict(x) == y).mean())


def _torch_variant(name: str, model: nn.Module, config: dict, peer: bool = False) -> Variant:
    return Variant(name, _torch_predict(model), config, param_count(model), serialized_bytes(model), peer, model)


# --- builders: each returns the variants it adds -----------------------------------------


def build_size_sweep(ctx: DemoContext) -> list[Variant]:
    """Architecture size sweep: one hidden layer of each width in `hidden_sizes`."""
    out = []
    for h in ctx.cfg.hidden_sizes:
        torch.manual_seed(ctx.cfg.seed)
        model = _train(MLP(64, h, 10), ctx, seed=ctx.cfg.seed)
        pred = _torch_predict(model)
        val_acc = _accuracy(pred, ctx.x_val, ctx.y_val)
        ctx.teachers[h] = (model, val_acc)
        out.append(_torch_variant(f"mlp-h{h}", model, {"technique": "size sweep", "hidden": h}))
    return out


def build_int8_dynamic(ctx: DemoContext) -> list[Variant]:
    """Post-training dynamic int8 quantization (torch.ao) of the best teacher's Linear layers."""
    h, teacher = ctx.best_teacher()
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # removed from some torch builds: skip rather than fail the demo
        return []
    with warnings.catch_warnings():  # torch.ao's own deprecation notice, not the user's problem
        warnings.simplefilter("ignore")
        q = quantize_dynamic(copy.deepcopy(teacher), {nn.Linear}, dtype=torch.qint8)
    return [_torch_variant(f"mlp-h{h}-int8", q, {"technique": "int8 dynamic quantization", "hidden": h})]


def build_distilled_student(ctx: DemoContext) -> list[Variant]:
    """Hinton knowledge distillation of a small student from the best teacher."""
    h, teacher = ctx.best_teacher()
    s = ctx.cfg.student_hidden
    torch.manual_seed(ctx.cfg.seed + 1)
    student = _train(MLP(64, s, 10), ctx, teacher=teacher, seed=ctx.cfg.seed + 1)
    cfg = {"technique": "knowledge distillation", "hidden": s, "teacher_hidden": h,
           "temperature": ctx.cfg.kd_temperature, "alpha": ctx.cfg.kd_alpha}
    return [_torch_variant(f"kd-h{s}<-h{h}", student, cfg)]


def build_sklearn_peer(ctx: DemoContext) -> list[Variant]:
    """Public peer: scikit-learn's multinomial logistic regression on the same features."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, C=1.0).fit(ctx.x_train, ctx.y_train)
    buf = io.BytesIO()
    np.savez(buf, coef=clf.coef_, intercept=clf.intercept_)
    params = clf.coef_.size + clf.intercept_.size
    return [Variant("sklearn-logreg", clf.predict, {"technique": "peer", "C": 1.0}, params,
                    buf.getbuffer().nbytes, peer=True)]


BUILDERS: list[Callable[[DemoContext], list[Variant]]] = [
    build_size_sweep,
    build_int8_dynamic,
    build_distilled_student,
    build_sklearn_peer,
    _quantize.build_demo_variants,
    _moe.build_demo_variants,
    _decoding_demo.build_cascade, _decoding_demo.build_early_exit,
]


def measure_variant(v: Variant, ctx: DemoContext) -> Point:
    """Accuracy on the test split, single-example latency, batch throughput, params, bytes."""
    cfg = ctx.cfg
    one = ctx.x_test[:1]
    lat = latency(lambda: v.predict(one), warmup=5, repeats=cfg.latency_repeats)
    batch = latency(lambda: v.predict(ctx.x_test), warmup=2, repeats=cfg.throughput_repeats)
    return Point(
        name=v.name,
        config=v.config,
        quality={"accuracy": _accuracy(v.predict, ctx.x_test, ctx.y_test)},
        cost={
            "latency_ms": lat.median_ms,
            "latency_p90_ms": lat.p90_ms,
            "throughput_per_s": len(ctx.x_test) / (batch.median_ms / 1e3),
            "params": float(v.params),
            "bytes": float(v.nbytes),
        },
        peer=v.peer,
        benchmark="demo",
    )


def run_demo(cfg: DemoConfig = DemoConfig(), *, builders=None, show_progress: bool | None = None) -> list[Point]:
    """Build every variant, measure each, return the points (environment stamped)."""
    from paretoml.frontier import environment, progress, stamp

    from threadpoolctl import threadpool_limits

    torch.manual_seed(cfg.seed)
    x_tr, y_tr, x_te, y_te = load_digits_split(cfg)
    n_val = len(x_tr) // 5  # the split is shuffled, so the tail is a random validation set
    ctx = DemoContext(cfg, x_tr[:-n_val], y_tr[:-n_val], x_te, y_te, x_tr[-n_val:], y_tr[-n_val:])
    points = []
    old_threads = torch.get_num_threads()
    # Same threads for torch and for the BLAS under numpy/scikit-learn: small models on a
    # busy machine time far more steadily on one thread than on a contended pool.
    torch.set_num_threads(cfg.threads)
    try:
        with threadpool_limits(cfg.threads):
            env = environment("cpu")
            for build in progress(builders or BUILDERS, "demo", enabled=show_progress):
                for v in build(ctx):
                    points.append(stamp(measure_variant(v, ctx), "demo", env))
    finally:
        torch.set_num_threads(old_threads)
    return points
