"""The demo's variants: real data, sane accuracies, quantized and distilled variants behave."""

from __future__ import annotations

import pytest

from paretoml.demo import BUILDERS, DemoConfig, run_demo


@pytest.fixture(scope="module")
def points():
    return run_demo(DemoConfig().quick(), show_progress=False)


def test_demo_measures_every_variant_on_the_same_test_split(points):
    names = [p.name for p in points]
    assert len(names) == len(set(names)) >= 5
    for p in points:
        assert 0.0 <= p.quality["accuracy"] <= 1.0
        assert p.cost["latency_ms"] > 0 and p.cost["throughput_per_s"] > 0
        assert p.cost["params"] > 0 and p.cost["bytes"] > 0
        assert p.device and p.threads >= 1


def test_demo_models_learn_digits(points):
    by = {p.name: p for p in points}
    # 10 balanced classes: chance is 0.1; even 8 epochs of a 64-wide MLP exceed 0.9.
    assert by["mlp-h64"].quality["accuracy"] > 0.9
    assert by["sklearn-logreg"].peer and by["sklearn-logreg"].quality["accuracy"] > 0.9


def test_demo_int8_keeps_accuracy_and_shrinks_bytes(points):
    q = next(p for p in points if p.name.endswith("-int8"))
    teacher = next(p for p in points if p.name == q.name.removesuffix("-int8"))
    assert q.quality["accuracy"] >= teacher.quality["accuracy"] - 0.02
    assert q.cost["bytes"] < 0.6 * teacher.cost["bytes"]


def test_demo_distilled_student_is_small_and_accurate(points):
    s = next(p for p in points if p.name.startswith("kd-"))
    assert s.config["hidden"] == DemoConfig().student_hidden
    assert s.quality["accuracy"] > 0.85


def test_demo_is_deterministic_for_a_seed():
    cfg = DemoConfig(hidden_sizes=(16,), epochs=3, latency_repeats=3, throughput_repeats=1)
    a = run_demo(cfg, builders=BUILDERS[:1], show_progress=False)
    b = run_demo(cfg, builders=BUILDERS[:1], show_progress=False)
    assert a[0].quality == b[0].quality


def test_demo_config_validation():
    with pytest.raises(ValueError, match="hidden_sizes"):
        DemoConfig(hidden_sizes=())
    with pytest.raises(ValueError, match="test_fraction"):
        DemoConfig(test_fraction=0.9)
    with pytest.raises(ValueError, match="kd_alpha"):
        DemoConfig(kd_alpha=2.0)
    with pytest.raises(ValueError, match="kd_temperature"):
        DemoConfig(kd_temperature=0)
    with pytest.raises(ValueError, match="lr"):
        DemoConfig(lr=0)
