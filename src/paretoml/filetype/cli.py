"""`paretoml filetype identify | corpus | train` (imports cheaply; the work is imported on use)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    ft = sub.add_parser("filetype", help="content-type detection from bytes (identify, corpus, train)",
                        description="Identify files' content types with a small byte model; build a "
                                    "labelled corpus offline; train and export the model.")
    fsub = ft.add_subparsers(dest="filetype_command", metavar="ACTION")
    fsub.required = True

    p = fsub.add_parser("identify", help="print the content type of files",
                        description="Print each file's content type: `path: Description (group)`.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders; '-' reads stdin")
    p.add_argument("-r", "--recursive", action="store_true", help="identify the files inside folders")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON list of results")
    fmt.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    p.add_argument("-s", "--score", action="store_true", help="append the score")
    p.add_argument("-i", "--mime", action="store_true", help="print the MIME type instead of the description")
    p.add_argument("--mode", default="high-confidence",
                   choices=["high-confidence", "medium-confidence", "best-guess"])
    p.add_argument("--no-dereference", action="store_true", help="report symlinks as symlinks")
    p.add_argument("--model", default="default", choices=["default", "wide"],
                   help="shipped weights: default (512-byte windows) or wide (1,024, ~half the files/s)")
    p.add_argument("--model-dir", type=Path, default=None, help="weights folder (overrides --model)")
    p.set_defaults(func=_run_identify)

    c = fsub.add_parser("corpus", help="build a labelled training corpus from real files (offline)",
                        description="Harvest this machine, unpacked Debian/npm packages and files written "
                                    "by real encoders; label by name AND content; split by package.")
    c.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    c.add_argument("--debs", type=Path, default=None, help="folder of .deb files to unpack")
    c.add_argument("--fetch", action="store_true", help="first `apt-get download` the package lists into --debs, "
                                                         "`npm pack` into --npm (and sdists into --pypi if given)")
    c.add_argument("--npm", type=Path, default=None, help="folder of `npm pack` tarballs to unpack")
    c.add_argument("--pypi", type=Path, default=None, help="folder of PyPI source distributions (.tar.gz) to unpack; "
                                                                     "with --fetch, `pip download`s PYPI_SDISTS")
    c.add_argument("--debsrc", type=Path, default=None,
                   help="folder of Debian source packages' .debian.tar.xz (their debian/patches are harvested as "
                        "diffs); with --fetch, downloads DEBIAN_SOURCE_PATCHES")
    c.add_argument("--extend", action="store_true",
                   help="add the packages in --debs/--npm to an existing corpus's train split (val/test unchanged); "
                        "with --fetch, downloads the EXTRA_* package lists")
    c.add_argument("--max-per-label", type=int, default=1500)
    c.add_argument("--text-max-per-label", type=int, default=None,
                   help="cap for text labels (default: --max-per-label); binary labels keep --max-per-label")
    c.add_argument("--keep-splits", type=Path, default=None, metavar="MANIFEST",
                   help="an earlier corpus's manifest.jsonl: projects keep their split there (per label)")
    c.add_argument("--no-generate", action="store_true", help="skip the encoder-generated files")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_run_corpus)

    t = fsub.add_parser("train", help="train the byte model on a corpus and export it",
                        description="Train on the train split, choose per-label thresholds on val "
                                    "(≥ 99%% precision), write model.safetensors + model.json.")
    t.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="a corpus folder, or an npz from pack_corpus")
    t.add_argument("--out", type=Path, required=True, help="output folder for the weights")
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--window", type=int, default=512)
    t.add_argument("--hidden", type=int, default=64)
    t.add_argument("--hidden2", type=int, default=128)
    t.add_argument("--embed-dim", type=int, default=8)
    t.add_argument("--kernel2", type=int, default=1, help="second convolution's width (1: pointwise)")
    t.add_argument("--mean-pool", action="store_true", help="also mean-pool the second layer's features")
    t.add_argument("--augment", type=float, default=0.0, help="probability of a random snippet for text files")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--per-label-epoch", type=int, default=400)
    t.add_argument("--time-budget", type=float, default=None, help="seconds; lowers the epoch count to fit")
    t.add_argument("--export-dtype", choices=("float32", "float16"), default="float32")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init-from", type=Path, default=None, metavar="MODEL_DIR",
                   help="start from an exported model (same architecture) instead of random weights: fine-tuning")
    t.set_defaults(func=_run_train)


def _expand(paths: list[str], recursive: bool):
    """Yield paths; with `recursive`, folders are walked (symlinked folders are not followed,
    so symlink loops cannot recurse forever)."""
    for p in paths:
        if recursive and p != "-" and os.path.isdir(p) and not os.path.islink(p):
            for dirpath, dirnames, filenames in os.walk(p, followlinks=False, onerror=None):
                dirnames.sort()
                for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                    yield os.path.join(dirpath, name)
        else:
            yield p


def _read_stdin_ends(block: int) -> bytes:
    """stdin's first and last `block` bytes (streamed: memory stays O(block))."""
    src = sys.stdin.buffer
    head = src.read(2 * block)
    if len(head) < 2 * block:
        return head
    tail = b""
    while True:
        b = src.read(1 << 16)
        if not b:
            break
        tail = (tail + b)[-block:]
    # keep the first `block` bytes and the last `block` bytes; features look at nothing else
    return head[:block] + (head[block:] + tail)[-block:] if tail else head


