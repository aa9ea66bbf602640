"""Spine error paths not covered elsewhere: optional-dependency errors, model and objective validation."""

from __future__ import annotations

import pytest

from paretoml.errors import NotFittedError, ParetomlError, require
from paretoml.frontier import Point, pareto_front
from paretoml.models import MLP


def test_require_imports_or_names_the_extra():
    assert require("json", "dev", "a test").dumps([]) == "[]"
    with pytest.raises(ParetomlError, match=r"pip install 'paretoml\[peers\]'") as e:
        require("surely_not_a_module_xyz", "peers", "the frobnicator")
    assert "the frobnicator" in str(e.value)


def test_not_fitted_error_is_both_kinds():
    assert issubclass(NotFittedError, ParetomlError) and issubclass(NotFittedError, ValueError)


@pytest.mark.parametrize("kw, name", [({"hidden": 0}, "hidden"), ({"depth": 0}, "depth"),
                                      ({"in_features": 2.5}, "in_features")])
def test_mlp_rejects_bad_sizes(kw, name):
    args = {"in_features": 64, "hidden": 16, "num_classes": 10, **kw}
    with pytest.raises(ValueError, match=f"MLP: {name} must be an int >= 1"):
        MLP(args.pop("in_features"), args.pop("hidden"), args.pop("num_classes"), **args)


def test_objective_strings_are_validated():
    pts = [Point("a", quality={"acc": 1.0}, cost={"ms": 1.0})]
    with pytest.raises(TypeError, match="expected strings like 'latency_ms:min'"):
        pareto_front(pts, [3])
    with pytest.raises(ValueError, match="empty metric name"):
        pareto_front(pts, [":min"])
    assert pareto_front([], ["ms"]) == []


def test_report_of_no_points(tmp_path):
    from paretoml.frontier import write_report

    with pytest.raises(ValueError, match="no points to report"):
        write_report([], "ms", "acc", tmp_path / "rep")
    assert not (tmp_path / "rep").exists()
