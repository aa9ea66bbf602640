"""The Pareto front: points no other point beats on every objective.

A point *dominates* another when it is at least as good on every objective and strictly
better on one. The front keeps every non-dominated point; points with identical objective
values do not dominate each other, so duplicates on the front are all kept.

    >>> front = pareto_front(points, {"latency_ms": "min", "accuracy": "max"})
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from paretoml.frontier.point import Point

__all__ = ["pareto_front", "pareto_mask", "parse_objectives", "default_direction"]

_DIRECTIONS = ("min", "max")
# Quality metrics that are better when smaller; everything else in `quality` is maximised.
_LOWER_IS_BETTER = ("loss", "ppl", "perplexity", "error", "err", "mismatches", "wer", "cer", "mse", "mae")


def default_direction(point: Point, key: str) -> str:
    """"min" for cost metrics and loss-like quality metrics, "max" for other quality metrics."""
    section, _, name = key.rpartition(".")
    in_quality = section == "quality" or (section != "cost" and name in point.quality)
    if not in_quality:
        return "min"
    return "min" if name.lower().endswith(_LOWER_IS_BETTER) else "max"


def parse_objectives(objectives: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Normalise objectives to ``{metric: "min"|"max"}``.

    Accepts a mapping, or strings ``"metric:min"`` / ``"metric:max"``; a bare ``"metric"``
    maps to ``"auto"`` (resolved per point by `default_direction`).
    """
    if isinstance(objectives, Mapping):
        items = list(objectives.items())
    elif isinstance(objectives, (list, tuple)):
        items = []
        for s in objectives:
            if not isinstance(s, str):
                raise TypeError(f"objectives: expected strings like 'latency_ms:min', got {s!r}")
            name, _, d = s.partition(":")
            items.append((name, d or "auto"))
    else:
        raise TypeError(
            f"objectives: expected a dict {{metric: 'min'|'max'}} or a list of 'metric:dir', "
            f"got {type(objectives).__name__}"
        )
    if not items:
        raise ValueError("objectives: at least one objective is needed, got none")
    out = {}
    for name, d in items:
        if not name:
            raise ValueError("objectives: empty metric name")
        if d not in (*_DIRECTIONS, "auto"):
            raise ValueError(
                f"objectives: unknown direction {d!r} for metric {name!r}; use 'min' or 'max'"
            )
        out[name] = d
    return out


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `values`.

    Args:
        values: (n, m) array, one row per point, one column per objective; no NaNs.
        directions: m entries, each "min" or "max".
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(directions):
        raise ValueError(
            f"pareto_mask: values must have shape (n, {len(directions)}), got {values.shape}"
        )
    if np.isnan(values).any():
        raise ValueError("pareto_mask: values contain NaN; drop or fill those points first")
    for d in directions:
        if d not in _DIRECTIONS:
            raise ValueError(f"pareto_mask: unknown direction {d!r}; use 'min' or 'max'")
    # Flip "max" columns so smaller is always better.
    sign = np.array([1.0 if d == "min" else -1.0 for d in directions])
    v = values * sign  # (n, m)
    n = len(v)
    mask = np.ones(n, dtype=bool)
    # Sorting lexicographically means a dominator always precedes what it dominates, so
    # each point only needs checking against the front found so far: O(n * front * m).
    order = np.lexsort(v.T[::-1])
    front: list[int] = []
    for i in order:
        vi = v[i]
        dominated = False
        for j in front:
            vj = v[j]
            if np.all(vj <= vi) and np.any(vj < vi):
                dominated = True
                break
        if dominated:
            mask[i] = False
        else:
            front.append(i)
    return mask


def pareto_front(
    points: Sequence[Point], objectives: Mapping[str, str] | Sequence[str]
) -> list[Point]:
    """The points of `points` that no other point dominates, in input order.

    Args:
        points: measured points.
        objectives: ``{"latency_ms": "min", "accuracy": "max", ...}`` (any number), or
            ``["latency_ms:min", "accuracy"]`` where a bare name takes its default
            direction (cost → min, quality → max unless loss-like).

    Raises:
        ValueError: an objective is missing from some points (they are named), or a
            direction is not "min"/"max".
    """
    points = list(points)
    objs = parse_objectives(objectives)
    if not points:
        return []
    missing = [(p.name, k) for p in points for k in objs if p.metric(k) is None]
    if missing:
        shown = ", ".join(f"{n!r} lacks {k!r}" for n, k in missing[:5])
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(
            f"pareto_front: objective missing from some points: {shown}{more}; "
            f"choose metrics every point has, or filter the points first"
        )
    dirs = [d if d != "auto" else default_direction(points[0], k) for k, d in objs.items()]
    values = np.array([[p.metric(k) for k in objs] for p in points], dtype=np.float64)
    mask = pareto_mask(values, dirs)
    return [p for p, keep in zip(points, mask) if keep]
