"""The filetype benchmark runs end to end in its --tiny mode (so it never rots)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_filetype_tiny(tmp_path, shared_data):
    pytest.importorskip("magic")
    out = tmp_path / "ft.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_filetype.py"), "--tiny", "--out", str(out),
                        "--corpus", str(tmp_path / "no-corpus")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    points = [json.loads(x) for x in out.read_text().splitlines()]
    ours = [p for p in points if p["variant"] == "paretoml[high-confidence]"]
    assert len(ours) == 1
    q = ours[0]["quality"]
    assert 0 <= q["magika_tests_correct"] <= q["magika_tests_total"] == 16