def _line(r, args) -> str:
    if not r.ok:
        return f"{r.path}: error: {r.message or r.status}"
    what = r.mime_type if args.mime else f"{r.description} ({r.group})"
    s = f"{r.path}: {what}"
    if args.score:
        s += f" {round(100 * r.score)}%"
    if r.overwrite_reason:
        from paretoml.filetype.labels import info

        i = info(r.model_label)
        s += f" [Low-confidence model best-guess: {i.description} ({i.group}), score={r.score:.3f}]"
    return s


def _run_identify(args) -> int:
    # The model's matmuls are tiny: a BLAS thread pool buys nothing here, and starting one
    # costs ~60 ms of a ~130 ms cold start. Set before numpy is first imported; a user's own
    # setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import json

    from paretoml.filetype import Detector, DetectorConfig

    det = Detector(config=DetectorConfig(mode=args.mode, no_dereference=args.no_dereference, model=args.model),
                   model_dir=args.model_dir)
    results = []
    paths = list(_expand(args.paths, args.recursive))
    files = [p for p in paths if p != "-"]
    by_path = iter(det.identify_paths(files))
    for p in paths:
        if p == "-":
            r = det.identify_bytes(_read_stdin_ends(det.feature_config.block_size))
        else:
            r = next(by_path)
        results.append(r)
        if args.jsonl:
            print(json.dumps(r.asdict()))
        elif not args.json:
            print(_line(r, args))
    if args.json:
        from paretoml.cli import print_json

        print_json([r.asdict() for r in results])
    return 0 if all(r.ok for r in results) else 1


def _run_corpus(args) -> int:
    import json
    import logging

    from paretoml.filetype.corpus import (DEBIAN_PACKAGES, DEBIAN_SOURCE_PATCHES, EXTRA_DEBIAN_PACKAGES,
                                          EXTRA_NPM_PACKAGES, MORE_DEBIAN_PACKAGES, MORE_NPM_PACKAGES, NPM_PACKAGES,
                                          PYPI_SDISTS, S5_DEBIAN_PACKAGES, S5_NPM_PACKAGES, S5_PYPI_SDISTS,
                                          S6_DEBIAN_PACKAGES, S6_NPM_PACKAGES, S6_PYPI_SDISTS, S7_PYPI_SDISTS,
                                          S7_WINDOWS_WHEELS,
                                          CorpusConfig, build_corpus, extend_corpus, fetch_debian,
                                          fetch_debian_patches, fetch_pypi, fetch_windows_wheels)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.fetch:
        if args.debs is None or args.npm is None:
            raise ValueError("filetype corpus --fetch: also give --debs DIR and --npm DIR to download into")
        # --extend keeps session 2's recipe (its lists, train split only); the main build takes every list
        debs = EXTRA_DEBIAN_PACKAGES if args.extend else (DEBIAN_PACKAGES + EXTRA_DEBIAN_PACKAGES + MORE_DEBIAN_PACKAGES
                                                          + S5_DEBIAN_PACKAGES + S6_DEBIAN_PACKAGES)
        npms = EXTRA_NPM_PACKAGES if args.extend else (NPM_PACKAGES + EXTRA_NPM_PACKAGES + MORE_NPM_PACKAGES
                                                       + S5_NPM_PACKAGES + S6_NPM_PACKAGES)
        fetch_debian(list(debs), args.debs)
        import subprocess

        args.npm.mkdir(parents=True, exist_ok=True)
        for p in npms:
            if not list(args.npm.glob(p.lstrip("@").replace("/", "-") + "-[0-9]*.tgz")):
                subprocess.run(["npm", "pack", p], cwd=args.npm, capture_output=True, timeout=300)
        if args.pypi is not None and not args.extend:
            fetch_pypi(PYPI_SDISTS + S5_PYPI_SDISTS + S6_PYPI_SDISTS + S7_PYPI_SDISTS, args.pypi)
            fetch_windows_wheels(S7_WINDOWS_WHEELS, args.pypi)  # session 7: PE files of other toolchains
        if args.debsrc is not None and not args.extend:
            fetch_debian_patches(DEBIAN_SOURCE_PATCHES, args.debsrc)
    if args.extend:
        added = extend_corpus(args.out_dir, debs=args.debs, npm=args.npm, pypi=args.pypi, seed=args.seed)
        print(json.dumps(added, sort_keys=True))
        return 0
    cfg = CorpusConfig(max_per_label=args.max_per_label, generate=not args.no_generate, seed=args.seed,
                       text_max_per_label=args.text_max_per_label,
                       keep_splits=str(args.keep_splits) if args.keep_splits else None)
    counts = build_corpus(args.out_dir, cfg, debs=args.debs, npm=args.npm, pypi=args.pypi, debsrc=args.debsrc)
    print(json.dumps(counts, sort_keys=True))
    return 0


def _run_train(args) -> int:
    import json
    import logging

    from paretoml.filetype.model import ModelConfig
    from paretoml.filetype.train import TrainConfig, train_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    mc = ModelConfig(window=args.window, hidden=args.hidden, hidden2=args.hidden2, embed_dim=args.embed_dim,
                     kernel2=args.kernel2, mean_pool=args.mean_pool)
    cfg = TrainConfig(model=mc, epochs=args.epochs, threads=args.threads, seed=args.seed, augment=args.augment,
                      batch_size=args.batch_size, lr=args.lr, per_label_epoch=args.per_label_epoch,
                      time_budget_s=args.time_budget, export_dtype=args.export_dtype, device=args.device,
                      init_from=None if args.init_from is None else str(args.init_from))
    meta = train_model(args.corpus, args.out, cfg)
    print(json.dumps({"labels": len(meta["labels"]), "val_accuracy": meta["val_accuracy"], "val_macro_f1": meta["val_macro_f1"],
                      "train_seconds": meta["train_seconds"]}))
    return 0
