"""LUT16 scan micro-benchmark: nanoseconds per scored (query, point) of each scan kernel.

Kernels: the portable SWAR kernel (numba, no shuffles), AVX2 ``vpshufb`` (32 lanes) and
AVX-512BW ``vpshufb`` (64 lanes), where the CPU has them, each SIMD kernel with one query per code
load and with two (``-pair2``: two queries probing the same partition share each load and nibble
split; the default), and the widest kernel with two queries per load but no re-rank prefetch
(``-noprefetch``: isolates the re-rank row prefetch, on by default). One SOAR index on the 100k set
(IVF400,SOAR1.5,AH4), 1,000 test queries in one batch, 1 thread, interleaved rounds (every kernel
once per round), best of `--rounds`; `os.getloadavg()` is recorded with every point. "scan" is
the approximate phase alone (centre scoring, LUTs, code scan, candidate selection); "search"
adds the exact re-rank.

    python benchmarks/bench_retrieval_kernel.py            # -> benchmarks/results/retrieval_kernel.jsonl
    python benchmarks/bench_retrieval_kernel.py --tiny --out /tmp/k.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PARETOML_DATA", ROOT.parent / "shared" / "data")) / "ann"
KERNEL_NAMES = {0: "portable-swar", 32: "avx2-vpshufb", 64: "avx512bw-vpshufb"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a seconds-long run on a 3k subset")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval_kernel.jsonl")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best of)")
    ap.add_argument("--leaves", type=int, default=13)
    ap.add_argument("--reorder", type=int, default=40)
    args = ap.parse_args(argv)

    import numba

    from paretoml.frontier import Point, environment, write_jsonl
    from paretoml.retrieval import Index, IndexConfig, _kernels, _simd
    from paretoml.retrieval.tuning import recall_at_k

    numba.set_num_threads(1)
    base = np.load(DATA / "base_100k.f16.npy").astype(np.float32)
    q = np.load(DATA / "queries_2k.f16.npy").astype(np.float32)
    gt = np.load(DATA / "queries_2k.gt100.npy")[:, :10]
    test = np.r_[500:1000, 1500:2000]
    spec, rounds = "IVF400,SOAR1.5,AH4", args.rounds
    if args.tiny:
        base, test, spec, rounds = base[:3000], np.r_[500:525, 1500:1525], "IVF24,SOAR1.5,AH4", 1
        gt = np.argsort(-(q @ base.T), axis=1)[:, :10]
    qt, gtt = q[test], gt[test]
    index = Index(base.shape[1], IndexConfig.from_spec(spec))
    index.train(base)
    index.add(base)
    # (lanes, pair): portable, then each SIMD width one query per load and two
    lanes_all = [(0, "1", "")] + [(w, p, "") for w in (32, 64) if w <= _simd.HOST_LANES for p in ("0", "1")]
    if _simd.HOST_LANES:  # (lanes, pair, prefetch rows): "" = default, "0" = no re-rank prefetch
        lanes_all.append((_simd.HOST_LANES, "1", "0"))
    leaves = min(args.leaves, index.config.num_partitions)
    best: dict = {}
    loads: dict = {}
    recall: dict = {}
    old = {v: os.environ.get(v) for v in ("PARETOML_RETRIEVAL_SIMD", "PARETOML_RETRIEVAL_PAIR",
                                           "PARETOML_RETRIEVAL_PREFETCH")}
    try:
        for r in range(rounds):
            for lanes in lanes_all:
                os.environ["PARETOML_RETRIEVAL_SIMD"] = str(lanes[0])
                os.environ["PARETOML_RETRIEVAL_PAIR"] = lanes[1]
                os.environ["PARETOML_RETRIEVAL_PREFETCH"] = lanes[2]
                index.search(qt[:8], 10, leaves_to_search=leaves, reorder_k=args.reorder)  # JIT, caches
                t0 = time.perf_counter()
                index._scan(qt, 10, leaves, args.reorder)
                t1 = time.perf_counter()
                _, ids = index.search(qt, 10, leaves_to_search=leaves, reorder_k=args.reorder)
                t2 = time.perf_counter()
                for what, dt in (("scan", t1 - t0), ("search", t2 - t1)):
                    best[(lanes, what)] = min(best.get((lanes, what), np.inf), dt)
                loads.setdefault(lanes, []).append(os.getloadavg()[0])
                recall[lanes] = recall_at_k(ids, gtt, 10)
            print(f"round {r + 1}/{rounds}, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        for var, val in old.items():
            if val is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = val
    points_scored = float(index.last_points_scored.mean())
    env = environment("cpu")
    points = []
    for lanes in lanes_all:
        nq = len(qt)
        scan_s, search_s = best[(lanes, "scan")], best[(lanes, "search")]
        cost = {"scan_ns_per_point": scan_s / nq / points_scored * 1e9,
                "search_ns_per_point": search_s / nq / points_scored * 1e9,
                "qps": nq / search_s, "points_scored": points_scored,
                "speedup_vs_portable": best[((0, "1", ""), "search")] / search_s}
        if lanes[0] and lanes[1] == "1" and lanes[2] == "":
            cost["speedup_vs_one_query_per_load"] = best[((lanes[0], "0", ""), "search")] / search_s
        if lanes[2] == "0":
            cost["speedup_of_prefetch"] = search_s / best[((lanes[0], "1", ""), "search")]
        name = (KERNEL_NAMES[lanes[0]] + ("-pair2" if lanes[0] and lanes[1] == "1" else "")
                + ("-noprefetch" if lanes[2] == "0" else ""))
        points.append(Point(name=f"lut16-{name}", quality={"recall@10": recall[lanes]}, cost=cost,
                            config={"kernel": name, "lanes": lanes[0],
                                    "pair_queries": bool(lanes[0]) and lanes[1] == "1",
                                    "rerank_prefetch_rows": int(lanes[2] or _kernels.PREFETCH_ROWS),
                                    "spec": spec, "leaves": leaves,
                                    "reorder_k": args.reorder, "num_queries": nq, "rounds": rounds,
                                    "num_base": len(base), "loadavg_1m": float(np.median(loads[lanes]))},
                            benchmark="retrieval_kernel", device=env["device"], threads=1,
                            versions=env["versions"], git_sha=env["git_sha"], date=env["date"]))
        print(f"{name:>24}: scan {cost['scan_ns_per_point']:.2f} ns/point, search "
              f"{cost['search_ns_per_point']:.2f} ns/point, {cost['qps']:.0f} QPS, recall {recall[lanes]:.4f}, "
              f"{cost['speedup_vs_portable']:.2f}x portable", file=sys.stderr)
    write_jsonl(args.out, points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
