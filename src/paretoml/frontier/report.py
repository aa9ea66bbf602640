"""Reports of measured points: a terminal table, a PNG scatter with the front, an HTML page.

    >>> write_report(points, x="latency_ms", y="accuracy", out_dir="report")
    # report/points.jsonl, report/frontier.png, report/report.html

matplotlib is imported inside the plotting function (Agg backend), so importing this module
stays cheap.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Sequence

from paretoml.frontier.pareto import default_direction, pareto_front, parse_objectives
from paretoml.frontier.point import Point, atomic_write, write_jsonl

__all__ = ["frontier_table", "plot_frontier", "html_report", "write_report", "resolve_objectives"]


def resolve_objectives(points: Sequence[Point], objectives) -> dict[str, str]:
    """Objectives with every ``"auto"`` direction replaced by the metric's default."""
    objs = parse_objectives(objectives)
    if not points:
        raise ValueError("no points to report")
    return {k: (d if d != "auto" else default_direction(points[0], k)) for k, d in objs.items()}


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    a = abs(v)
    if v == int(v) and a < 1e12:
        return f"{int(v):,}"
    if a >= 100:
        return f"{v:,.1f}"
    if a >= 1:
        return f"{v:.3f}"
    return f"{v:.4g}"


def _columns(points: Sequence[Point], objectives: dict[str, str]) -> tuple[list[str], list[str]]:
    # Objectives first, then every other metric that some point has.
    qual = [k for p in points for k in p.quality]
    cost = [k for p in points for k in p.cost]
    q = [k for k in dict.fromkeys(qual) if k not in objectives]
    c = [k for k in dict.fromkeys(cost) if k not in objectives]
    return q, c


def frontier_table(points: Sequence[Point], objectives, *, title: str | None = None):
    """A `rich.table.Table` of all points, frontier points marked ★ and listed first."""
    from rich.table import Table

    objs = resolve_objectives(points, objectives)
    front_ids = {id(p) for p in pareto_front(points, objs)}
    q, c = _columns(points, objs)
    table = Table(title=title, title_justify="left")
    table.add_column("", justify="center")
    table.add_column("variant", style="bold")
    table.add_column("peer")
    for k, d in objs.items():
        table.add_column(f"{k} ({'↓' if d == 'min' else '↑'})", justify="right", style="cyan")
    for k in q + c:
        table.add_column(k, justify="right")
    ordered = sorted(points, key=lambda p: (id(p) not in front_ids))
    for p in ordered:
        on = id(p) in front_ids
        table.add_row(
            "★" if on else "",
            p.name,
            "peer" if p.peer else "",
            *[_fmt(p.metric(k)) for k in objs],
            *[_fmt(p.quality.get(k)) for k in q],
            *[_fmt(p.cost.get(k)) for k in c],
            style=None if on else "dim",
        )
    return table


def plot_frontier(
    points: Sequence[Point],
    x: str,
    y: str,
    path: str | Path | None = None,
    *,
    title: str | None = None,
    logx: bool | None = None,
) -> bytes:
    """Scatter of metric `y` against `x`, the 2-objective front drawn as a step line,
    peers drawn as distinct markers. Returns PNG bytes; also writes them to `path` atomically.

    `x`/`y` take ``"metric"`` or ``"metric:min|max"``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    objs = resolve_objectives(points, [x, y])
    (xk, xd), (yk, yd) = objs.items()
    front = pareto_front(points, objs)
    front_ids = {id(p) for p in front}
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    groups = [
        ("paretoml", [p for p in points if not p.peer and id(p) not in front_ids], "o", "#9bb7d4"),
        ("peer", [p for p in points if p.peer and id(p) not in front_ids], "s", "#f2b48c"),
        ("paretoml (front)", [p for p in points if not p.peer and id(p) in front_ids], "o", "#1f5fa6"),
        ("peer (front)", [p for p in points if p.peer and id(p) in front_ids], "s", "#d2601a"),
    ]
    for label, pts, marker, color in groups:
        if pts:
            ax.scatter([p.metric(xk) for p in pts], [p.metric(yk) for p in pts], marker=marker,
                       s=46, color=color, edgecolors="black", linewidths=0.5, label=label, zorder=3)
    for p in points:
        ax.annotate(p.name, (p.metric(xk), p.metric(yk)), fontsize=7, xytext=(4, 3),
                    textcoords="offset points", color="#333333")
    # Front as a staircase: sorted by x from best to worst.
    fs = sorted(front, key=lambda p: p.metric(xk), reverse=(xd == "max"))
    if len(fs) > 1:
        ax.step([p.metric(xk) for p in fs], [p.metric(yk) for p in fs], where="post",
                color="#1f5fa6", lw=1.2, alpha=0.7, zorder=2, label="Pareto front")
    xs = [p.metric(xk) for p in points]
    if logx is None:
        pos = [v for v in xs if v and v > 0]
        logx = len(pos) == len(xs) and max(pos) / min(pos) > 50
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(f"{xk} ({'lower' if xd == 'min' else 'higher'} is better)")
    ax.set_ylabel(f"{yk} ({'lower' if yd == 'min' else 'higher'} is better)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        atomic_write(path, data)
    return data


def html_report(points: Sequence[Point], x: str, y: str, *, png: bytes | None = None,
                title: str = "paretoml frontier") -> str:
    """A self-contained HTML page: the plot embedded as base64 PNG and the table."""
    objs = resolve_objectives(points, [x, y])
    front_ids = {id(p) for p in pareto_front(points, objs)}
    if png is None:
        png = plot_frontier(points, x, y)
    q, c = _columns(points, objs)
    head = ["", "variant", "peer", *[f"{k} ({d})" for k, d in objs.items()], *q, *c]
    rows = []
    for p in sorted(points, key=lambda p: (id(p) not in front_ids)):
        cells = ["★" if id(p) in front_ids else "", p.name, "peer" if p.peer else "",
                 *[_fmt(p.metric(k)) for k in objs], *[_fmt(p.quality.get(k)) for k in q],
                 *[_fmt(p.cost.get(k)) for k in c]]
        cls = "front" if id(p) in front_ids else "off"
        rows.append(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(s)}</td>" for s in cells) + "</tr>")
    env = points[0]
    meta = html.escape(f"{env.device} · {env.threads} threads · git {env.git_sha or '?'} · {env.date}")
    img = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
tr.off {{ color: #888; }} tr.front td:nth-child(2) {{ font-weight: bold; }}
.meta {{ color: #666; font-size: 13px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">{meta}</p>
<img alt="frontier plot" src="data:image/png;base64,{img}">
<p>★ = on the Pareto front of {html.escape(", ".join(f"{k} ({d})" for k, d in objs.items()))}.</p>
<table><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""


def write_report(points: Sequence[Point], x: str, y: str, out_dir: str | Path, *,
                 title: str = "paretoml frontier") -> dict[str, Path]:
    """Write ``points.jsonl``, ``frontier.png`` and ``report.html`` into `out_dir`.

    Everything is computed before anything is written, and each file is written atomically,
    so a failure leaves no half-written report.
    """
    out = Path(out_dir)
    png = plot_frontier(points, x, y, title=title)
    page = html_report(points, x, y, png=png, title=title)
    paths = {"jsonl": out / "points.jsonl", "png": out / "frontier.png", "html": out / "report.html"}
    write_jsonl(paths["jsonl"], points)
    atomic_write(paths["png"], png)
    atomic_write(paths["html"], page)
    return paths
