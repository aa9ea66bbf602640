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


def test_bench_filetype_train_tiny(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    out = tmp_path / "sweep"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_filetype_train.py"), "--tiny", "--serial",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    points = [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]
    assert [p["name"] for p in points] == ["tiny_a", "tiny_b"]
    for p in points:
        assert 0 <= p["val_accuracy"] <= 1 and p["params"] > 0
        meta = json.loads((out / p["name"] / "model.json").read_text())
        assert meta["train_config"]["export_dtype"] == "float16" and len(meta["labels"]) == 2


def test_bench_filetype_replot(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"variant": f"paretoml[{m}]", "peer": False, "quality": {"macro_f1_both_cover": f},
             "cost": {"files_per_s": 2000.0} if m == "high-confidence" else {}}
            for m, f in (("high-confidence", 0.86), ("best-guess", 0.91))]
    rows.append({"variant": "magika[high-confidence]", "peer": True, "quality": {"macro_f1_both_cover": 0.93},
                 "cost": {"files_per_s": 160.0}})
    out = tmp_path / "ft.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_filetype.py"), "--replot", "--out", str(out),
                        "--plots", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    png = (tmp_path / "filetype_frontier.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


@pytest.mark.parametrize("content,msg", [(None, "no such file"), ("", "no points"), ("{not json\n", ":1: malformed")])
def test_bench_filetype_replot_bad_input(tmp_path, content, msg):
    out = tmp_path / "ft.jsonl"
    if content is not None:
        out.write_text(content)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_filetype.py"), "--replot", "--out", str(out),
                        "--plots", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "bench_filetype --replot:" in r.stderr and msg in r.stderr, r.stderr[-800:]
    assert "Traceback" not in r.stderr and not (tmp_path / "filetype_frontier.png").exists()
