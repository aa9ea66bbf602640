"""`autotune`: pick the search settings with the highest QPS that reach a recall target.

Given sample queries, exact ground truth is computed by brute force over the index's own
re-rank copy; a grid of (leaves_to_search, reorder_k) is measured (recall@k and best-of-N
QPS), refined by bisection to the fewest leaves that reach the target for every reorder_k, and
the fastest setting whose recall on the sample reaches ``target_recall + margin`` wins
(margin 0 by default: on unseen queries the recall then lands within the sample's noise of the
target, about +-0.01 for 1,000 queries; a positive margin buys headroom with speed). The choice
is stored on the index (``index.search_defaults``, saved by `Index.save`) and returned.

    res = autotune(index, tune_queries, target_recall=0.9, k=10)
    D, I = index.search(q, 10)  # now uses res.leaves_to_search / res.reorder_k
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from paretoml.errors import NotFittedError
from paretoml.retrieval.index import Index, _as_matrix

__all__ = ["TuneResult", "autotune", "exact_search", "recall_at_k"]


@dataclass(frozen=True)
class TuneResult:
    """The chosen settings, their measured recall and QPS on the sample, and the full grid."""

    leaves_to_search: int
    reorder_k: int
    recall: float
    qps: float
    reached_target: bool
    grid: tuple = ()


def exact_search(index: Index, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by brute force over the index's stored vectors: (nq, k) int64."""
    q = index._prep(_as_matrix(q, index.d, "exact_search", "queries"))
    data = index.reconstruct_all()
    out = np.empty((len(q), min(k, len(data))), np.int64)
    for s in range(0, len(q), 256):
        scores = q[s:s + 256] @ data.T + index._bias()[None, :]
        top = np.argpartition(-scores, out.shape[1] - 1, axis=1)[:, : out.shape[1]]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[s:s + 256] = index._ids[np.take_along_axis(top, order, axis=1)]
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |found[:, :k] ∩ truth[:, :k]| / k."""
    hits = [len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def _grid(index: Index, k: int) -> tuple[list[int], list[int]]:
    """Leaves in geometric steps of ~12% from 0.5% of the partitions to all of them (every
    count up to 8); reorder_k from 2k to 16k in steps of ~1.5x. (A fine grid: with a fast scan,
    the next coarser step in leaves or reorder_k costs more than the autotune goal allows.)"""
    p = len(index._centres)
    v = max(1.0, 0.005 * p)
    leaves = {min(p, i) for i in range(int(round(v)), 9)}
    while v < p:
        leaves.add(max(1, int(round(v))))
        v *= 1.12
    leaves.add(p)
    reorder = sorted({max(k, r) for r in (2 * k, 3 * k, 4 * k, 6 * k, 8 * k, 12 * k, 16 * k)})
    return sorted(leaves), reorder


def autotune(index: Index, queries, target_recall: float = 0.9, k: int = 10, *,
             repeats: int = 3, margin: float = 0.0, finalists: int = 4) -> TuneResult:
    """Fastest (leaves_to_search, reorder_k) whose recall@k on `queries` reaches the target.

    Args:
        index: a trained, filled `Index`.
        queries: (n, d) sample queries (hold other queries out to check the result).
        target_recall: in (0, 1].
        k: neighbours per query.
        repeats: timing repetitions per setting (best-of).
        margin: extra recall asked of the sample (e.g. 0.005) so that unseen queries stay above
            the target more often, at some speed.
        finalists: the fastest settings that reach the target are timed again, in interleaved
            rounds (best-of), before the pick: a load spike while one setting of the grid was
            timed cannot then decide the winner (on a shared 2-core machine it did). Settings
            that do more work than another target-reaching one (no fewer leaves and no smaller
            reorder_k) are dropped before that.
    Returns:
        `TuneResult`; if no setting reaches the target, the highest-recall one (reached_target=False).
    """
    if not index.is_trained or index.ntotal == 0:
        raise NotFittedError("autotune: the index is empty; train it and add vectors first")
    if not (0.0 < target_recall <= 1.0):
        raise ValueError(f"autotune: target_recall must be in (0, 1], got {target_recall!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not (1 <= k <= index.ntotal):
        raise ValueError(f"autotune: k must be an int in [1, ntotal={index.ntotal}], got {k!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (0.0 <= margin < 1.0):
        raise ValueError(f"autotune: margin must be a number in [0, 1) (extra recall asked of the sample), "
                         f"got {margin!r}")
    if isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 1:
        raise ValueError(f"autotune: finalists must be an int >= 1 (1 = no re-timing), got {finalists!r}")
    q = _as_matrix(queries, index.d, "autotune", "queries")
    truth = exact_search(index, q, k)
    leaves_grid, reorder_grid = _grid(index, k)
    goal = target_recall + margin

    def measure(leaves, reorder):
        index.search(q[:8], k, leaves_to_search=leaves, reorder_k=reorder)  # warm-up
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, ids = index.search(q, k, leaves_to_search=leaves, reorder_k=reorder)
            best = min(best, time.perf_counter() - t0)
        return leaves, reorder, recall_at_k(ids, truth, k), len(q) / best

    rows = []
    for leaves in leaves_grid:
        for reorder in reorder_grid:
            rows.append(measure(leaves, reorder))
        # more leaves only get slower once the largest reorder already meets the target
        if max(r[2] for r in rows if r[0] == leaves) >= goal + 0.02:
            break
    rows += _refine(rows, goal, measure, lambda leaves, reorder: recall_at_k(
        index.search(q, k, leaves_to_search=leaves, reorder_k=reorder)[1], truth, k))
    ok = [r for r in rows if r[2] >= goal]
    # a setting that reaches the goal with no fewer leaves and no smaller reorder_k than another
    # does strictly more work: drop it, so timing noise cannot pick it
    ok = [r for r in ok if not any((o[0], o[1]) != (r[0], r[1]) and o[0] <= r[0] and o[1] <= r[1] for o in ok)]
    if len(ok) > 1 and finalists > 1:
        ok = _retime(index, q, k, sorted(ok, key=lambda r: -r[3])[:finalists], max(3, repeats))
    pick = max(ok, key=lambda r: r[3]) if ok else max(rows, key=lambda r: (r[2], r[3]))
    index.search_defaults = {"leaves_to_search": pick[0], "reorder_k": pick[1], "k": k,
                             "target_recall": target_recall, "recall": pick[2], "qps": pick[3]}
    index.config = dataclasses.replace(index.config, leaves_to_search=pick[0], reorder_k=pick[1])
    return TuneResult(pick[0], pick[1], pick[2], pick[3], bool(ok), tuple(rows))


def _refine(rows: list, goal: float, measure, recall_of) -> list:
    """For every reorder_k, the fewest leaves that reach `goal`, by bisection between the
    coarse grid's last leaves below the goal and first at or above it (recall grows with leaves):
    the grid's ~12% leaf steps would otherwise cost up to 12% of QPS. Returns the new, timed rows."""
    new = []
    seen = {(r[0], r[1]) for r in rows}
    for reorder in sorted({r[1] for r in rows}):
        col = sorted((r[0], r[2]) for r in rows if r[1] == reorder)
        hit = [l_ for l_, rec in col if rec >= goal]
        if not hit:
            continue
        hi = hit[0]
        below = [l_ for l_, rec in col if l_ < hi]
        lo = below[-1] if below else 0
        while hi - lo > 1:  # invariant: lo misses the goal (or is 0), hi reaches it
            mid = (lo + hi) // 2
            if recall_of(mid, reorder) >= goal:
                hi = mid
            else:
                lo = mid
        if (hi, reorder) not in seen:
            new.append(measure(hi, reorder))
            seen.add((hi, reorder))
    return new


def _retime(index: Index, q: np.ndarray, k: int, cands: list, rounds: int) -> list:
    """The candidates' rows with QPS re-measured: `rounds` interleaved passes, best-of."""
    best = [np.inf] * len(cands)
    for _ in range(rounds):
        for i, (leaves, reorder, _, _) in enumerate(cands):
            t0 = time.perf_counter()
            index.search(q, k, leaves_to_search=leaves, reorder_k=reorder)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [(c[0], c[1], c[2], len(q) / t) for c, t in zip(cands, best)]
