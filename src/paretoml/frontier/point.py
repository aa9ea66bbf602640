"""`Point`: one measured variant (quality + cost + where it was measured), and JSONL I/O.

One JSON line per point, in the layout every benchmark writes::

    {"benchmark": "demo", "variant": "mlp-h64", "peer": false, "config": {...},
     "quality": {"accuracy": 0.97}, "cost": {"latency_ms": 0.05, "params": 8906},
     "device": "cpu: ...", "threads": 2, "versions": {...}, "git_sha": "abc123", "date": "..."}
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Point", "environment", "read_jsonl", "write_jsonl", "atomic_write"]

_REQUIRED = ("variant", "quality", "cost")


@dataclass(frozen=True)
class Point:
    """A measured variant.

    Attributes:
        name: the variant's name (JSON key ``variant``), unique within a benchmark run.
        config: the settings that produced it (JSON-serialisable).
        quality: quality metrics, e.g. ``{"accuracy": 0.97}``.
        cost: cost metrics, e.g. ``{"latency_ms": 0.05, "params": 8906}``.
        peer: True when the variant is a public peer (faiss, HF tokenizers, ...), not ours.
        benchmark: which benchmark measured it.
        device, threads, versions, git_sha, date: where and when; see `environment()`.
    """

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    peer: bool = False
    benchmark: str = ""
    device: str = ""
    threads: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str = ""
    date: str = ""

    def metric(self, key: str) -> float | None:
        """The value of metric `key`, looked up in quality then cost.

        `key` may be qualified (``"quality.loss"``, ``"cost.bytes"``) when both sections
        hold the same name. Returns None when the point does not have it.
        """
        section, _, name = key.rpartition(".")
        if section in ("quality", "cost"):
            return getattr(self, section).get(name)
        if key in self.quality:
            return self.quality[key]
        return self.cost.get(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "variant": self.name,
            "peer": self.peer,
            "config": self.config,
            "quality": self.quality,
            "cost": self.cost,
            "device": self.device,
            "threads": self.threads,
            "versions": self.versions,
            "git_sha": self.git_sha,
            "date": self.date,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "point") -> "Point":
        """Build a Point from its JSON form; `where` prefixes error messages."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        d = dict(d)
        if "variant" not in d and "name" in d:  # accept the attribute name too
            d["variant"] = d.pop("name")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(
                f"{where}: missing key(s) {missing}; every point needs 'variant', 'quality' and 'cost'"
            )
        for section in ("quality", "cost"):
            if not isinstance(d[section], dict):
                raise ValueError(f"{where}: '{section}' must be an object of metric -> number")
            for k, v in d[section].items():
                if v is not None and not isinstance(v, (int, float)):
                    raise ValueError(f"{where}: {section}.{k} must be a number, got {v!r}")
        return cls(
            name=str(d["variant"]),
            config=d.get("config") or {},
            quality={k: _num(v) for k, v in d["quality"].items()},
            cost={k: _num(v) for k, v in d["cost"].items()},
            peer=bool(d.get("peer", False)),
            benchmark=str(d.get("benchmark", "")),
            device=str(d.get("device", "")),
            threads=int(d.get("threads", 0) or 0),
            versions=d.get("versions") or {},
            git_sha=str(d.get("git_sha", "")),
            date=str(d.get("date", "")),
        )


def _num(v):
    return None if v is None else float(v)


def _json_default(o):
    # numpy scalars and arrays, paths, tuples inside configs
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite_or_none(d: dict) -> dict:
    # JSON has no NaN/inf: store them as null so every line stays valid JSON.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write `data` to `path` atomically: a temp file in the same folder, then rename.

    A reader never sees a half-written file, and a failure leaves the old file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, points: Iterable[Point], *, append: bool = False) -> None:
    """Write points as JSON lines, atomically (with `append`, old lines are kept first)."""
    lines = []
    if append and Path(path).exists():
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    for p in points:
        d = p.to_dict()
        d["quality"], d["cost"] = _finite_or_none(d["quality"]), _finite_or_none(d["cost"])
        lines.append(json.dumps(d, default=_json_default, sort_keys=False))
    atomic_write(path, "\n".join(lines) + ("\n" if lines else ""))


def read_jsonl(path: str | os.PathLike) -> list[Point]:
    """Read points from a JSONL file; errors name the file and the 1-based line number.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, or a line is not a valid point.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a JSONL file of points)")
    points = []
    with path.open(encoding="utf-8", errors="strict") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
            points.append(Point.from_dict(d, where=f"{path}:{i}"))
    if not points:
        raise ValueError(f"{path}: no points (the file is empty); run a benchmark with --out {path} first")
    return points


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str = "cpu", extra_versions: Iterable[str] = ()) -> dict[str, Any]:
    """Where a measurement is taken: device name, threads, package versions, git sha, date.

    Args:
        device: ``"cpu"`` or a CUDA device string; the GPU's name is recorded for CUDA.
        extra_versions: more distribution names whose versions to record (peers).
    """
    import importlib.metadata as md

    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        dev = f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    else:
        dev = f"cpu: {_cpu_name()} ({os.cpu_count()} cores)"
    versions = {"python": platform.python_version()}
    for dist in ("paretoml", "torch", "numpy", "numba", *extra_versions):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return {
        "device": dev,
        "threads": torch.get_num_threads(),
        "versions": versions,
        "git_sha": _git_sha(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
