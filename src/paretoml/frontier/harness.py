"""The shared benchmark runner: grid → measure each config → stamp the environment → JSONL.

A benchmark script defines ``grid(tiny) -> list`` of configs and
``measure(config, *, tiny) -> Point`` and ends with::

    if __name__ == "__main__":
        bench_main("quantize", grid, measure)

which gives it ``--tiny``, ``--out PATH.jsonl``, ``--threads N`` and a progress bar on a TTY.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from paretoml.frontier.point import Point, environment, write_jsonl

__all__ = ["progress", "run_grid", "bench_main", "stamp"]


def stamp(point: Point, benchmark: str, env: dict[str, Any]) -> Point:
    """`point` with the benchmark name and the environment filled in where it left them empty."""
    fill = {"benchmark": point.benchmark or benchmark}
    for k in ("device", "threads", "git_sha", "date"):
        if not getattr(point, k):
            fill[k] = env[k]
    fill["versions"] = {**env["versions"], **point.versions}
    return dataclasses.replace(point, **fill)


class progress:
    """A `rich` progress bar over an iterable, shown only when stderr is a terminal.

    Library code passes ``enabled=False`` (or a caller's flag) to turn it off.
    """

    def __init__(self, items: Iterable, description: str = "", total: int | None = None,
                 enabled: bool | None = None):
        self.items = items
        self.description = description
        self.total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __iter__(self):
        if not self.enabled:
            yield from self.items
            return
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(self.description, total=self.total)
            for item in self.items:
                yield item
                bar.advance(task)


def run_grid(benchmark: str, configs: Sequence[Any], measure: Callable[..., Point | Sequence[Point]],
             *, tiny: bool = False, device: str = "cpu", show_progress: bool | None = None,
             extra_versions: Iterable[str] = ()) -> list[Point]:
    """Measure every config (a measure may return one Point or several) and stamp each."""
    env = environment(device, extra_versions)
    points: list[Point] = []
    for cfg in progress(configs, f"bench {benchmark}", enabled=show_progress):
        got = measure(cfg, tiny=tiny)
        for p in ([got] if isinstance(got, Point) else got):
            points.append(stamp(p, benchmark, env))
    return points


def bench_main(benchmark: str, grid: Callable[[bool], Sequence[Any]],
               measure: Callable[..., Point | Sequence[Point]], argv: Sequence[str] | None = None,
               *, extra_versions: Iterable[str] = ()) -> list[Point]:
    """Command-line entry for a benchmark script: parse flags, run the grid, write JSONL."""
    ap = argparse.ArgumentParser(prog=f"bench_{benchmark}.py", description=f"paretoml benchmark: {benchmark}")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long run on CPU (used by the tests)")
    ap.add_argument("--out", type=Path, default=Path(f"benchmarks/results/{benchmark}.jsonl"),
                    help="where to write the JSONL points (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch/numba threads (default: all)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    points = run_grid(benchmark, grid(args.tiny), measure, tiny=args.tiny, device=args.device,
                      extra_versions=extra_versions)
    write_jsonl(args.out, points)
    print(f"wrote {len(points)} points to {args.out}", file=sys.stderr)
    return points
