"""`paretoml index build|tune|search`: the SOAR index from the command line.

    paretoml index build --vectors X.npy --spec "IVF500,SOAR1.5,AH4,RR100" --out DIR
    paretoml index tune DIR --queries Q.npy --target-recall 0.9 -k 10 [--json]
    paretoml index search DIR --queries Q.npy -k 10 [--leaves N] [--reorder N] [--json]

Imports here stay cheap: numpy/numba load only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, tune and query a SOAR vector index",
                       description="A SOAR vector index: k-means partitions, spilled assignment, "
                                   "anisotropic 4-bit PQ with LUT16 scanning, exact re-rank.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    b = verbs.add_parser("build", help="train an index on vectors and add them; write it to a folder")
    b.add_argument("--vectors", type=Path, required=True, help="(n, d) float .npy")
    b.add_argument("--spec", default="IVF1000,SOAR1.5,AH4,RR100",
                   help="factory string (default: %(default)s)")
    b.add_argument("--out", type=Path, required=True, help="index folder to write")
    b.add_argument("--json", action="store_true", help="print a JSON summary")
    b.set_defaults(func=_build)

    t = verbs.add_parser("tune", help="choose search settings for a recall target; store them")
    t.add_argument("index", type=Path, help="index folder")
    t.add_argument("--queries", type=Path, required=True, help="(n, d) sample queries .npy")
    t.add_argument("--target-recall", type=float, default=0.9)
    t.add_argument("-k", type=int, default=10)
    t.add_argument("--json", action="store_true", help="print the choice as JSON")
    t.set_defaults(func=_tune)

    s = verbs.add_parser("search", help="query an index folder")
    s.add_argument("index", type=Path, help="index folder")
    s.add_argument("--queries", type=Path, required=True, help="(n, d) queries .npy")
    s.add_argument("-k", type=int, default=10)
    s.add_argument("--leaves", type=int, default=None, help="leaves_to_search (default: stored)")
    s.add_argument("--reorder", type=int, default=None, help="reorder_k (default: stored)")
    s.add_argument("--json", action="store_true", help='print {"ids": [[...]], "distances": [[...]]}')
    s.set_defaults(func=_search)


def _load_npy(path: Path, what: str):
    import numpy as np

    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"cannot read {what} from {path} as a .npy array ({e})") from None


def _build(args) -> int:
    import time

    from paretoml.retrieval import Index, IndexConfig

    x = _load_npy(args.vectors, "vectors")
    if x.ndim != 2:
        raise ValueError(f"--vectors must hold a 2-d (n, d) array, got shape {x.shape}")
    t0 = time.perf_counter()
    index = Index(x.shape[1], IndexConfig.from_spec(args.spec))
    index.train(x)
    index.add(x)
    index.save(args.out)
    summary = {"out": str(args.out), "ntotal": index.ntotal, "d": index.d, "spec": args.spec,
               "build_s": round(time.perf_counter() - t0, 3), "memory_bytes": index.memory_bytes()}
    if args.json:
        from paretoml.cli import print_json

        print_json(summary)
    else:
        print(f"built {summary['ntotal']} x {summary['d']} index ({args.spec}) in {summary['build_s']} s "
              f"-> {args.out} ({summary['memory_bytes'] / summary['ntotal']:.0f} B/vector)")
    return 0


def _tune(args) -> int:
    from paretoml.retrieval import Index, autotune

    index = Index.load(args.index)
    q = _load_npy(args.queries, "queries")
    res = autotune(index, q, target_recall=args.target_recall, k=args.k)
    index.save(args.index)
    out = {"leaves_to_search": res.leaves_to_search, "reorder_k": res.reorder_k, "recall": res.recall,
           "qps": res.qps, "reached_target": res.reached_target, "target_recall": args.target_recall,
           "k": args.k}
    if args.json:
        from paretoml.cli import print_json

        print_json(out)
    else:
        flag = "" if res.reached_target else "  (target NOT reached: best recall shown)"
        print(f"leaves_to_search={res.leaves_to_search} reorder_k={res.reorder_k}: recall@{args.k} "
              f"{res.recall:.4f} at {res.qps:.0f} QPS on the sample; stored in {args.index}{flag}")
    return 0


def _search(args) -> int:
    from paretoml.retrieval import Index

    index = Index.load(args.index)
    q = _load_npy(args.queries, "queries")
    dist, ids = index.search(q, args.k, leaves_to_search=args.leaves, reorder_k=args.reorder)
    if args.json:
        from paretoml.cli import print_json

        print_json({"ids": ids, "distances": dist})
    else:
        for row_i, row_d in zip(ids, dist):
            sys.stdout.write(" ".join(f"{i}:{d:.4f}" for i, d in zip(row_i, row_d)) + "\n")
    return 0
