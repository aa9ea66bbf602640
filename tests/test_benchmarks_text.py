"""The text benchmark runs end to end in its tiny mode (so it never rots)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_text_tiny(tmp_path, shared_data):
    pytest.importorskip("tokenizers")
    out = tmp_path / "text.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_text.py"), "--tiny", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    from paretoml.frontier import read_jsonl

    points = read_jsonl(out)
    assert any(p.peer for p in points) and any(not p.peer for p in points)
    for p in points:
        if "id_mismatches_vs_hf" in p.quality:
            assert p.quality["id_mismatches_vs_hf"] == 0, p.name
