"""Training sweep for the filetype byte model: several sizes / recipes, picked on validation only.

Trains each configuration of `SWEEP` on the train split of a packed corpus (``pack_corpus``:
a compressed npz of the feature windows, train + val rows only), chooses its per-label
thresholds on val, exports it (``model.safetensors`` + ``model.json``) under
``OUT/<name>/``, and writes one JSONL point per configuration (val accuracy, val macro-F1
best-guess and high-confidence, parameters, multiply-adds per file, epochs, seconds).
The test split and ``magika_tests`` are never read here.

Configurations run as parallel processes (one per configuration) so that a GPU's idle
gaps between one small model's kernels are filled by the others; each fits its schedule
into ``--budget`` seconds (see ``TrainConfig.time_budget_s``).

    python benchmarks/bench_filetype_train.py --data .ftpack/corpus.npz --out /tmp/sweep --device cuda --budget 150
    python benchmarks/bench_filetype_train.py --tiny --out /tmp/sweep_tiny       # seconds, CPU, synthetic rows
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from paretoml.filetype.model import ModelConfig
from paretoml.frontier import atomic_write
from paretoml.filetype.train import TrainConfig, load_packed, train_arrays

BASE = dict(window=512, embed_dim=8, chunk=4, kernel=2, hidden=64, hidden2=96)  # the session-1 model
# name: (model settings, training settings). Training: batch 512, all files of each label per epoch.
SWEEP: dict[str, tuple[dict, dict]] = {
    "base_noaug": (BASE, dict(epochs=40, augment=0.0)),
    "base": (BASE, dict(epochs=40, augment=0.5)),
    "k3m": ({**BASE, "embed_dim": 16, "kernel2": 3, "mean_pool": True}, dict(epochs=40, augment=0.5)),
    "k3m60": ({**BASE, "embed_dim": 16, "kernel2": 3, "mean_pool": True}, dict(epochs=60, augment=0.5)),
    "k3m_long": ({**BASE, "embed_dim": 16, "kernel2": 3, "mean_pool": True}, dict(epochs=100, augment=0.5)),
    # session 6: the shipped architecture, trained longer (100 epochs beat 60 on val in session 5)
    "k3m_160": ({**BASE, "embed_dim": 16, "kernel2": 3, "mean_pool": True}, dict(epochs=160, augment=0.5)),
    # session 8: the shipped architecture over 1,024-byte windows (GPU; shipped as model="wide")
    "w1024k3m_160": ({**BASE, "window": 1024, "embed_dim": 16, "kernel2": 3, "mean_pool": True},
                     dict(epochs=160, augment=0.5)),
    "h96k2m": ({**BASE, "embed_dim": 16, "hidden": 96, "hidden2": 128, "kernel2": 2, "mean_pool": True},
               dict(epochs=60, augment=0.5)),
    "w1024": ({**BASE, "window": 1024}, dict(epochs=40, augment=0.5)),
    "w1024k3m": ({**BASE, "window": 1024, "embed_dim": 16, "kernel2": 3, "mean_pool": True}, dict(epochs=60, augment=0.5)),
    "w1024c8": ({**BASE, "window": 1024, "chunk": 8, "hidden": 96, "hidden2": 128, "kernel2": 2, "mean_pool": True},
                dict(epochs=60, augment=0.5)),
}
TINY = {"tiny_a": (dict(window=64, embed_dim=4, chunk=4, kernel=2, hidden=8, hidden2=8), dict(epochs=2, augment=0.5)),
        "tiny_b": (dict(window=64, embed_dim=4, chunk=4, kernel=2, hidden=8, hidden2=8, kernel2=2, mean_pool=True),
                   dict(epochs=2, augment=0.0))}


def macs_per_file(m: ModelConfig) -> int:
    """Multiply-adds of the two convolutions per file (embedding lookup, pooling, head excluded)."""
    p = m.window // m.chunk
    q = p - m.kernel + 1
    return 2 * p * m.chunk * m.embed_dim * m.kernel * m.hidden + 2 * (q - m.kernel2 + 1) * m.hidden * m.hidden2 * m.kernel2


def _tiny_data(n: int = 400) -> dict[str, np.ndarray]:
    """Synthetic packed rows with two learnable labels (for --tiny: checks the plumbing only)."""
    rng = np.random.default_rng(0)
    head = rng.integers(32, 127, (n, 1024)).astype(np.uint8)
    lab = rng.integers(0, 2, n).astype(np.int16)
    head[lab == 1, :4] = np.frombuffer(b"%PDF", np.uint8)
    return {"head": head, "head_len": np.full(n, 1024, np.int16), "tail": head.copy(),
            "tail_len": np.full(n, 1024, np.int16), "label": lab, "label_names": np.array(["pdf", "txt"]),
            "split": (np.arange(n) % 5 == 0).astype(np.uint8), "is_text": (lab == 1).astype(np.uint8)}


def run_one(name: str, data: dict, out: Path, device: str, budget: float, tiny: bool) -> dict:
    mkw, tkw = (TINY if tiny else SWEEP)[name]
    mc = ModelConfig(**mkw)
    cfg = TrainConfig(model=mc, batch_size=64 if tiny else 512, lr=4e-3, per_label_epoch=1500,
                      min_train=5 if tiny else 20, time_budget_s=budget, export_dtype="float16", device=device,
                      threads=1 if tiny else 2, **tkw)
    t0 = time.time()
    meta = train_arrays(data, out / name, cfg)
    n_params = sum(int(np.prod(v)) for v in _shapes(out / name))
    return {"name": name, "model_config": meta["model_config"], "train_config": meta["train_config"],
            "val_accuracy": meta["val_accuracy"], "val_macro_f1": meta["val_macro_f1"],
            "val_macro_f1_high_confidence": meta["val_macro_f1_high_confidence"], "params": n_params,
            "macs_per_file": macs_per_file(mc), "seconds": round(time.time() - t0, 1),
            "epochs_run": meta["train_config"]["epochs_run"], "device": device,
            "bytes": (out / name / "model.safetensors").stat().st_size}


def time_numpy(folders: dict[str, Path], rounds: int = 9, batch: int = 8) -> dict[str, float]:
    """Median µs per file of each exported model's numpy forward pass on this machine (one BLAS
    thread; interleaved rounds over fresh random tokens)."""
    from paretoml.filetype.model import load_model

    models = {n: load_model(f)[0] for n, f in folders.items()}
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(rounds):
        for n, m in models.items():
            x = rng.integers(0, 257, (batch, 2 * m.cfg.window)).astype(np.int16)
            m.probs(x)
            t0 = time.perf_counter()
            for _ in range(30):
                m.probs(x)
            times[n].append((time.perf_counter() - t0) / (30 * batch) * 1e6)
    return {n: round(float(np.median(v)), 1) for n, v in times.items()}


def _shapes(folder: Path):
    from paretoml.filetype.model import read_safetensors

    return [a.shape for a in read_safetensors(folder / "model.safetensors").values()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".ftpack/corpus.npz"), help="npz from pack_corpus")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ft_sweep"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds of training per configuration")
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--serial", action="store_true", help="one configuration at a time, in this process")
    ap.add_argument("--time-numpy", action="store_true",
                    help="only time the numpy forward pass of the models already under --out (one core; "
                         "adds numpy_us_per_file to sweep.jsonl)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # worker mode
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    table = TINY if args.tiny else SWEEP
    names = [n for n in (args.only.split(",") if args.only else table) if n]
    for n in names:
        if n not in table:
            raise SystemExit(f"unknown configuration {n!r}; known: {', '.join(table)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.time_numpy:
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(v) != "1":
                raise SystemExit(f"--time-numpy: set {v}=1 before starting (numpy reads it at import)")
        points = [json.loads(x) for x in (args.out / "sweep.jsonl").read_text().splitlines() if x]
        us = time_numpy({p["name"]: args.out / p["name"] for p in points})
        load = os.getloadavg()[0]
        for p in points:
            p["numpy_us_per_file"], p["numpy_loadavg_1m"] = us[p["name"]], round(load, 2)
            print(f"{p['name']:12s} {us[p['name']]:8.1f} µs/file (numpy, batch 8, load {load:.1f})")

        atomic_write(args.out / "sweep.jsonl", "".join(json.dumps(p) + "\n" for p in points))
        return 0
    if args.one:
        data = _tiny_data() if args.tiny else load_packed(args.data)
        point = run_one(args.one, data, args.out, args.device, args.budget, args.tiny)
        atomic_write(args.out / f"{args.one}.point.json", json.dumps(point) + "\n")
        return 0
    if args.serial:
        data = _tiny_data() if args.tiny else load_packed(args.data)
        for n in names:
            point = run_one(n, data, args.out, args.device, args.budget, args.tiny)
            atomic_write(args.out / f"{n}.point.json", json.dumps(point) + "\n")
    else:
        procs = []
        for n in names:
            cmd = [sys.executable, __file__, "--one", n, "--data", str(args.data), "--out", str(args.out),
                   "--device", args.device, "--budget", str(args.budget)] + (["--tiny"] if args.tiny else [])
            log = open(args.out / f"{n}.log", "w")
            procs.append((n, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())))
        for n, p in procs:
            if p.wait() != 0:
                print(f"{n}: failed, see {args.out / (n + '.log')}", file=sys.stderr)
    points = [json.loads((args.out / f"{n}.point.json").read_text()) for n in names
              if (args.out / f"{n}.point.json").exists()]

    atomic_write(args.out / "sweep.jsonl", "".join(json.dumps(p) + "\n" for p in points))
    print(f"{'config':12s} {'val acc':>8s} {'F1 best':>8s} {'F1 high':>8s} {'params':>8s} {'MACs':>7s} {'epochs':>6s} {'s':>6s}")
    for p in points:
        print(f"{p['name']:12s} {p['val_accuracy']:8.4f} {p['val_macro_f1']:8.4f} "
              f"{p['val_macro_f1_high_confidence']:8.4f} {p['params']:8d} {p['macs_per_file'] / 1e6:6.1f}M "
              f"{p['epochs_run']:6d} {p['seconds']:6.0f}")
    return 0 if len(points) == len(names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
