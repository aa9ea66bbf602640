"""Fast WordPiece vs HF tokenizers: end-to-end throughput, per-sentence latency, single-word scaling.

All single-threaded (HF with RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false), in one process,
with the variants interleaved round by round; each point records the best and median of the
rounds and the load average. Ratios are taken between variants of the same run.

    python benchmarks/bench_text.py                 # ~3-5 min; writes benchmarks/results/text.jsonl
    python benchmarks/bench_text.py --plot          # also redraws docs/text_speed.png, docs/text_word_scaling.png
    python benchmarks/bench_text.py --tiny --out /tmp/t.jsonl
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import gc  # noqa: E402
import gzip  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from paretoml.frontier import Point, environment, write_jsonl  # noqa: E402
from paretoml.frontier.harness import stamp  # noqa: E402
from paretoml.text import WordPieceConfig, WordPieceTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PARETOML_DATA", ROOT.parent / "shared" / "data"))
VOCABS = {"bert-base-multilingual-cased": False, "bert-base-uncased": True}


def hf_tokenizer(vocab_path: Path, lowercase: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {t: i for i, t in enumerate(vocab_path.read_text(encoding="utf-8").split("\n")[:-1])}
    t = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    t.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return t


def corpus(max_bytes: int) -> list[str]:
    out, n = [], 0
    with gzip.open(DATA / "text" / "multilingual_debian_12MB.txt.gz", "rt", encoding="utf-8") as f:
        for line in f:
            out.append(line.rstrip("\n"))
            n += len(out[-1].encode("utf-8")) + 1
            if n >= max_bytes:
                break
    return out


def sentences() -> list[str]:
    with open(DATA / "text" / "multilingual_sentences.tsv", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f]


def interleaved(fns: dict, rounds: int, clock=time.process_time, collect: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each fn, the fns taking turns in every round (after one warm-up);
    the garbage collector is paused while a call is timed, as timeit does. The default clock is
    the process's CPU time: on a shared, overloaded machine it is far less noisy than wall time
    (everything here is single-threaded); ``wall`` variants use perf_counter."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for k, f in fns.items():
        f()
    for _ in range(rounds):
        if collect:
            gc.collect()  # once per round, untimed (a collection costs ~0.3 s in this process)
        for k, f in fns.items():
            gc.disable()
            t = clock()
            f()
            times[k].append(clock() - t)
            gc.enable()
    return times


def _summary(ts: list[float]) -> dict[str, float]:
    return {"best_s": min(ts), "median_s": statistics.median(ts)}


def bench_end_to_end(vocab_name: str, lowercase: bool, *, tiny: bool) -> list[Point]:
    path = DATA / "vocab" / f"{vocab_name}.txt"
    t0 = time.perf_counter()
    ours = WordPieceTokenizer.from_file(path, lowercase=lowercase)
    build_s = time.perf_counter() - t0
    maxm = WordPieceTokenizer(ours.vocab, WordPieceConfig(lowercase=lowercase, algorithm="maxmatch"))
    hf = hf_tokenizer(path, lowercase)
    texts = corpus(100_000 if tiny else 2_000_000)
    sents = sentences()[: 100 if tiny else None]
    n_bytes = sum(len(t.encode("utf-8")) + 1 for t in texts)
    n_words = sum(len(t.split()) for t in texts)
    # exactness of what is timed
    mismatched = sum(a.ids.tolist() != b.ids for a, b in zip(ours.encode_batch(texts, num_threads=1),
                                                             hf.encode_batch(texts)))
    batch = {
        "fast-wordpiece": lambda: [e.ids for e in ours.encode_batch(texts, num_threads=1)],
        "fast-wordpiece-flat": lambda: ours.encode_batch_flat(texts, num_threads=1),
        "maxmatch-e2e": lambda: [e.ids for e in maxm.encode_batch(texts, num_threads=1)],
        "hf-encode_batch": lambda: [e.ids for e in hf.encode_batch(texts)],
        "hf-encode_batch_fast": lambda: [e.ids for e in hf.encode_batch_fast(texts)],
    }
    per_sentence = {
        "fast-wordpiece": lambda: [ours.encode(s).ids for s in sents],
        "hf-encode_batch": lambda: [hf.encode(s).ids for s in sents],
    }
    empty = {"fast-wordpiece": lambda: [ours.encode("") for _ in range(2000)],
             "hf-encode_batch": lambda: [hf.encode("") for _ in range(2000)]}
    rounds = 2 if tiny else 9
    tb = interleaved(batch, rounds, collect=not tiny)
    ts = interleaved(per_sentence, rounds * 2, collect=not tiny)
    te = interleaved(empty, rounds, collect=not tiny)
    wall = interleaved({k: batch[k] for k in ("fast-wordpiece", "hf-encode_batch")}, 2 if tiny else 3,
                       clock=time.perf_counter, collect=not tiny)
    load = os.getloadavg()[0]
    base = {"vocab": vocab_name, "lowercase": lowercase, "lines": len(texts), "bytes": n_bytes,
            "words": n_words, "loadavg_1m": round(load, 2), "rounds": rounds, "clock": "process_time"}
    hf_best = min(tb["hf-encode_batch"])
    hf_sent = min(ts["hf-encode_batch"]) / len(sents)
    points = []
    for name, t in tb.items():
        s = _summary(t)
        points.append(Point(
            name=f"{name}/{vocab_name}/batch", peer=name.startswith("hf"),
            config={**base, "mode": "batch", "threads": 1},
            quality={"id_mismatches_vs_hf": 0 if name.startswith("hf") else mismatched},
            cost={**s, "MB_per_s": n_bytes / 1e6 / s["best_s"], "words_per_s": n_words / s["best_s"],
                  "speedup_vs_hf": hf_best / s["best_s"],
                  "speedup_vs_hf_median": statistics.median(tb["hf-encode_batch"]) / s["median_s"],
                  "wall_speedup_vs_hf": (min(wall["hf-encode_batch"]) / min(wall[name])) if name in wall else None,
                  "build_s": build_s if name.startswith("fast") else None}))
    for name, t in ts.items():
        us = min(t) / len(sents) * 1e6
        e_us = min(te[name]) / 2000 * 1e6
        points.append(Point(
            name=f"{name.replace('-encode_batch', '-encode')}/{vocab_name}/per-sentence",
            peer=name.startswith("hf"), config={**base, "mode": "per-sentence", "sentences": len(sents)},
            quality={"id_mismatches_vs_hf": 0 if name.startswith("hf") else mismatched},
            cost={"us_per_sentence": us, "median_us_per_sentence": statistics.median(t) / len(sents) * 1e6,
                  "us_per_empty_call": e_us, "speedup_vs_hf": hf_sent * 1e6 / us}))
    return points


def adversarial_vocab(max_len: int) -> list[str]:
    """MaxMatch's worst case: on a^n it walks the long a...ab path from every position before
    backing off to the one-character token, n^2/2 steps; LinMaxMatch follows failure links."""
    return ["[UNK]", "a", "##a", "a" * max_len + "b", "##" + "a" * max_len + "b"]


def bench_word_scaling(*, tiny: bool) -> list[Point]:
    lengths = [16, 64, 256] if tiny else [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    big = 10 ** 6
    points = []
    families = {"adversarial": (adversarial_vocab(max(lengths)), lambda n: "a" * n, False)}
    # (tiny: the smaller uncased vocab, to keep the CI smoke test short)
    mb = DATA / "vocab" / ("bert-base-uncased.txt" if tiny else "bert-base-multilingual-cased.txt")
    real_vocab = mb.read_text(encoding="utf-8").split("\n")[:-1]
    letters = "".join(ch for ch in " ".join(corpus(200_000)) if ch.isalpha())
    families["real-mbert"] = (real_vocab, lambda n: (letters * (1 + n // len(letters)))[:n], False)
    for fam, (vocab, make_word, lc) in families.items():
        toks = {a: WordPieceTokenizer(vocab, WordPieceConfig(lowercase=lc, algorithm=a,
                                                            max_input_chars_per_word=big))
                for a in ("linmaxmatch", "maxmatch")}
        for n in lengths:
            word = make_word(n)
            ids = {a: t.tokenize_word(word).ids.tolist() for a, t in toks.items()}
            assert ids["linmaxmatch"] == ids["maxmatch"], (fam, n)
            reps = max(1, min(2000, 200_000 // n))
            fns = {a: (lambda t=t: [t.tokenize_word(word) for _ in range(reps)]) for a, t in toks.items()}
            if n >= 4096 and fam == "adversarial":
                fns = {a: (lambda t=t: t.tokenize_word(word)) for a, t in toks.items()}
                reps = 1
            tt = interleaved(fns, 2 if tiny else 5, collect=not tiny)
            for a, t in tt.items():
                points.append(Point(name=f"{a}/{fam}/word-{n}", config={
                    "mode": "single-word", "family": fam, "algorithm": a, "word_chars": n,
                    "tokens": len(ids[a]), "loadavg_1m": round(os.getloadavg()[0], 2)},
                    quality={"same_ids_as_other_algorithm": 1},
                    cost={"us_per_word": min(t) / reps * 1e6}))
    return points


def plot(points: list[Point], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, mode, key in [(axes[0], "batch", "speedup_vs_hf"), (axes[1], "per-sentence", "speedup_vs_hf")]:
        ps = [p for p in points if p.config.get("mode") == mode]
        labels = [p.name.replace("/batch", "").replace("/per-sentence", "").replace("bert-base-", "")
                  for p in ps]
        vals = [p.cost[key] for p in ps]
        ax.barh(labels, vals, color=["tab:gray" if p.peer else "tab:blue" for p in ps])
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.1f}x", va="center", fontsize=8)
        ax.set_xlabel("speed vs HF tokenizers (same run, 1 thread)")
        ax.set_title(f"end-to-end {mode}")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "text_speed.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6, 4))
    for fam, style in [("adversarial", "-"), ("real-mbert", "--")]:
        for a, color in [("linmaxmatch", "tab:blue"), ("maxmatch", "tab:red")]:
            ps = sorted((p for p in points if p.config.get("family") == fam and p.config.get("algorithm") == a),
                        key=lambda p: p.config["word_chars"])
            if ps:
                ax.loglog([p.config["word_chars"] for p in ps], [p.cost["us_per_word"] for p in ps],
                          style, color=color, marker="o", ms=3, label=f"{a} ({fam})")
    ax.set_xlabel("word length (code points)")
    ax.set_ylabel("µs per word (tokenize_word)")
    ax.set_title("single-word WordPiece: linear vs quadratic")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "text_word_scaling.png", dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a seconds-long run (used by the tests)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text.jsonl")
    ap.add_argument("--plot", action="store_true", help="redraw docs/text_*.png from the points")
    args = ap.parse_args(argv)
    env = environment(extra_versions=["tokenizers"])
    env["threads"] = 1
    points = []
    for vocab_name, lc in VOCABS.items():
        if args.tiny and vocab_name != "bert-base-uncased":
            continue  # the CI smoke test runs one vocabulary
        points += bench_end_to_end(vocab_name, lc, tiny=args.tiny)
    points += bench_word_scaling(tiny=args.tiny)
    points = [stamp(p, "text", env) for p in points]
    write_jsonl(args.out, points)
    for p in points:
        if "speedup_vs_hf" in p.cost:
            print(f"{p.name:55s} {p.cost['speedup_vs_hf']:6.2f}x vs HF", file=sys.stderr)
    if args.plot:
        plot(points, ROOT / "docs")
    print(f"wrote {len(points)} points to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
