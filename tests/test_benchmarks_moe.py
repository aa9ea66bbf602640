"""benchmarks/bench_moe.py runs every part with --tiny (seconds) and writes valid points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paretoml.frontier import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_bench_moe_tiny_writes_points_of_every_part(tmp_path, shared_data):
    out = tmp_path / "moe.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_moe.py"), "--tiny", "--threads", "1",
                    "--out", str(out)], check=True, capture_output=True, text=True, timeout=600,
                   env={"PARETOML_DATA": str(shared_data), "PATH": "/usr/bin:/bin"})
    points = read_jsonl(out)
    parts = {p.config["part"] for p in points}
    assert parts == {"throughput", "quality", "bpr", "task"}
    extracted = [p for p in points if p.name.startswith("task_moe_extracted")]
    assert extracted and all(p.quality["max_abs_diff_vs_full"] <= 1e-6 for p in extracted)


def test_timeline_counts_busy_idle_and_gaps(load_bench):
    from types import SimpleNamespace as NS

    def ev(name, start, end, dev="CUDA"):
        tr = NS(start=start, end=end, elapsed_us=lambda: end - start)
        return NS(name=name, device_type=NS(name=dev), time_range=tr)

    prof = NS(events=lambda: [ev("b", 20, 30), ev("a", 0, 10), ev("cpu", 0, 100, "CPU"), ev("c", 28, 40),
                              ev("d", 45, 50)])
    text = load_bench("bench_moe")._timeline(prof)
    # busy 10+10+12+5 = 37; span 0..50; gaps: 10 (a→b) and 5 (c→d); c overlaps b: no gap
    assert text.splitlines()[0] == "kernels 4, busy 37 us, span 50 us, idle 15 us in 2 gaps"
    assert "gap    10.0 us after a before b" in text and "gap     5.0 us after c before d" in text
