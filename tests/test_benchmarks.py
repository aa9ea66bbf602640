"""Every benchmark script of the spine runs with --tiny, so none rots (areas add their own files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from paretoml.frontier import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["bench_demo.py"])
def test_benchmark_tiny_writes_points(script, tmp_path):
    out = tmp_path / "points.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    points = read_jsonl(out)
    assert points and all(p.git_sha is not None and p.device for p in points)
