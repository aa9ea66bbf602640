"""Cost measurements: latency, throughput, peak memory, parameters, bytes, FLOPs.

Every timing follows the same protocol: warm-up calls (JIT, caches, cuDNN autotune), then
`repeats` timed calls; the median is the figure to quote, p10/p90 show the spread. On CUDA
the device is synchronised around each call so the time covers the kernels, not the launch.

    >>> stats = latency(lambda: model(x), repeats=20)
    >>> stats.median_ms, stats.p90_ms
"""

from __future__ import annotations

import io
import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "Latency",
    "latency",
    "throughput",
    "peak_memory_bytes",
    "param_count",
    "serialized_bytes",
    "flops",
]


@dataclass(frozen=True)
class Latency:
    """Per-call wall time of `repeats` calls after warm-up, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int


def _sync_fn(device: Any) -> Callable[[], None]:
    if device is not None and str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _check_counts(where: str, warmup: int, repeats: int) -> None:
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"{where}: warmup must be an int >= 0, got {warmup!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"{where}: repeats must be an int >= 1, got {repeats!r}")


def latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 20,
    device: Any = None,
    min_time_s: float = 0.0,
) -> Latency:
    """Time `fn()`.

    Args:
        fn: the call to time, with no arguments (close over the inputs).
        warmup: untimed calls first.
        repeats: timed calls (at least this many).
        device: ``"cuda"``/``"cuda:N"`` to synchronise around each call; None or ``"cpu"`` not.
        min_time_s: keep timing past `repeats` until this much time is spent, for very
            short calls whose single timing is noisy.
    """
    _check_counts("latency", warmup, repeats)
    sync = _sync_fn(device)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_time_s:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    p10, p90 = np.percentile(times, [10, 90])
    return Latency(
        median_ms=float(statistics.median(times)),
        p10_ms=float(p10),
        p90_ms=float(p90),
        mean_ms=float(statistics.fmean(times)),
        repeats=len(times),
    )


def throughput(
    fn: Callable[[], Any],
    items_per_call: int,
    *,
    warmup: int = 2,
    repeats: int = 5,
    device: Any = None,
) -> float:
    """Items per second of `fn()`, which processes `items_per_call` items, from the median call."""
    if not isinstance(items_per_call, int) or items_per_call < 1:
        raise ValueError(f"throughput: items_per_call must be an int >= 1, got {items_per_call!r}")
    lat = latency(fn, warmup=warmup, repeats=repeats, device=device)
    return items_per_call / (lat.median_ms / 1e3)


def _rss_high_water_bytes() -> int:
    # VmHWM is resettable on Linux (write "5" to clear_refs); ru_maxrss is not.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_rss_high_water() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_bytes(fn: Callable[[], Any], *, device: Any = None) -> int:
    """Peak memory while running `fn()` once.

    On CUDA: the increase of ``torch.cuda.max_memory_allocated`` over what was allocated
    before the call. On CPU: the process's peak resident set size during the call (Linux
    resets the high-water mark first; elsewhere it is the process-lifetime peak, an upper bound).
    """
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    _reset_rss_high_water()
    fn()
    return _rss_high_water_bytes()


def param_count(model: Any, *, trainable_only: bool = False) -> int:
    """Number of parameters of an `nn.Module`, counting logical weights, not storage.

    Quantized modules keep weights in packed integer buffers (two int4 codes per byte), so
    storage elements undercount them. A module may report its logical count through a
    ``num_params()`` method (paretoml's `QuantLinear` does); torch.ao dynamic-quantized
    modules are recognised by their packed params; other int8/uint8 buffers count one per
    element. With `trainable_only`, only parameters with ``requires_grad`` count.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"param_count: expected a torch.nn.Module, got {type(model).__name__}")
    if trainable_only:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    n, counted = 0, set()
    for m in model.modules():
        if callable(getattr(m, "num_params", None)):
            n += int(m.num_params())
            counted.update(id(t) for t in (*m.parameters(), *m.buffers()))
        elif getattr(m, "_packed_params", None) is not None and callable(getattr(m, "weight", None)):
            w, b = m.weight(), m.bias()  # torch.ao dynamic quantized Linear
            n += w.numel() + (b.numel() if b is not None else 0)
    n += sum(p.numel() for p in model.parameters() if id(p) not in counted)
    int_types = (torch.int8, torch.uint8)
    n += sum(b.numel() for b in model.buffers() if id(b) not in counted and b.dtype in int_types)
    return n


def serialized_bytes(obj: Any) -> int:
    """Bytes of `obj` serialised: a module's ``state_dict`` via `torch.save`, bytes as is,
    a path as its size on disk (a folder: the sum of its files)."""
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    import torch

    state = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


def flops(model: Any, *args: Any, **kwargs: Any) -> int:
    """Floating-point operations of one forward ``model(*args, **kwargs)``, counted by
    `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*args, **kwargs)
    return int(counter.get_total_flops())
