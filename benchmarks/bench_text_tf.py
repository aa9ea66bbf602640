"""Fast WordPiece vs TF Text's FastBertTokenizer (and HF tokenizers), end-to-end batch, one thread.

TF Text needs TensorFlow, which is not a paretoml dependency: run this from a separate venv that
has tensorflow-text, tokenizers, numpy and numba, with the repo's src on the path::

    python3.11 -m venv /tmp/tftext-venv
    /tmp/tftext-venv/bin/pip install tensorflow-text==2.21.1 tokenizers==0.23.3 numba numpy
    PYTHONPATH=src /tmp/tftext-venv/bin/python benchmarks/bench_text_tf.py

TF gets its input as a prebuilt string tensor (its conversion is not timed), intra/inter-op
threads 1. Writes benchmarks/results/text_tf.jsonl. TF Text's ids differ from HF's on some lines
(NFKC case folding, a 100-*byte* word limit); the mismatch counts are recorded.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text import DATA, VOCABS, corpus, hf_tokenizer, interleaved  # noqa: E402

from paretoml.frontier import Point, write_jsonl  # noqa: E402
from paretoml.text import WordPieceTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_tf.jsonl")
    args = ap.parse_args(argv)
    import tensorflow as tf
    import tensorflow_text as tft
    import tokenizers

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    texts = corpus(100_000 if args.tiny else 2_000_000)
    n_bytes = sum(len(t.encode("utf-8")) + 1 for t in texts)
    tf_texts = tf.constant(texts)
    points = []
    for vocab_name, lc in VOCABS.items():
        path = DATA / "vocab" / f"{vocab_name}.txt"
        ours = WordPieceTokenizer.from_file(path, lowercase=lc)
        hf = hf_tokenizer(path, lc)
        vocab = path.read_text(encoding="utf-8").split("\n")[:-1]
        tft_tok = tft.FastBertTokenizer(vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=lc)
        ref = [e.ids for e in hf.encode_batch(texts)]
        rt = tft_tok.tokenize(tf_texts)  # ragged (batch, tokens); older versions add a words level
        rt = rt.merge_dims(-2, -1) if rt.ragged_rank > 1 else rt
        tf_ids = rt.to_list()
        tf_bad = sum(a != b for a, b in zip(tf_ids, ref))
        our_bad = sum(e.ids.tolist() != b for e, b in zip(ours.encode_batch(texts, num_threads=1), ref))
        fns = {
            "fast-wordpiece": lambda: [e.ids for e in ours.encode_batch(texts, num_threads=1)],
            "fast-wordpiece-flat": lambda: ours.encode_batch_flat(texts, num_threads=1),
            "tf-text-FastBertTokenizer": lambda: tft_tok.tokenize(tf_texts),
            "hf-encode_batch": lambda: [e.ids for e in hf.encode_batch(texts)],
        }
        t = interleaved(fns, 2 if args.tiny else 7)
        best = {k: min(v) for k, v in t.items()}
        load = os.getloadavg()[0]
        for k, v in best.items():
            points.append(Point(
                name=f"{k}/{vocab_name}/batch", peer=not k.startswith("fast"), benchmark="text_tf",
                config={"vocab": vocab_name, "lowercase": lc, "lines": len(texts), "bytes": n_bytes,
                        "threads": 1, "clock": "process_time", "loadavg_1m": round(load, 2)},
                quality={"id_mismatched_lines_vs_hf": tf_bad if k.startswith("tf") else
                         (0 if k.startswith("hf") else our_bad)},
                cost={"best_s": v, "MB_per_s": n_bytes / 1e6 / v, "speedup_vs_tf": best["tf-text-FastBertTokenizer"] / v,
                      "speedup_vs_hf": best["hf-encode_batch"] / v},
                device="cpu", threads=1, date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                versions={"tensorflow": tf.__version__, "tensorflow-text": tft.__version__ if hasattr(tft, "__version__")
                          else "2.21.1", "tokenizers": tokenizers.__version__}))
            print(f"{points[-1].name:55s} {points[-1].cost['speedup_vs_tf']:6.2f}x vs TF "
                  f"{points[-1].cost['speedup_vs_hf']:6.2f}x vs HF  mismatches {points[-1].quality}", file=sys.stderr)
    write_jsonl(args.out, points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
