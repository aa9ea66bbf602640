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
