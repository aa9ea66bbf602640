"""The spine: Point JSONL round trip, pareto_front properties, measurement sanity, reports."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paretoml.frontier import (
    Point,
    environment,
    flops,
    frontier_table,
    latency,
    param_count,
    pareto_front,
    pareto_mask,
    peak_memory_bytes,
    plot_frontier,
    read_jsonl,
    serialized_bytes,
    throughput,
    write_jsonl,
    write_report,
)

# --- pareto_front properties --------------------------------------------------------------

_values = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)), min_size=0, max_size=30
)
_dirs = st.lists(st.sampled_from(["min", "max"]), min_size=3, max_size=3)


def _dominates(a, b, dirs):
    better_or_eq = all((x <= y) if d == "min" else (x >= y) for x, y, d in zip(a, b, dirs))
    strictly = any((x < y) if d == "min" else (x > y) for x, y, d in zip(a, b, dirs))
    return better_or_eq and strictly


def _points(rows):
    return [Point(name=f"p{i}", quality={"q": float(r[0])}, cost={"c1": float(r[1]), "c2": float(r[2])})
            for i, r in enumerate(rows)]


@settings(max_examples=200, deadline=None)
@given(_values, _dirs)
def test_pareto_front_is_exactly_the_non_dominated_set(rows, dirs):
    pts = _points(rows)
    objs = dict(zip(["q", "c1", "c2"], dirs))
    front = pareto_front(pts, objs)
    vec = lambda p: (p.quality["q"], p.cost["c1"], p.cost["c2"])  # noqa: E731
    front_ids = {id(p) for p in front}
    for p in front:  # no returned point is dominated by any point
        assert not any(_dominates(vec(o), vec(p), dirs) for o in pts)
    for p in pts:  # every excluded point is dominated by a returned one
        if id(p) not in front_ids:
            assert any(_dominates(vec(f), vec(p), dirs) for f in front)


@settings(max_examples=100, deadline=None)
@given(_values, _dirs, st.randoms(use_true_random=False))
def test_pareto_front_ignores_input_order(rows, dirs, rnd):
    pts = _points(rows)
    objs = dict(zip(["q", "c1", "c2"], dirs))
    shuffled = pts[:]
    rnd.shuffle(shuffled)
    assert {p.name for p in pareto_front(pts, objs)} == {p.name for p in pareto_front(shuffled, objs)}


def test_pareto_front_keeps_all_duplicates_of_a_front_point():
    pts = _points([(1, 1, 1), (1, 1, 1), (0, 2, 2)])
    names = [p.name for p in pareto_front(pts, {"q": "max", "c1": "min", "c2": "min"})]
    assert names == ["p0", "p1"]


def test_pareto_front_hand_checked_two_objectives():
    # latency (min) vs accuracy (max): b is dominated by a (slower, less accurate).
    pts = [Point("a", quality={"acc": 0.9}, cost={"ms": 1.0}),
           Point("b", quality={"acc": 0.8}, cost={"ms": 2.0}),
           Point("c", quality={"acc": 0.95}, cost={"ms": 3.0}),
           Point("d", quality={"acc": 0.7}, cost={"ms": 0.5})]
    assert [p.name for p in pareto_front(pts, ["ms", "acc"])] == ["a", "c", "d"]
    assert [p.name for p in pareto_front(pts, {"ms": "max", "acc": "min"})] == ["b", "c", "d"]


def test_pareto_front_default_direction_of_loss_is_min():
    pts = [Point("a", quality={"val_loss": 1.0}, cost={"ms": 1.0}),
           Point("b", quality={"val_loss": 2.0}, cost={"ms": 1.0})]
    assert [p.name for p in pareto_front(pts, ["ms", "val_loss"])] == ["a"]


def test_pareto_front_missing_objective_names_the_point():
    pts = [Point("a", quality={"acc": 0.9}, cost={"ms": 1.0}), Point("b", cost={"ms": 2.0})]
    with pytest.raises(ValueError, match=r"'b' lacks 'acc'"):
        pareto_front(pts, ["ms", "acc"])


def test_pareto_front_unknown_direction():
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        pareto_front(_points([(1, 1, 1)]), {"q": "sideways"})
    with pytest.raises(ValueError, match="at least one objective"):
        pareto_front(_points([(1, 1, 1)]), {})
    with pytest.raises(TypeError):
        pareto_front(_points([(1, 1, 1)]), 3)


def test_pareto_mask_rejects_nan_and_bad_shape():
    with pytest.raises(ValueError, match="NaN"):
        pareto_mask(np.array([[np.nan, 1.0]]), ["min", "min"])
    with pytest.raises(ValueError, match="shape"):
        pareto_mask(np.zeros((3, 2)), ["min"])


def test_pareto_mask_matches_brute_force_on_random_floats():
    rng = np.random.default_rng(0)
    v = rng.random((300, 3))
    dirs = ["min", "max", "min"]
    mask = pareto_mask(v, dirs)
    brute = [not any(_dominates(v[j], v[i], dirs) for j in range(len(v))) for i in range(len(v))]
    assert mask.tolist() == brute


# --- Point and JSONL ---------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    env = environment()
    pts = [Point("a", {"hidden": 64, "tuple": (1, 2)}, {"acc": 0.9}, {"ms": 1.5}, peer=False, benchmark="t", **env),
           Point("b", {}, {"acc": 0.8}, {"ms": 0.5}, peer=True, benchmark="t", **env)]
    path = tmp_path / "p.jsonl"
    write_jsonl(path, pts)
    back = read_jsonl(path)
    assert [p.name for p in back] == ["a", "b"]
    assert back[1].peer and back[0].config == {"hidden": 64, "tuple": [1, 2]}
    assert back[0].quality == {"acc": 0.9} and back[0].versions["torch"] == torch.__version__
    assert json.loads(path.read_text().splitlines()[0])["variant"] == "a"


def test_jsonl_non_finite_values_become_null_and_then_missing(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl(path, [Point("a", quality={"acc": float("nan")}, cost={"ms": float("inf")})])
    (p,) = read_jsonl(path)
    assert p.metric("acc") is None and p.metric("ms") is None


def test_read_jsonl_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"variant": "a", "quality": {}, "cost": {}}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON"):
        read_jsonl(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no points"):
        read_jsonl(empty)
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")
    nokey = tmp_path / "nokey.jsonl"
    nokey.write_text('{"variant": "a"}\n')
    with pytest.raises(ValueError, match=r"nokey.jsonl:1: missing key"):
        read_jsonl(nokey)
    notnum = tmp_path / "notnum.jsonl"
    notnum.write_text('{"variant": "a", "quality": {"acc": "high"}, "cost": {}}\n')
    with pytest.raises(ValueError, match=r"quality.acc must be a number"):
        read_jsonl(notnum)
    notobj = tmp_path / "notobj.jsonl"
    notobj.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match="expected a JSON object"):
        read_jsonl(notobj)


def test_point_metric_qualified_lookup():
    p = Point("a", quality={"x": 1.0}, cost={"x": 2.0})
    assert p.metric("x") == 1.0 and p.metric("cost.x") == 2.0 and p.metric("quality.x") == 1.0
    assert p.metric("nope") is None


# --- measurement ---------------------------------------------------------------------------------


def test_latency_measures_a_known_sleep():
    stats = latency(lambda: time.sleep(0.004), warmup=1, repeats=5)
    assert 3.5 <= stats.median_ms <= 40
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms and stats.repeats == 5


def test_latency_and_throughput_reject_bad_counts():
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        latency(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        latency(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match="items_per_call"):
        throughput(lambda: None, 0)


def test_throughput_is_items_over_time():
    tput = throughput(lambda: time.sleep(0.005), 100, repeats=3)
    assert 2_000 <= tput <= 21_000  # 100 items / ~5 ms = 20k/s, slower under load


def test_param_count_and_serialized_bytes():
    m = torch.nn.Linear(10, 5)
    assert param_count(m) == 55
    assert param_count(m, trainable_only=True) == 55
    nbytes = serialized_bytes(m)
    assert 55 * 4 <= nbytes <= 55 * 4 + 4096  # payload plus torch.save's container
    assert serialized_bytes(b"abc") == 3
    with pytest.raises(TypeError, match="nn.Module"):
        param_count("not a model")


def test_serialized_bytes_of_paths(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"x" * 5)
    assert serialized_bytes(tmp_path / "a.bin") == 10 and serialized_bytes(tmp_path) == 15


def test_flops_of_a_linear_layer():
    m = torch.nn.Linear(64, 32, bias=False)
    assert flops(m, torch.randn(8, 64)) == 2 * 8 * 64 * 32


def test_peak_memory_sees_a_large_allocation():
    def alloc():
        a = np.ones(64 * 2**20 // 8)  # 64 MiB touched
        return a.sum()

    assert peak_memory_bytes(alloc) >= 64 * 2**20


# --- reports ---------------------------------------------------------------------------------------


def _demo_points():
    return [Point("fast", quality={"accuracy": 0.90}, cost={"latency_ms": 1.0, "bytes": 10.0}),
            Point("slow", quality={"accuracy": 0.80}, cost={"latency_ms": 2.0, "bytes": 20.0}),
            Point("peer", quality={"accuracy": 0.95}, cost={"latency_ms": 3.0, "bytes": 30.0}, peer=True)]


def test_frontier_table_marks_front_points():
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(frontier_table(_demo_points(), ["latency_ms", "accuracy"]))
    text = console.export_text()
    lines = {ln.split("│")[2].strip(): ln for ln in text.splitlines() if ln.count("│") > 3}
    assert "★" in lines["fast"] and "★" in lines["peer"] and "★" not in lines["slow"]


def test_plot_is_a_png_and_report_is_self_contained(tmp_path):
    png = plot_frontier(_demo_points(), "latency_ms", "accuracy", tmp_path / "f.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "f.png").read_bytes() == png
    paths = write_report(_demo_points(), "latency_ms", "accuracy", tmp_path / "rep")
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "http" not in html.split("<body>")[1]
    assert len(read_jsonl(paths["jsonl"])) == 3


def test_write_report_writes_nothing_when_it_fails(tmp_path):
    pts = _demo_points() + [Point("nolat", quality={"accuracy": 1.0}, cost={})]
    with pytest.raises(ValueError, match="lacks 'latency_ms'"):
        write_report(pts, "latency_ms", "accuracy", tmp_path / "rep")
    assert not (tmp_path / "rep").exists() or not any((tmp_path / "rep").iterdir())


def test_param_count_counts_logical_weights_of_quantized_layers():
    import copy

    from paretoml.infer.quantize import QuantizeConfig, quantize_

    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    expected = 64 * 32 + 32 + 32 * 8 + 8
    for cfg in (QuantizeConfig(bits=8), QuantizeConfig(bits=4, group_size=32, symmetric=False)):
        q = copy.deepcopy(model)
        quantize_(q, cfg)
        assert param_count(q) == expected  # int4 packs two codes per byte: storage would say less
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice
        warnings.simplefilter("ignore")
        dq = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    assert param_count(dq) == expected
