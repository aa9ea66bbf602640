"""Benchmark: paretoml.filetype vs magika vs libmagic, same files, same run, one core.

Quality (a) on the held-out test split of our corpus (split by source package) and (b) on
magika's own ``tests_data`` (``../shared/data/magika_tests``, evaluation only), plus the
confident-wrong rate on out-of-scope formats (TZif, LLVM bitcode: never trained on;
gettext .mo, terminfo, random bytes: held-out packages). Cost: files/s on one core
(interleaved rounds, median), cold start in a fresh process (median), model size.

    .venv/bin/python benchmarks/bench_filetype.py --corpus /tmp/ft_corpus
    .venv/bin/python benchmarks/bench_filetype.py --tiny --out /tmp/ft.jsonl   # seconds

Writes ``benchmarks/results/filetype.jsonl`` (one point per tool and dataset),
``benchmarks/results/filetype_per_type.jsonl`` (per-type precision/recall/F1) and
``docs/filetype_confusion.png`` / ``docs/filetype_frontier.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one core, before numpy loads BLAS

import numpy as np  # noqa: E402

from paretoml.frontier import Point, environment, read_jsonl, write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PARETOML_DATA", ROOT.parent / "shared" / "data"))
GENERIC = ("txt", "unknown")


# ----------------------------------------------------------------------------- tools

class Ours:
    name, peer = "paretoml", False

    def __init__(self, mode="high-confidence", model_dir=None, tag="paretoml"):
        from paretoml.filetype import Detector

        self.det = Detector(mode, model_dir=model_dir)
        self.name = f"{tag}[{mode}]"

    def labels(self, paths):
        return [r.label if r.ok else "error" for r in self.det.identify_paths(paths)]


class MagikaTool:
    peer = True

    def __init__(self, mode="high-confidence"):
        from magika import Magika, PredictionMode

        pm = {"high-confidence": PredictionMode.HIGH_CONFIDENCE, "best-guess": PredictionMode.BEST_GUESS,
              "medium-confidence": PredictionMode.MEDIUM_CONFIDENCE}[mode]
        self.m = Magika(prediction_mode=pm)
        self.name = f"magika[{mode}]"

    def labels(self, paths):
        return [str(r.output.label) if r.ok else "error" for r in self.m.identify_paths([Path(p) for p in paths])]


class LibMagic:
    name, peer = "libmagic", True

    def __init__(self):
        import magic

        from paretoml.filetype.corpus import _BINARY_MIME
        from paretoml.filetype.labels import KNOWLEDGE_BASE

        self.m = magic.Magic(mime=True)
        self.map: dict[str, str] = {}
        for lab, mimes in _BINARY_MIME.items():  # libmagic's MIME names, first claim wins
            for mm in mimes:
                if lab not in ("unknown", "oos", "npy", "pickle", "npz", "pytorch", "jar", "pythonbytecode"):
                    self.map.setdefault(mm, lab)
        for lab, i in KNOWLEDGE_BASE.items():
            self.map.setdefault(i.mime_type, lab)
        self.map.update({"text/plain": "txt", "application/octet-stream": "unknown", "text/x-script.python": "python",
                         "text/x-shellscript": "shell", "text/x-c": "c", "text/x-c++": "cpp", "text/html": "html",
                         "text/xml": "xml", "application/json": "json", "text/x-makefile": "makefile",
                         "text/x-tex": "latex", "text/x-perl": "perl", "text/x-php": "php", "text/x-ruby": "ruby",
                         "text/x-java": "java", "text/x-asm": "asm", "text/csv": "csv", "text/rtf": "rtf",
                         "image/x-ms-bmp": "bmp", "application/x-bzip2": "bzip", "application/x-dosexec": "pebin",
                         "application/vnd.microsoft.portable-executable": "pebin", "image/svg+xml": "svg",
                         "application/zip": "zip", "application/x-rar": "rar", "audio/x-wav": "wav",
                         "application/x-tcl": "tcl", "text/x-tcl": "tcl", "text/x-lua": "lua",
                         "application/javascript": "javascript", "text/javascript": "javascript",
                         "text/x-diff": "diff", "text/x-po": "po", "message/rfc822": "eml", "text/x-m4": "m4"})

    def labels(self, paths):
        out = []
        for p in paths:
            try:
                out.append(self.map.get(self.m.from_file(p), "unknown"))
            except Exception:  # noqa: BLE001 — libmagic errors count as a failed answer
                out.append("error")
        return out


# ----------------------------------------------------------------------------- data

def magika_tests(tiny: bool):
    base = DATA / "magika_tests"
    items = []
    for sub in ("basic", "mitra"):
        for d in sorted((base / sub).iterdir()) if (base / sub).is_dir() else []:
            for f in sorted(d.iterdir()):
                if f.is_file():
                    items.append((str(f), d.name))
    return items[::10] if tiny else items


def corpus_split(corpus: Path | None, split: str, tiny: bool, per_label: int = 10**9, new_only: bool = False,
                 session: int = 4):
    if corpus is None or not (corpus / "manifest.jsonl").exists():
        return []
    rows = [json.loads(x) for x in (corpus / "manifest.jsonl").read_text().splitlines()]
    if new_only:
        new = new_units(rows, session)
        from paretoml.filetype.corpus import split_unit

        rows = [r for r in rows if split_unit(r["source"]) in new]
    rows = [r for r in rows if r["split"] == split]
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        if seen.get(r["label"], 0) < (3 if tiny else per_label):
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            out.append((r["path"], r["label"]))
    return out


S7_WRITERS = ("gen:aud_speech/", "gen:aud7_", "gen:zip_infozip/", "gen:zip_7z/", "gen:lo_")


def new_units(rows, session: int = 4) -> set[str]:
    """Split units (projects) that only session `session`'s package lists bring (4: the MORE_*
    lists; 5: the S5_* lists, their PyPI sdists and the Debian source patches; 6: the S6_* lists;
    7: the session-7 writers — Info-ZIP, p7zip, lame/flac/oggenc/opusenc/sox/espeak-ng,
    LibreOffice — and the Windows wheels): no row of theirs comes from an earlier list, from this
    machine's installed files or from an earlier generator, so no model from before that session
    can have trained on them."""
    from paretoml.filetype import corpus as c
    from paretoml.filetype.corpus import split_unit

    debs, npms, pypis = {4: (c.MORE_DEBIAN_PACKAGES, c.MORE_NPM_PACKAGES, ()),
                         5: (c.S5_DEBIAN_PACKAGES, c.S5_NPM_PACKAGES, c.S5_PYPI_SDISTS),
                         6: (c.S6_DEBIAN_PACKAGES, c.S6_NPM_PACKAGES, c.S6_PYPI_SDISTS),
                         7: ((), (), ())}[session]
    more = {"debs:" + p for p in debs}
    more_npm = {split_unit("npm:" + p.lstrip("@").replace("/", "-") + "-0") for p in npms}
    norm = lambda n: re.sub(r"[-_.]+", "-", n.lower())  # noqa: E731 — PyPI's name normalisation
    more_py = {norm(p) for p in pypis}
    units: dict[str, bool] = {}
    for r in rows:
        u = split_unit(r["source"])
        is_new = (r["source"] in more or (r["source"].startswith("npm:") and u in more_npm)
                  or (r["source"].startswith("pypi:")
                      and norm(re.sub(r"-v?[0-9][^-]*$", "", r["source"][5:])) in more_py)
                  or (session == 5 and r["source"].startswith("debsrc:"))
                  or (session == 7 and (r["source"].startswith(S7_WRITERS)
                                        or re.search(r"-win(32|_amd64|_arm64)$", r["source"]) is not None)))
        units[u] = units.get(u, True) and is_new
    return {u for u, v in units.items() if v}


def prf(truth, pred, labels):
    """Per-label precision/recall/F1 over `labels` (predictions outside count as misses)."""
    t, p = np.array(truth), np.array(pred)
    res = {}
    for lab in labels:
        tp = int(((p == lab) & (t == lab)).sum())
        fp = int(((p == lab) & (t != lab)).sum())
        fn = int(((p != lab) & (t == lab)).sum())
        pr = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
        rc = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * pr * rc / (pr + rc) if tp else 0.0
        res[lab] = {"precision": pr, "recall": rc, "f1": f1, "support": tp + fn, "predicted": tp + fp}
    return res


def macro_f1_over(res: dict, labels) -> tuple[float, int]:
    """Mean F1 of `prf` results over the given labels that have test files, and how many there are
    (e.g. the types that both of our models and magika know, so a label one model lacks is left
    out instead of counting as its miss)."""
    f1 = [v["f1"] for k, v in res.items() if k in set(labels) and v["support"]]
    return (float(np.mean(f1)) if f1 else float("nan")), len(f1)


# ----------------------------------------------------------------------------- timing

def files_per_s(tools, paths, rounds):
    """Interleaved rounds over the same files; median files/s per tool."""
    times = {t.name: [] for t in tools}
    for _ in range(rounds):
        for t in tools:
            t0 = time.perf_counter()
            t.labels(paths)
            times[t.name].append(time.perf_counter() - t0)
    return {k: len(paths) / statistics.median(v) for k, v in times.items()}


_COLD = {
    "paretoml": "from paretoml.filetype import Detector; print(Detector().identify_path({f!r}).label)",
    "magika": "from pathlib import Path; from magika import Magika; print(Magika().identify_path(Path({f!r})).output.label)",
    "libmagic": "import magic; print(magic.from_file({f!r}, mime=True))",
}


def compile_bytecode() -> bool:
    """Byte-compile the paretoml package, as `pip install` does for an installed package (and did
    for magika and numpy here). Without it an editable install under PYTHONDONTWRITEBYTECODE (set
    on this machine) compiles every paretoml module from source in every fresh process: ~10 ms of
    the cold start that no wheel-installed peer pays. Returns whether every module compiled."""
    import compileall

    import paretoml

    return bool(compileall.compile_dir(os.path.dirname(paretoml.__file__), quiet=1))


def cold_start_ms(f: str, repeats: int) -> dict[str, float]:
    """A fresh `python -c` that imports, loads and identifies one file; median wall ms, interleaved
    (paretoml byte-compiled first, as an installed wheel is: `compile_bytecode`)."""
    compile_bytecode()
    res = {k: [] for k in [*_COLD, "paretoml-cli"]}
    cli = [sys.executable, "-m", "paretoml.cli", "filetype", "identify", f]
    for _ in range(repeats):
        for k, code in _COLD.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code.format(f=f)], capture_output=True, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            res[k].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        subprocess.run(cli, capture_output=True, check=False)
        res["paretoml-cli"].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in res.items()}


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/filetype.jsonl")
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/ft_corpus"))
    ap.add_argument("--plots", type=Path, default=None, help="folder for PNGs (default: docs/ unless --tiny)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-label", type=int, default=40, help="test files per label (magika is slow)")
    ap.add_argument("--speed-files", type=int, default=500, help="files in each timed round")
    ap.add_argument("--compare-model", type=Path, default=None,
                    help="another weights folder (e.g. the previously shipped model) measured on the same files, "
                         "as paretoml-cmp[mode]")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the frontier plot from the JSONL at --out (into --plots, default docs/)")
    ap.add_argument("--new-session", type=int, default=6, choices=(4, 5, 6, 7),
                    help="the 'new projects' subset: projects only that session's package lists bring")
    args = ap.parse_args(argv)
    if args.replot:
        try:
            points = read_jsonl(args.out)  # errors name the file and line
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_filetype --replot: {e}") from None
        plot_frontier([(p.name, p.peer, p.quality, p.cost) for p in points],
                      (args.plots or ROOT / "docs") / "filetype_frontier.png")
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for everyone
    env = environment("cpu")
    tools = [Ours("high-confidence")]
    peers_ok = True
    try:
        tools += [MagikaTool("high-confidence"), LibMagic()]
    except ImportError:
        peers_ok = False
    extra = [Ours("medium-confidence"), Ours("best-guess")] + ([MagikaTool("best-guess")] if peers_ok else [])
    if args.compare_model is not None:
        extra += [Ours(m, args.compare_model, "paretoml-cmp") for m in ("high-confidence", "medium-confidence",
                                                                         "best-guess")]
    sets = {"magika_tests": magika_tests(args.tiny),
            "corpus_test": corpus_split(args.corpus, "test", args.tiny, per_label=args.per_label),
            "oos": corpus_split(args.corpus, "oos", args.tiny, per_label=600)
                   + [x for x in corpus_split(args.corpus, "test", args.tiny) if x[1] == "unknown"],
            # test files of projects that only that session's package lists bring (never in an earlier corpus)
            "corpus_test_new": corpus_split(args.corpus, "test", args.tiny, per_label=args.per_label, new_only=True,
                                            session=args.new_session)}
    ours_labels = set(tools[0].det.labels)
    magika_labels = _magika_labels() if peers_ok else set()
    both = sorted(ours_labels & magika_labels - set(GENERIC))
    # with --compare-model: also the types that both of our models and magika know (labels added to one
    # model count as misses for the other in `both`; here they are left out)
    cmp_tools = [t for t in extra if t.name.startswith("paretoml-cmp")]
    common = sorted(set(both) & set(cmp_tools[0].det.labels)) if cmp_tools and both else []
    points, per_type = [], []
    preds: dict[tuple[str, str], list[str]] = {}
    for t in tools + extra:
        for ds, items in sets.items():
            if items:
                preds[(t.name, ds)] = t.labels([p for p, _ in items])
    timed = [p for p, _ in sets["corpus_test"] or sets["magika_tests"]]
    timed = timed[:: max(1, len(timed) // args.speed_files)][: args.speed_files]
    fps = files_per_s(tools + [t for t in extra if t.name == "paretoml-cmp[high-confidence]"], timed,
                      1 if args.tiny else args.rounds)
    cold = cold_start_ms(sets["magika_tests"][0][0], 1 if args.tiny else 15) if peers_ok else {}
    load = os.getloadavg()[0]
    sizes = _model_sizes(tools[0])
    for t in tools + extra:
        q, c = {}, {"loadavg_1m": load}
        items = sets["magika_tests"]
        if items:
            pr = preds[(t.name, "magika_tests")]
            q["magika_tests_correct"] = sum(a == b for a, (_, b) in zip(pr, items))
            q["magika_tests_total"] = len(items)
        for ds, sfx in (("corpus_test", ""), ("corpus_test_new", "_new")):
            items = sets[ds]
            if not items:
                continue
            truth = [lab for _, lab in items]
            pr = preds[(t.name, ds)]
            cover = both if both else sorted(ours_labels - set(GENERIC))
            r = prf(truth, pr, cover)
            q["macro_f1_both_cover" + sfx] = float(np.mean([v["f1"] for v in r.values() if v["support"]]))
            q["n_types_both_cover" + sfx] = sum(1 for v in r.values() if v["support"])
            if common:
                q["macro_f1_common" + sfx], q["n_types_common" + sfx] = macro_f1_over(r, common)
            r_all = prf(truth, pr, sorted(ours_labels - set(GENERIC)))
            q["macro_f1_our_types" + sfx] = float(np.mean([v["f1"] for v in r_all.values() if v["support"]]))
            q["min_precision_our_types" + sfx] = float(min(v["precision"] for v in r_all.values() if v["predicted"]))
            q["types_precision_ge_095" + sfx] = sum(1 for v in r_all.values()
                                                    if v["predicted"] and v["precision"] >= 0.95)
            q["types_predicted" + sfx] = sum(1 for v in r_all.values() if v["predicted"])
            q["accuracy" + sfx] = float(np.mean([a == b for a, b in zip(pr, truth)]))
            q["generic_output_rate" + sfx] = float(np.mean([a in GENERIC for a in pr]))
            q["test_files" + sfx] = len(items)
            for lab, v in r_all.items():
                per_type.append({"tool": t.name, "dataset": ds, "label": lab, **v})
        items = sets["oos"]
        if items:
            pr = preds[(t.name, "oos")]
            q["oos_confident_wrong_rate"] = float(np.mean([a not in (*GENERIC, "error") for a in pr]))
            q["oos_files"] = len(items)
        base = t.name.split("[")[0]
        if t.name in fps:
            c["files_per_s"] = fps[t.name]
        if base in cold and ("[" not in t.name or t.name.endswith("[high-confidence]")):
            c["cold_start_ms"] = cold.get(base, float("nan"))
            if base == "paretoml":
                c["cold_start_cli_ms"] = cold.get("paretoml-cli", float("nan"))
        c.update(sizes.get(base, {}))
        c["timed_files"] = len(timed)
        points.append(Point(t.name, config={"tiny": args.tiny, "corpus": str(args.corpus), "mode": t.name,
                                            "test_files_per_label": args.per_label},
                            quality=q, cost=c, peer=t.peer, benchmark="filetype", device=env["device"], threads=1,
                            versions=env["versions"], git_sha=env["git_sha"], date=env["date"]))
    write_jsonl(args.out, points)
    write_jsonl(args.out.with_name(args.out.stem + "_per_type.jsonl"),
                [Point(f"{d['tool']}:{d['dataset']}:{d['label']}",
                       config={"tool": d["tool"], "label": d["label"], "dataset": d["dataset"]},
                       quality={k: d[k] for k in ("precision", "recall", "f1")},
                       cost={"support": d["support"], "predicted": d["predicted"]},
                       peer=not d["tool"].startswith("paretoml"),
                       benchmark="filetype_per_type", device=env["device"], threads=1, git_sha=env["git_sha"],
                       date=env["date"]) for d in per_type])
    plots = args.plots or (None if args.tiny else ROOT / "docs")
    if plots is not None and sets["corpus_test"]:
        _plots(plots, sets["corpus_test"], preds[(tools[0].name, "corpus_test")], points)
    for p in points:
        print(json.dumps({"variant": p.name, **p.quality, **p.cost}), file=sys.stderr)
    return points


def _magika_labels() -> set[str]:
    from magika import Magika

    return {str(x) for x in Magika().get_output_content_types()}


def _model_sizes(ours) -> dict[str, dict]:
    from paretoml.filetype import detector

    d = Path(detector.__file__).parent / "data"
    out = {"paretoml": {"model_bytes": sum(f.stat().st_size for f in d.glob("model.*")), "params": ours.det.model.n_params}}
    try:
        import magika

        onnx = list(Path(magika.__file__).parent.rglob("model.onnx"))
        if onnx:
            out["magika"] = {"model_bytes": onnx[0].stat().st_size}
    except ImportError:
        pass
    return out


def _plots(folder: Path, items, pred, points):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    truth = [lab for _, lab in items]
    labs = sorted(set(truth) | set(pred))
    ix = {lab: i for i, lab in enumerate(labs)}
    cm = np.zeros((len(labs), len(labs)))
    for a, b in zip(truth, pred):
        cm[ix[a], ix[b]] += 1
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(16, 16))
    ax.imshow(cm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(labs)), labs, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labs)), labs, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (held-out test split, by package)")
    ax.set_title("paretoml.filetype confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(folder / "filetype_confusion.png", dpi=110)
    plt.close(fig)
    plot_frontier([(p.name, p.peer, p.quality, p.cost) for p in points], folder / "filetype_frontier.png")


def plot_frontier(rows, out: Path) -> None:
    """Macro-F1 vs files/s, one marker per tool and mode, a tool's modes joined by a line (they
    share its files/s, timed on its high-confidence variant). rows: (name, peer, quality, cost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = {n.split("[")[0]: c["files_per_s"] for n, _, _, c in rows if c.get("files_per_s")}
    tools: dict[str, list] = {}
    for name, peer, q, _ in rows:
        tool, mode = (name.split("[") + [""])[:2]
        if tool in speed and q.get("macro_f1_both_cover") is not None:
            tools.setdefault(tool, []).append((mode.rstrip("]"), speed[tool], q["macro_f1_both_cover"], peer))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    short = {"high-confidence": "high", "medium-confidence": "medium", "best-guess": "best", "": ""}
    for tool, pts in tools.items():
        pts.sort(key=lambda t: t[2])
        xs, ys = [t[1] for t in pts], [t[2] for t in pts]
        line, = ax.plot(xs, ys, marker="s" if pts[0][3] else "o", ms=7, lw=1)
        ax.annotate(tool, (xs[-1], ys[-1]), fontsize=8, xytext=(6, 6), textcoords="offset points",
                    color=line.get_color())
        for mode, x, y, _ in pts:
            ax.annotate(short.get(mode, mode), (x, y), fontsize=7, xytext=(6, -9), textcoords="offset points",
                        color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("files/s, one core (higher is better)")
    ax.set_ylabel("macro-F1 on held-out split, types both cover")
    ax.set_title("content-type detection: quality vs speed (same run; modes of one tool share its speed)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
