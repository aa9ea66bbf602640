"""A/B probe of the decode step's fast paths on random-init models (speed only; GPU).

    PYTHONPATH=src python benchmarks/bench_decoding_probe.py --out probe.jsonl

For each switch set of `decode.FAST` (cumulative) it checks the logits against the plain torch
path and times: graphed forwards of the 16×512 float32 target at T = 1 and T = 6 and of the
1×768 draft at T = 1 and 2, the target-only and draft-only decode loops (ms/token), a greedy
speculative round at γ = 5 (ms/round, host pipelining on/off) and the ratio
(γ·t_draft + t_target) / t_round that bounds measured/theoretical speed-up, and the 1.1B bf16
Llama shape's decode loop. Also sweeps the skinny float32 kernel's tile configs per GEMM shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from paretoml.frontier import atomic_write
from paretoml.infer import decode, speculative
from paretoml.models.gpt import GPT, GPTConfig


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(fn, repeats=5, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def graph_ms(fn, n=50):
    """ms per call of fn, n calls captured in one graph, replayed."""
    g = decode.Graphed(lambda: [fn() for _ in range(n)], True)
    return 1e3 * timed(g, 5) / n


OFF = {"float_mask": False, "fused_rope_kv": False, "fused_swiglu": False, "triton_attention": False,
       "skinny_fp32": False, "skinny_m": (2, 8)}
_K = {"float_mask": True, "fused_rope_kv": True, "fused_swiglu": True}
VARIANTS = [
    ("plain", {}),
    ("mask", {"float_mask": True}),
    ("mask+rope_kv+swiglu", _K),
    ("+attention", {**_K, "triton_attention": True}),
    ("+attention+skinny M 2-8", {**_K, "triton_attention": True, "skinny_fp32": True}),
    ("+attention+skinny M 1-8", {**_K, "triton_attention": True, "skinny_fp32": True, "skinny_m": (1, 8)}),
]


VARIANT_IDX = [0, 2, 3, 4]  # --all-variants: every one


def set_fast(v):
    decode.FAST.clear()
    decode.FAST.update({**OFF, **v})


@torch.no_grad()
def parity(out):
    """Logits with every fast path vs the plain path: fp32 Llama, bf16 GQA Llama, fp32 GPT-2 shape."""
    dev = torch.device("cuda")
    models = {"llama-fp32": (GPTConfig.llama(vocab_size=65, n_layer=3, n_head=8, n_embd=512, block_size=256), torch.float32),
              "llama-gqa-bf16": (GPTConfig.llama(vocab_size=300, n_layer=2, n_head=8, n_kv_head=2, n_embd=256,
                                                 block_size=256), torch.bfloat16),
              "gpt2-fp32": (GPTConfig(vocab_size=65, n_layer=2, n_head=4, n_embd=128, block_size=256), torch.float32),
              "draft-hs96": (GPTConfig.llama(vocab_size=65, n_layer=1, n_head=8, n_embd=768, block_size=256), torch.float32)}
    for name, (cfg, dt) in models.items():
        torch.manual_seed(0)
        m = GPT(cfg).to(dev, dt).eval()
        prompt = torch.randint(0, cfg.vocab_size, (2, 40), device=dev)
        res = {}
        for tag, v in (("plain", {}), ("fast", VARIANTS[-1][1])):
            set_fast(v)
            lm = decode.StaticLM(m, 2, 100)
            zero = torch.zeros(2, dtype=torch.long, device=dev)
            a = lm.forward(prompt, zero).float()
            start = torch.tensor([40, 37], device=dev)
            b = lm.forward(prompt[:, :6], start).float()  # T = 6 at different positions per row
            c = lm.forward(prompt[:, :1], start + 6).float()
            res[tag] = (a, b, c, lm.k[:, :, :, :47].float().clone(), lm.v[:, :, :, :47].float().clone())
        errs = [float((x - y).norm() / y.norm()) for x, y in zip(res["fast"], res["plain"])]
        agree = float((res["fast"][1].argmax(-1) == res["plain"][1].argmax(-1)).float().mean())
        rec = {"what": "parity", "model": name, "rel_err_prefill_T6_T1_k_v": errs, "argmax_agree_T6": agree}
        out.append(rec)
        log(rec)


@torch.no_grad()
def skinny_sweep(out):
    from paretoml.infer import _decode_kernels as K

    dev = torch.device("cuda")
    shapes = [(1536, 512), (512, 512), (3072, 512), (512, 1536), (65, 512)]
    cfgs = K.SKINNY_CONFIGS
    for N, K_ in shapes:
        w = torch.randn(N, K_, device=dev)
        for M in (1, 6):
            x = torch.randn(M, K_, device=dev)
            ref = x.double() @ w.double().t()
            t_cublas = graph_ms(lambda: torch.nn.functional.linear(x, w))
            best = None
            for c in cfgs:
                y = K.skinny_linear(x, w, None, c)
                err = float((y.double() - ref).norm() / ref.norm())
                t = graph_ms(lambda: K.skinny_linear(x, w, None, c))
                if best is None or t < best[0]:
                    best = (t, c, err)
            rec = {"what": "skinny", "N": N, "K": K_, "M": M, "cublas_us": 1e3 * t_cublas, "best_us": 1e3 * best[0],
                   "best_cfg": best[1], "rel_err": best[2]}
            out.append(rec)
            log(rec)


@torch.no_grad()
def variants(out):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    target = GPT(GPTConfig.llama(vocab_size=65, n_layer=16, n_head=8, n_embd=512, block_size=512)).to(dev).eval()
    draft = GPT(GPTConfig.llama(vocab_size=65, n_layer=1, n_head=8, n_embd=768, block_size=512)).to(dev).eval()
    with torch.device(dev):
        big = GPT(GPTConfig.llama(vocab_size=32000, n_layer=22, n_head=32, n_kv_head=4, n_embd=2048, d_ff=5632,
                                  block_size=2048)).to(torch.bfloat16).eval()
    N, L, g = 128, 64, 5
    S = L + N + 7
    prompt = torch.randint(0, 65, (1, L), device=dev)
    bprompt = torch.randint(0, 32000, (1, 32), device=dev)
    for vname, v in [VARIANTS[i] for i in VARIANT_IDX]:
        set_fast(v)
        rec = {"what": "variant", "variant": vname}
        for name, m in (("target", target), ("draft", draft)):
            lm = decode.StaticLM(m, 1, S)
            start = torch.full((1,), 40, dtype=torch.long, device=dev)
            for T in ((1, 6) if name == "target" else (1, 2)):
                tok = torch.randint(0, 65, (1, T), device=dev)
                rec[f"{name}_T{T}_ms"] = graph_ms(lambda: lm.forward(tok, start).argmax(-1), 20)
            dec = decode.Decoder(m, 1, S, decode.DecodeConfig(max_new_tokens=N))
            rec[f"{name}_loop_ms"] = 1e3 * timed(lambda: dec.generate(prompt)) / N
        for pipe in (1, 2):
            speculative.PIPELINE = pipe
            sd = speculative.SpeculativeDecoder(target, draft, 1, S, speculative.SpeculativeConfig(gamma=g, max_new_tokens=N))
            res = sd.generate(prompt)
            t = timed(lambda: sd.generate(prompt))
            rec[f"round_ms_pipe{pipe}"] = 1e3 * t / res.rounds
        budget = g * rec["draft_loop_ms"] + rec["target_loop_ms"]
        rec["ratio_bound_pipe1"] = budget / rec["round_ms_pipe1"]
        rec["ratio_bound_pipe2"] = budget / rec["round_ms_pipe2"]
        if "skinny" not in vname:
            dec = decode.Decoder(big, 1, 32 + N, decode.DecodeConfig(max_new_tokens=N))
            rec["big_loop_ms"] = 1e3 * timed(lambda: dec.generate(bprompt), 3) / N
            rec["big_tokens_per_s"] = 1e3 / rec["big_loop_ms"]
            del dec
        out.append(rec)
        log(json.dumps(rec))


@torch.no_grad()
def kernel_table(out):
    """Kernels of one T = 1 and one T = 6 pass of the target, plain vs every fast path."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device("cuda")
    torch.manual_seed(0)
    target = GPT(GPTConfig.llama(vocab_size=65, n_layer=16, n_head=8, n_embd=512, block_size=512)).to(dev).eval()
    S = 199

    for (vname, v), T in [(a, T) for a in (VARIANTS[0], VARIANTS[4]) for T in (1, 6)]:
        set_fast(v)
        lm = decode.StaticLM(target, 1, S)
        tok = torch.randint(0, 65, (1, T), device=dev)
        start = torch.full((1,), 40, dtype=torch.long, device=dev)
        for _ in range(3):
            lm.forward(tok, start)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            lm.forward(tok, start)
            torch.cuda.synchronize()
        rows = []
        for e in prof.key_averages():
            if e.device_time_total > 0:
                rows.append((e.device_time_total, e.count, e.key[:90]))
        rows.sort(reverse=True)
        rec = {"what": f"profile_T{T}", "variant": vname, "n_kernels": sum(r[1] for r in rows),
               "top": [(round(t, 1), c, k) for t, c, k in rows[:14]]}
        out.append(rec)
        log(json.dumps(rec, indent=0))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="probe.jsonl")
    ap.add_argument("--parts", default="parity,skinny,variants,kernels")
    ap.add_argument("--all-variants", action="store_true")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench_decoding_probe.py: needs a CUDA GPU (it times CUDA-graphed GPU kernels); "
                 "on CPU run benchmarks/bench_decoding.py --tiny instead")
    if a.all_variants:
        VARIANT_IDX[:] = range(len(VARIANTS))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = []
    for part, fn in (("kernels", kernel_table), ("parity", parity), ("skinny", skinny_sweep), ("variants", variants)):
        if part in a.parts:
            t0 = time.perf_counter()
            try:
                fn(out)
            except Exception:
                import traceback

                traceback.print_exc()
            log(f"== {part} {time.perf_counter() - t0:.1f} s")
            atomic_write(a.out, "".join(json.dumps(r) + "\n" for r in out))  # a cut-off run keeps a whole file
    for r in out:
        if r["what"] == "variant":
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
