"""The spine: measured points, the Pareto front, and reports of both.

    >>> from paretoml.frontier import Point, pareto_front, latency
    >>> front = pareto_front(points, {"latency_ms": "min", "accuracy": "max"})
"""

from paretoml.frontier.harness import bench_main, progress, run_grid, stamp
from paretoml.frontier.measure import (
    Latency,
    flops,
    latency,
    param_count,
    peak_memory_bytes,
    serialized_bytes,
    throughput,
)
from paretoml.frontier.pareto import default_direction, pareto_front, pareto_mask, parse_objectives
from paretoml.frontier.point import Point, atomic_write, environment, read_jsonl, write_jsonl
from paretoml.frontier.report import frontier_table, html_report, plot_frontier, write_report

__all__ = [
    "Latency",
    "Point",
    "atomic_write",
    "bench_main",
    "default_direction",
    "environment",
    "flops",
    "frontier_table",
    "html_report",
    "latency",
    "param_count",
    "pareto_front",
    "pareto_mask",
    "parse_objectives",
    "peak_memory_bytes",
    "plot_frontier",
    "progress",
    "read_jsonl",
    "run_grid",
    "serialized_bytes",
    "stamp",
    "throughput",
    "write_jsonl",
    "write_report",
]
