"""Faster LM decoding: our fast target-only loop, speculative decoding (plain and DistillSpec
drafts), CALM early exit and a confidence cascade, side by side with HF transformers
`generate` / assisted generation on the same weights, and against the HBM bound.

    python benchmarks/bench_decoding.py --tiny                       # seconds, CPU (CI)
    python benchmarks/bench_decoding.py --device cuda --out benchmarks/results/decoding_h100.jsonl

Full run (one GPU call): trains a char-level Llama-style target (12 layers) and a 1-layer draft on
tinyshakespeare, distils a copy of the draft (DistillSpec), trains CALM exit heads, then measures
tokens/s at batch 1 and 8 (median of repeats, graph capture excluded and reported), acceptance
rate α, the draft/target step cost ratio c, the theoretical speed-up from (α, γ, c), token
agreement with the target's greedy output, the target's NLL of the generated continuations, and
for a random-init 1.1B Llama shape our loop vs HF `generate` vs the HBM bound.
Each phase appends its points, so a late failure keeps the earlier ones.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from paretoml.datasets import CharTokenizer, lm_splits, load_tinyshakespeare
from paretoml.frontier import Point, environment, write_jsonl
from paretoml.frontier.harness import stamp
from paretoml.infer import cascade as cas
from paretoml.infer import decode, distill, early_exit, speculative
from paretoml.models.gpt import GPT, GPTConfig

BENCH = "decoding"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median wall seconds of fn() over `repeats` (after `warmup`), and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    ts = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


# --- training -----------------------------------------------------------------------------


def train_lm(model: GPT, data: torch.Tensor, *, seconds: float, max_steps: int, batch_size: int, seq_len: int,
             lr: float, device, seed: int = 0, loss_fn=None, extra=None) -> dict:
    """AdamW with warm-up + cosine decay, bf16 autocast on CUDA; stops at `seconds` or `max_steps`.
    loss_fn(x, y) replaces the plain LM loss (CALM's exit losses); `extra`: a module trained along."""
    g = torch.Generator().manual_seed(seed)
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    model.train()
    t0, step, loss = time.perf_counter(), 0, torch.tensor(0.0)
    while step < max_steps and time.perf_counter() - t0 < seconds:
        frac = min(1.0, (time.perf_counter() - t0) / seconds, step / max_steps)
        for grp in opt.param_groups:
            grp["lr"] = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(frac * 3.14159)).item()))
        ix = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=g)[:, None] + torch.arange(seq_len)
        x, y = data[ix].to(device, non_blocking=True), data[ix + 1].to(device, non_blocking=True)
        with amp:
            loss = model(x, y).loss if loss_fn is None else loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
    model.eval()
    return {"train_steps": step, "train_s": round(time.perf_counter() - t0, 1), "final_train_loss": float(loss.detach())}


@torch.no_grad()
def val_loss(model: GPT, data: torch.Tensor, device, seq_len: int, n_batches: int = 8) -> float:
    g = torch.Generator().manual_seed(123)
    out = []
    for _ in range(n_batches):
        ix = torch.randint(len(data) - seq_len - 1, (16,), generator=g)[:, None] + torch.arange(seq_len)
        out.append(float(model(data[ix].to(device), data[ix + 1].to(device)).loss))
    return sum(out) / len(out)


@torch.no_grad()
def continuation_nll(target: GPT, prompts: torch.Tensor, new: torch.Tensor) -> float:
    """The target's mean NLL (nats/token) of generated continuations `new` (B, N) after `prompts` (B, L)."""
    x = torch.cat([prompts, new], 1)
    logits = target(x[:, :-1]).logits[:, prompts.shape[1] - 1 :].float()
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), new.flatten()))


# --- HF transformers mapping --------------------------------------------------------------


def to_hf_llama(model: GPT):
    """The same weights in transformers' LlamaForCausalLM (q/k rows permuted: GPT rotates
    interleaved pairs, HF rotates halves). Raises ImportError without transformers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.cfg
    assert c.mlp == "swiglu" and c.norm == "rmsnorm" and c.pos == "rope" and not c.bias
    hc = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.hidden,
                     num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.kv_heads,
                     max_position_embeddings=c.block_size, rms_norm_eps=1e-6, rope_theta=c.rope_base,
                     tie_word_embeddings=c.tie_embeddings, attention_bias=False, mlp_bias=False, head_dim=c.head_dim,
                     bos_token_id=None, eos_token_id=None, pad_token_id=0)
    p = next(model.parameters())
    with torch.device("meta"):
        hf = LlamaForCausalLM(hc)
    hs, nh, nkv, h = c.head_dim, c.n_head, c.kv_heads, c.hidden
    perm = torch.cat([torch.arange(0, hs, 2), torch.arange(1, hs, 2)]).to(p.device)

    def rope_rows(w, heads):
        return w.view(heads, hs, -1)[:, perm].reshape(heads * hs, -1)

    sd = {"model.embed_tokens.weight": model.wte.weight, "model.norm.weight": model.ln_f.weight,
          "lm_head.weight": model.lm_head.weight}
    for i, b in enumerate(model.blocks):
        q, k, v = b.attn.qkv.weight.split([nh * hs, nkv * hs, nkv * hs])
        pre = f"model.layers.{i}."
        sd.update({pre + "self_attn.q_proj.weight": rope_rows(q, nh), pre + "self_attn.k_proj.weight": rope_rows(k, nkv),
                   pre + "self_attn.v_proj.weight": v, pre + "self_attn.o_proj.weight": b.attn.proj.weight,
                   pre + "mlp.gate_proj.weight": b.ffn.up.weight[:h], pre + "mlp.up_proj.weight": b.ffn.up.weight[h:],
                   pre + "mlp.down_proj.weight": b.ffn.down.weight, pre + "input_layernorm.weight": b.ln_1.weight,
                   pre + "post_attention_layernorm.weight": b.ln_2.weight})
    hf.load_state_dict({k: v.detach().clone().contiguous() for k, v in sd.items()}, strict=True, assign=True)
    # Rebuild the rotary buffers off the meta device (built on the CPU, moved below; the
    # `device=` argument is gone after transformers 5.17).
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config=hc)
    return hf.to(device=p.device, dtype=p.dtype).eval()


def hf_generate(hf, prompt: torch.Tensor, n_new: int, assistant=None, gamma: int | None = None):
    kw = dict(max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, pad_token_id=0)
    if assistant is not None:
        kw["assistant_model"] = assistant
        if gamma is not None:
            assistant.generation_config.num_assistant_tokens = gamma
            assistant.generation_config.num_assistant_tokens_schedule = "constant"
            assistant.generation_config.assistant_confidence_threshold = 0.0
    return hf.generate(prompt, **kw)[:, prompt.shape[1] :]


def word_right(gen: torch.Tensor, length: torch.Tensor, truth: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """(N,) bool: an output completes the word right. gen / truth (N, T) ids; length / L (N,): the
    output's and the text's letters + boundary character. Right = same length and the same first
    L ids (the letters and the boundary character itself)."""
    same = (gen == truth) | (torch.arange(gen.shape[1])[None, :] >= L[:, None])
    return same.all(1) & (length == L)


# --- settings -----------------------------------------------------------------------------


def settings(tiny: bool, device, profile: str = "") -> dict:
    if profile == "cpu":  # small models trained on 2 CPU cores in a few minutes
        return dict(target=GPTConfig.llama(vocab_size=65, n_layer=6, n_head=4, n_embd=128, block_size=256, dropout=0.1),
                    draft=GPTConfig.llama(vocab_size=65, n_layer=1, n_head=4, n_embd=128, block_size=256),
                    t_seconds=150, t_steps=3000, d_seconds=30, d_steps=1000, batch=32, seq=128, lr=3e-3,
                    distill_steps=40, exit_steps=100, prompt_len=32, n_new=48, gammas=[2, 3, 4], repeats=3,
                    gamma_b8=3, gamma_sampled=3,
                    n_cal=300, cal_new=24, n_calm=10, big=None, hf_new=32, dtype=torch.float32, cascade_n=4000,
                    epsilon=0.1, cal_thresholds=[0.9, 0.7, 0.5, 0.3, 0.2, 0.1])
    if tiny:
        return dict(target=GPTConfig.llama(vocab_size=65, n_layer=6, n_head=2, n_embd=32, d_ff=64, block_size=128),
                    draft=GPTConfig.llama(vocab_size=65, n_layer=1, n_head=2, n_embd=32, d_ff=64, block_size=128),
                    t_seconds=2, t_steps=20, d_seconds=1, d_steps=10, batch=8, seq=64, lr=3e-3,
                    distill_steps=3, exit_steps=3, prompt_len=16, n_new=12, gammas=[2, 3, 4], repeats=1,
                    gamma_b8=3, gamma_sampled=3,
                    n_cal=4, cal_new=6, n_calm=1, big=None, hf_new=8, dtype=torch.float32, cascade_n=200,
                    calm_configs=[("softmax", 2), ("classifier", 2)], cal_thresholds=[0.9, 0.5])
    big = GPTConfig.llama(vocab_size=32000, n_layer=22, n_head=32, n_kv_head=4, n_embd=2048, d_ff=5632, block_size=2048)
    return dict(target=GPTConfig.llama(vocab_size=65, n_layer=16, n_head=8, n_embd=512, block_size=512, dropout=0.2),
                draft=GPTConfig.llama(vocab_size=65, n_layer=1, n_head=8, n_embd=768, block_size=512),
                t_seconds=75, t_steps=4000, d_seconds=15, d_steps=2000, batch=64, seq=256, lr=1.5e-3,
                distill_steps=600, exit_steps=300, prompt_len=64, n_new=128, gammas=[3, 4, 5, 6], repeats=5,
                gamma_b8=5, gamma_sampled=4, n_cal=1000, cal_new=64, n_calm=10, big=big, hf_new=64, dtype=torch.float32, cascade_n=8000)


# --- phases -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.s = settings(args.tiny, self.device, args.profile)
        for kv in filter(None, args.set.split(",")):  # e.g. --set t_seconds=1500,d_seconds=120
            key, _, val = kv.partition("=")
            if key not in self.s or not isinstance(self.s[key], (int, float)) or isinstance(self.s[key], bool):
                raise ValueError(f"bench_decoding --set: {key!r} is not a numeric setting; numeric ones: "
                                 f"{sorted(k for k, v in self.s.items() if isinstance(v, (int, float)))}")
            self.s[key] = type(self.s[key])(float(val)) if isinstance(self.s[key], int) else float(val)
        self.env = environment(args.device, ["transformers"])
        self.points: list[Point] = []
        self.load = os.getloadavg()[0]

    def add(self, name, config, quality, cost, peer=False):
        cost = {**cost, "loadavg_1m": os.getloadavg()[0]}
        self.points.append(stamp(Point(name, config, quality, cost, peer, BENCH), BENCH, self.env))
        log(f"  {name}: {quality} {cost}")

    def flush(self):
        write_jsonl(self.args.out, self.points)

    def phase(self, name, fn):
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            fn()
        except Exception:  # a benchmark keeps what it measured so far; the traceback says what broke
            traceback.print_exc()
            self.add(f"error-{name}", {"phase": name}, {}, {"failed": 1.0})
        log(f"   ({time.perf_counter() - t0:.1f} s)")
        self.flush()

    # -- models
    def train(self):
        s, dev = self.s, self.device
        text = load_tinyshakespeare()
        self.tok = CharTokenizer.from_text(text)
        self.train_ids, self.val_ids = lm_splits(self.tok.encode(text))
        torch.manual_seed(0)
        self.target = GPT(s["target"]).to(dev)
        # CALM: the target is trained with its exits (weighted per-layer LM losses, weights ∝ depth),
        # so that intermediate layers can answer confidently; its last exit is the plain LM head
        # and half of the tokens simulate an exit (after layer 4, 6, …) whose state is propagated to the
        # later layers' keys/values, as at decoding time, so the model learns to read propagated states
        self.heads = early_exit.ExitHeads(self.target)
        L = s["target"].n_layer
        sim = early_exit.EarlyExitConfig(min_layer=2 if self.args.tiny else 4, exit_every=2)
        g_exit = torch.Generator().manual_seed(3)

        def calm_loss(x, y):
            exits = early_exit.random_exits(x.shape, L, sim, 0.5, g_exit, x.device)
            return early_exit.exit_loss(self.target, self.heads, x, y, exits=exits)[0]
        info_t = train_lm(self.target, self.train_ids, seconds=s["t_seconds"], max_steps=s["t_steps"],
                          batch_size=s["batch"], seq_len=s["seq"], lr=s["lr"], device=dev, extra=self.heads,
                          loss_fn=calm_loss)
        self.heads.eval()
        torch.manual_seed(1)
        self.draft = GPT(s["draft"]).to(dev)
        info_d = train_lm(self.draft, self.train_ids, seconds=s["d_seconds"], max_steps=s["d_steps"],
                          batch_size=s["batch"], seq_len=s["seq"], lr=2 * s["lr"], device=dev, seed=1)
        self.info = {"target": info_t, "draft": info_d}
        self.vl = {"target": val_loss(self.target, self.val_ids, dev, s["seq"]),
                   "draft": val_loss(self.draft, self.val_ids, dev, s["seq"])}
        g = torch.Generator().manual_seed(123)
        ix = torch.randint(len(self.val_ids) - s["seq"] - 1, (16,), generator=g)[:, None] + torch.arange(s["seq"])
        with torch.no_grad():
            self.exit_val = early_exit.exit_loss(self.target, self.heads, self.val_ids[ix].to(dev),
                                                 self.val_ids[ix + 1].to(dev))[1].tolist()
        log(f"  trained: {self.info} val {self.vl} per-exit val {[round(v, 3) for v in self.exit_val]}")

    def distill(self):
        s = self.s
        gen = 64 if not self.args.tiny else 16
        # greedy-matched DistillSpec: forward KL to the target's argmax (τ → 0) on the target's greedy
        # continuations (the contexts a draft sees in greedy speculative decoding), 3/4 generated
        # sampled-matched: total variation (1 − α directly) at temperature 1 on the draft's own samples
        recipes = {
            "distilled": distill.DistillSpecConfig(divergence="fkl", target_temperature=0.0, sample_temperature=0.0,
                                                   sample_model="target", on_policy_fraction=0.75,
                                                   steps=s["distill_steps"], batch_size=32, prompt_len=32, gen_len=gen,
                                                   lr=1e-3),
            "distilled_tvd": distill.DistillSpecConfig(divergence="tvd", on_policy_fraction=0.5, steps=s["distill_steps"],
                                                       batch_size=32, prompt_len=32, gen_len=gen, lr=5e-4),
        }
        self.distill_info = {}
        for name, cfg in recipes.items():
            model = copy.deepcopy(self.draft)
            t0 = time.perf_counter()
            res = distill.distill_draft(self.target, model, self.train_ids, cfg)
            setattr(self, name, model)
            self.distill_info[name] = {"steps": cfg.steps, "seconds": round(time.perf_counter() - t0, 1),
                                       "first_loss": res.losses[0], "last_loss": res.losses[-1],
                                       "divergence": cfg.divergence, "target_temperature": cfg.target_temperature,
                                       "sample_model": cfg.sample_model, "sample_temperature": cfg.sample_temperature,
                                       "generated_fraction": cfg.on_policy_fraction, "lr": cfg.lr}
            self.vl[name] = val_loss(model, self.val_ids, self.device, s["seq"])
        # control: the plain draft trained on data for as many more steps (is the gain distillation or training?)
        self.plain_long = copy.deepcopy(self.draft)
        info = train_lm(self.plain_long, self.train_ids, seconds=1e9, max_steps=s["distill_steps"], batch_size=32,
                        seq_len=32 + gen, lr=5e-4, device=self.device, seed=2)
        self.distill_info["plain_long"] = {**info, "what": "plain draft, same extra steps on data"}
        self.vl["plain_long"] = val_loss(self.plain_long, self.val_ids, self.device, s["seq"])
        log(f"  distilled: {self.distill_info} val {self.vl}")
        if self.args.save_dir:  # trained weights, safetensors (no pickle)
            from safetensors.torch import save_model

            Path(self.args.save_dir).mkdir(parents=True, exist_ok=True)
            for name in ("target", "draft", "distilled", "distilled_tvd"):
                save_model(getattr(self, name), str(Path(self.args.save_dir) / f"{name}.safetensors"))

    def cast(self):
        dt = self.s["dtype"]
        self.target32 = copy.deepcopy(self.target).float()  # quality is scored in float32
        for m in (self.target, self.draft, self.distilled, self.distilled_tvd, self.plain_long, self.heads):
            m.to(dt)

    def prompts(self, n, length, offset=0, part=None):
        """n validation windows; part 0 / 1: only the first / second half of the split (disjoint text)."""
        g = torch.Generator().manual_seed(7 + offset)
        half = len(self.val_ids) // 2
        lo, hi = (0, len(self.val_ids)) if part is None else (part * half, (part + 1) * half)
        ix = lo + torch.randint(hi - lo - length - 1, (n,), generator=g)
        return (self.val_ids[ix[:, None] + torch.arange(length)]).to(self.device)

    # -- speculative decoding
    def speculative(self):
        s, dev = self.s, self.device
        N, L = s["n_new"], s["prompt_len"]
        S = L + N + max(s["gammas"]) + 1
        self.speed = {}
        base_cfg = {"target": {"n_layer": s["target"].n_layer, "n_embd": s["target"].n_embd},
                    "n_new": N, "prompt_len": L, "dtype": str(s["dtype"]).replace("torch.", "")}
        for B in (1, 8):
            prompts = self.prompts(B, L)
            dec_cfg = decode.DecodeConfig(max_new_tokens=N)
            t0 = time.perf_counter()
            dec = decode.Decoder(self.target, B, S, dec_cfg)
            capture_s = time.perf_counter() - t0
            t, ref = timed(lambda: dec.generate(prompts), dev, s["repeats"])
            self.speed[("target", B)] = B * N / t
            nll = continuation_nll(self.target32, prompts, ref) if B == 8 else None
            self.add(f"target-only-b{B}", {**base_cfg, "method": "target-only", "batch": B},
                     {"agreement": 1.0, **({"target_nll": nll} if nll is not None else {})},
                     {"tokens_per_s": B * N / t, "ms_per_token": 1e3 * t / N, "capture_s": capture_s})
            self.ref = getattr(self, "ref", {})
            self.ref[B] = ref
            dd = decode.Decoder(self.draft, B, S, dec_cfg)
            td, _ = timed(lambda: dd.generate(prompts), dev, s["repeats"])
            self.speed[("draft", B)] = B * N / td
            self.add(f"draft-only-b{B}", {**base_cfg, "method": "draft-only", "batch": B}, {},
                     {"tokens_per_s": B * N / td, "ms_per_token": 1e3 * td / N})
        self.c = self.speed[("target", 1)] / self.speed[("draft", 1)]  # draft step time / target step time
        self.anatomy(S)
        best = {}
        drafts = (("plain", self.draft, s["gammas"]), ("distilled", self.distilled, s["gammas"]),
                  ("plain_long", self.plain_long, s["gammas"][1:-1]),
                  ("distilled_tvd", self.distilled_tvd, s["gammas"][1:-1]))
        for name, dr, gammas in drafts:
            for g in gammas:
                for B in ((1, 8) if g == s["gamma_b8"] and name in ("plain", "distilled") else (1,)):
                    prompts = self.prompts(B, L)
                    cfg = speculative.SpeculativeConfig(gamma=g, max_new_tokens=N)
                    t0 = time.perf_counter()
                    sd = speculative.SpeculativeDecoder(self.target, dr, B, S, cfg)
                    capture_s = time.perf_counter() - t0
                    t, res = timed(lambda: sd.generate(prompts), dev, s["repeats"])
                    tps = B * N / t
                    speedup = tps / self.speed[("target", B)]
                    theo = speculative.theoretical_speedup(res.acceptance_rate, g, self.c)
                    agree = float((res.tokens == self.ref[B]).float().mean())
                    self.add(f"speculative-{name}-g{g}-b{B}",
                             {**base_cfg, "method": "speculative", "draft": name, "gamma": g, "batch": B,
                              "temperature": 0.0},
                             {"agreement": agree, "acceptance_rate": res.acceptance_rate,
                              "tokens_per_round": res.tokens_per_round},
                             {"tokens_per_s": tps, "speedup_vs_target": speedup, "theoretical_speedup": theo,
                              "fraction_of_theoretical": speedup / theo, "cost_ratio_c": self.c,
                              "ms_per_round": 1e3 * t / res.rounds, "rounds": res.rounds, "capture_s": capture_s})
                    if B == 1:
                        best[name] = max(best.get(name, (0, 0)), (speedup, g))
        self.best = best
        # sampled decoding (temperature 1; exact in distribution, tested on CPU), one γ for every draft
        g = s["gamma_sampled"]
        prompts = self.prompts(1, L)
        sampled = {}
        for name, dr in (("target-only", None), ("plain", self.draft), ("distilled_tvd", self.distilled_tvd),
                         ("distilled", self.distilled)):
            gen = torch.Generator(device=dev).manual_seed(5)
            if dr is None:
                dec = decode.Decoder(self.target, 1, S, decode.DecodeConfig(max_new_tokens=N, temperature=1.0))
                t, out = timed(lambda: dec.generate(prompts, generator=gen), dev, s["repeats"])
                alpha = None
            else:
                sd = speculative.SpeculativeDecoder(self.target, dr, 1, S,
                                                    speculative.SpeculativeConfig(gamma=g, max_new_tokens=N, temperature=1.0))
                alphas = []

                def run():
                    r = sd.generate(prompts, generator=gen)
                    alphas.append(r.acceptance_rate)
                    return r
                t, res = timed(run, dev, s["repeats"])
                out, alpha = res.tokens, statistics.mean(alphas)
            sampled[name] = N / t
            nll = continuation_nll(self.target32, prompts, out)
            self.add(f"sampled-{name}-b1", {**base_cfg, "method": "speculative" if dr else name, "draft": name,
                                           "gamma": g if dr else None, "temperature": 1.0, "batch": 1},
                     {"target_nll": nll, **({"acceptance_rate": alpha} if alpha is not None else {})},
                     {"tokens_per_s": N / t, "speedup_vs_target": N / t / sampled["target-only"]})
        sp_ = {k: v / sampled["target-only"] for k, v in sampled.items()}
        self.add("summary-distillspec", {"distill": self.distill_info, "train": self.info, "val_loss": self.vl,
                                         "gamma_sampled": g},
                 {"best_speedup_plain": best["plain"][0], "best_speedup_distilled": best["distilled"][0],
                  "distilled_over_plain": best["distilled"][0] / best["plain"][0],
                  "best_speedup_plain_long": best["plain_long"][0],
                  "distilled_over_plain_long": best["distilled"][0] / best["plain_long"][0],
                  "sampled_speedup_plain": sp_["plain"], "sampled_speedup_distilled_tvd": sp_["distilled_tvd"],
                  "sampled_speedup_distilled": sp_["distilled"],
                  "sampled_distilled_tvd_over_plain": sp_["distilled_tvd"] / sp_["plain"]},
                 {"best_gamma_plain": best["plain"][1], "best_gamma_distilled": best["distilled"][1]})

    def anatomy(self, S):
        """Where a round's time goes: graphed forwards of the target at T = 1 and T = γ+1 and of the
        draft at T = 1 and 2 (batch 1), each replayed alone."""
        dev = self.device
        if dev.type != "cuda":
            return
        out = {}
        for name, m in (("target", self.target), ("draft", self.draft)):
            lm = decode.StaticLM(m, 1, S)
            for T in ((1, 2, 4, 6, 8) if name == "target" else (1, 2)):
                tok = torch.randint(0, m.cfg.vocab_size, (1, T), device=dev)
                start = torch.full((1,), 40, dtype=torch.long, device=dev)
                with torch.no_grad():
                    gr = decode.Graphed(lambda: lm.forward(tok, start).argmax(-1), True)
                    t, _ = timed(lambda: [gr() for _ in range(50)], dev, 5)
                out[f"{name}_T{T}_ms"] = 1e3 * t / 50
        self.add("anatomy-b1", {"method": "anatomy", "what": "one graphed forward + argmax, batch 1"}, {}, out)

    def fastpaths(self):
        """A/B of the step's fast paths on the trained models (batch 1): every `decode.FAST` switch
        off and speculative rounds one at a time (the previous session's loop) vs the defaults —
        target-only and draft-only loops, the DistillSpec draft at γ = gamma_b8, and the ratio
        (γ·t_draft + t_target) / t_round that measured/theoretical speed-up cannot exceed."""
        s, dev = self.s, self.device
        N, L, g = s["n_new"], s["prompt_len"], s["gamma_b8"]
        S = L + N + max(s["gammas"]) + 1
        prompts = self.prompts(1, L)
        default, pipe = dict(decode.FAST), speculative.PIPELINE
        plain = {**default, "float_mask": False, "fused_rope_kv": False, "fused_swiglu": False, "triton_attention": False,
                 "skinny_fp32": False}
        try:
            for tag, fast, depth in (("plain", plain, 1), ("plain+pipeline", plain, pipe), ("fast", default, 1),
                                     ("fast+pipeline", default, pipe)):
                decode.FAST.clear()
                decode.FAST.update(fast)
                speculative.PIPELINE = depth
                dec_cfg = decode.DecodeConfig(max_new_tokens=N)
                dt_ = decode.Decoder(self.target, 1, S, dec_cfg)
                dd = decode.Decoder(self.distilled, 1, S, dec_cfg)
                tt, _ = timed(lambda: dt_.generate(prompts), dev, s["repeats"])
                td, _ = timed(lambda: dd.generate(prompts), dev, s["repeats"])
                sd = speculative.SpeculativeDecoder(self.target, self.distilled, 1, S,
                                                    speculative.SpeculativeConfig(gamma=g, max_new_tokens=N))
                t, res = timed(lambda: sd.generate(prompts), dev, s["repeats"])
                c = td / tt
                theo = speculative.theoretical_speedup(res.acceptance_rate, g, c)
                status = {str(d): st for d, (_, st) in decode._KERNELS.items()}  # which Triton kernels passed
                self.add(f"fastpaths-{tag}-b1", {"method": "fastpaths-ab", "variant": tag, "fast": fast, "kernels": status,
                                                 "pipeline": depth, "draft": "distilled", "gamma": g, "batch": 1},
                         {"acceptance_rate": res.acceptance_rate},
                         {"target_ms_per_token": 1e3 * tt / N, "draft_ms_per_token": 1e3 * td / N, "cost_ratio_c": c,
                          "ms_per_round": 1e3 * t / res.rounds, "speedup_vs_target": tt / t,
                          "theoretical_speedup": theo, "fraction_of_theoretical": tt / t / theo,
                          "round_budget_ratio": (g * td + tt) / N / (t / res.rounds)})
        finally:
            decode.FAST.clear()
            decode.FAST.update(default)
            speculative.PIPELINE = pipe

    def hf(self):
        s, dev = self.s, self.device
        try:
            hf_t, hf_d = to_hf_llama(self.target), to_hf_llama(self.draft)
        except ImportError:
            log("  transformers not installed: HF peers skipped")
            return
        N, L = s["hf_new"], s["prompt_len"]
        prompt = self.prompts(1, L)
        reps = 2 if not self.args.tiny else 1
        t, out = timed(lambda: hf_generate(hf_t, prompt, N), dev, reps)
        agree = float((out[0] == self.ref[1][0, :N]).float().mean())
        self.add("hf-generate-b1", {"method": "hf-generate", "batch": 1, "n_new": N}, {"agreement": agree},
                 {"tokens_per_s": N / t, "our_speedup_over_hf": self.speed[("target", 1)] / (N / t)}, peer=True)
        g = self.best["plain"][1]
        t2, out2 = timed(lambda: hf_generate(hf_t, prompt, N, hf_d, g), dev, reps)
        agree = float((out2[0] == self.ref[1][0, :N]).float().mean())
        self.add("hf-assisted-b1", {"method": "hf-assisted", "draft": "plain", "gamma": g, "batch": 1, "n_new": N},
                 {"agreement": agree}, {"tokens_per_s": N / t2, "speedup_vs_hf_generate": t / t2}, peer=True)
        del hf_t, hf_d

    def big(self):
        s, dev = self.s, self.device
        if s["big"] is None or dev.type != "cuda":
            return
        torch.manual_seed(0)
        with torch.device(dev):
            m = GPT(s["big"]).to(torch.bfloat16).eval()
        n_params = sum(p.numel() for p in m.parameters())
        N, L = 128, 32
        prompt = torch.randint(0, s["big"].vocab_size, (1, L), device=dev)
        # measured copy bandwidth (read + write bytes), as METHOD.md asks
        a = torch.empty(2 ** 30, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        tc, _ = timed(lambda: b.copy_(a), dev, 10, warmup=3)
        bw = 2 * a.numel() / tc
        del a, b
        bytes_tok = 2 * n_params  # weights read once per token; the KV cache (< 0.1%) is ignored
        bound = bw / bytes_tok
        t0 = time.perf_counter()
        dec = decode.Decoder(m, 1, L + N, decode.DecodeConfig(max_new_tokens=N))
        capture_s = time.perf_counter() - t0
        t, ours = timed(lambda: dec.generate(prompt), dev, 3)
        cfg = {"model": "llama-1.1B-shape (random init)", "params": n_params, "dtype": "bfloat16", "batch": 1,
               "n_new": N, "bandwidth_GBps": bw / 1e9}
        self.add("big-target-only-b1", {**cfg, "method": "target-only", "fast": dict(decode.FAST)}, {},
                 {"tokens_per_s": N / t, "hbm_bound_tokens_per_s": bound, "fraction_of_hbm_bound": N / t / bound,
                  "capture_s": capture_s})
        del dec
        default = dict(decode.FAST)  # A/B: every fast path off (the previous session's step)
        try:
            decode.FAST.update({"float_mask": False, "fused_rope_kv": False, "fused_swiglu": False,
                                "triton_attention": False, "skinny_fp32": False})
            dec = decode.Decoder(m, 1, L + N, decode.DecodeConfig(max_new_tokens=N))
            tp, plain_out = timed(lambda: dec.generate(prompt), dev, 3)
            self.add("big-target-only-plain-b1", {**cfg, "method": "target-only", "fast": dict(decode.FAST)},
                     {"agreement_with_fast": float((plain_out == ours).float().mean())},
                     {"tokens_per_s": N / tp, "fraction_of_hbm_bound": N / tp / bound})
            del dec
        finally:
            decode.FAST.clear()
            decode.FAST.update(default)
        try:
            hf = to_hf_llama(m)
        except ImportError:
            return
        del m
        torch.cuda.empty_cache()
        n_hf = 32
        th, out = timed(lambda: hf_generate(hf, prompt, n_hf), dev, 2)
        agree = float((out[0] == ours[0, :n_hf]).float().mean())
        self.add("big-hf-generate-b1", {**cfg, "method": "hf-generate", "n_new": n_hf}, {"agreement": agree},
                 {"tokens_per_s": n_hf / th, "fraction_of_hbm_bound": n_hf / th / bound,
                  "our_speedup_over_hf": (N / t) / (n_hf / th)}, peer=True)
        del hf
        torch.cuda.empty_cache()

    def calm(self):
        """CALM on the target trained with its exits: LTT calibration (Hoeffding–Bentkus, fixed
        sequence over decreasing λ) on calibration prompts from the first half of the validation
        text, then batch-1 wall-clock and consistency on test prompts from the second half."""
        s, dev = self.s, self.device
        heads = self.heads
        N, P = s["cal_new"], s["prompt_len"]
        cal_prompts = self.prompts(s["n_cal"], P, offset=1, part=0)
        test_prompts = self.prompts(s["n_calm"], P, offset=2, part=1)
        eps, delta = s.get("epsilon", 0.05), 0.1
        lams = s.get("cal_thresholds", [0.999, 0.998, 0.995, 0.99, 0.98, 0.97, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6,
                                        0.5, 0.4, 0.3])
        S = P + N
        dec = decode.Decoder(self.target, 1, S, decode.DecodeConfig(max_new_tokens=N))
        min_layer = 2 if self.args.tiny else 4
        # CALM's learned confidence: classifiers for "this exit's token = the full model's" (model frozen)
        t0 = time.perf_counter()
        heads.float()
        clf = early_exit.train_exit_classifiers(self.target32, heads, self.train_ids, steps=s["exit_steps"],
                                                batch_size=32, seq_len=min(128, s["seq"]))
        heads.to(s["dtype"])
        clf_info = {"steps": s["exit_steps"], "seconds": round(time.perf_counter() - t0, 1),
                    "first_loss": clf[0], "last_loss": clf[-1]}
        log(f"  exit classifiers: {clf_info}")
        for measure, every in s.get("calm_configs", [("softmax", 4), ("classifier", 4)]):
            base = early_exit.EarlyExitConfig(max_new_tokens=N, measure=measure, min_layer=min_layer, exit_every=every)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no threshold certified" is recorded in the points
                cal = early_exit.calibrate(self.target, heads, cal_prompts, base, epsilon=eps, delta=delta,
                                           thresholds=lams, batch_size=1024)
            cal_s = time.perf_counter() - t0
            for lam, risk, p, lay in zip(cal.thresholds, cal.risks, cal.p_values, cal.mean_layers):
                self.add(f"calm-cal-{measure}-e{every}-lambda{lam}",
                         {"method": "calm-calibration", "measure": measure, "threshold": lam, "n_cal": len(cal_prompts),
                          "min_layer": min_layer, "exit_every": every, "epsilon": eps, "delta": delta},
                         {"consistency": 1 - risk, "p_value": p, "certified": float(p <= delta)},
                         {"mean_layers": lay, "layer_fraction": lay / s["target"].n_layer})
            # the certified threshold, and the last one tested (the first not certified) for the trade-off
            for tag, lam_i in (("certified", cal.threshold), ("aggressive", cal.thresholds[-1])):
                cfg = replace(base, threshold=lam_i)
                runner = early_exit._Runner(self.target, heads, 1, S, cfg)
                tf, tc, agree, cons, lay = [], [], [], [], []
                for pr in test_prompts:
                    pr = pr[None]
                    lengths = torch.tensor([pr.shape[1]], device=dev)
                    a, full = timed(lambda: dec.generate(pr), dev, 3)
                    b, res = timed(lambda: early_exit._decode(runner, pr, lengths, cfg), dev, 3)
                    forced = early_exit._decode(runner, pr, lengths, cfg, forced=full)
                    tf.append(a)
                    tc.append(b)
                    agree.append(float((res.tokens == full).float().mean()))
                    cons.append(float((forced.tokens == full).float().mean()))
                    lay.append(res.mean_layers)
                self.add(f"calm-{measure}-e{every}-{tag}-b1",
                         {"method": "calm", "threshold": lam_i, "epsilon": eps, "delta": delta, "min_layer": min_layer,
                          "exit_every": every,
                          "training": "joint exit losses (weights ∝ depth), half the tokens with simulated exits",
                          "n_cal": len(cal_prompts), "calibration_s": cal_s, "measure": measure,
                          "classifier_training": clf_info,
                          "n_test": len(test_prompts), "per_exit_val_loss": self.exit_val},
                         {"consistency": sum(cons) / len(cons), "agreement_free_running": sum(agree) / len(agree),
                          "calibration_consistency": 1 - cal.risks[cal.thresholds.index(lam_i)]
                          if lam_i in cal.thresholds else 1.0},
                         {"mean_layers": sum(lay) / len(lay), "layer_fraction": sum(lay) / len(lay) / s["target"].n_layer,
                          "tokens_per_s": N / statistics.median(tc), "full_depth_tokens_per_s": N / statistics.median(tf),
                          "speedup_vs_full": statistics.median(tf) / statistics.median(tc)})

    def cascade(self):
        """Next-character prediction on validation text: draft answers, defers to the target."""
        s, dev = self.s, self.device
        n, T = s["cascade_n"], 128
        g = torch.Generator().manual_seed(11)
        ix = torch.randint(len(self.val_ids) - T - 1, (n,), generator=g)[:, None] + torch.arange(T)
        x, y = self.val_ids[ix].to(dev), self.val_ids[ix[:, -1] + 1].to(dev)

        def model_fn(m):
            def f(inp):
                with torch.no_grad():
                    return torch.cat([m(inp[i : i + 256]).logits[:, -1].float() for i in range(0, len(inp), 256)])
            return f

        def prefix_fn(layers):  # the target's first `layers` layers + that exit's head (trained jointly)
            m, heads = self.target, self.heads

            def f(inp):
                out = []
                with torch.no_grad():
                    for i in range(0, len(inp), 256):
                        xb = inp[i : i + 256]
                        h, rope = m.embed(xb), m.rope(0, xb.shape[1])
                        for blk in m.blocks[:layers]:
                            h, _ = blk(h, rope)
                        out.append(heads.logits(m, layers - 1, h[:, -1]).float())
                return torch.cat(out)
            return f

        large = model_fn(self.target)
        half = n // 2
        acc_large_cal = float((large(x[:half]).argmax(-1) == y[:half]).float().mean())
        acc_large = float((large(x[half:]).argmax(-1) == y[half:]).float().mean())
        L = s["target"].n_layer
        # the framing (the 1-layer DistillSpec draft as the small model) and, beside it, a small
        # model of a size between: the target's first quarter / half with its exit head
        smalls = [("", model_fn(self.distilled), ("max_prob", "margin", "entropy", "learned"), "distilled draft (1 layer)")]
        smalls += [(f"exit{k}-", prefix_fn(k), ("max_prob", "margin"), f"target's first {k} of {L} layers + exit head")
                   for k in sorted({max(1, L // 4), max(1, L // 2)})]
        for prefix, small, rules, small_what in smalls:
            self._cascade_rules(prefix, small, large, rules, small_what, x, y, half, acc_large_cal, acc_large)
        self._word_cascade()

    def _word_completion(self, model, prompts, max_new, is_letter):
        """Greedy continuation of each prompt: generated ids (N, max_new), their logits (N, max_new, V)
        and each output's length through its first non-letter (`is_letter`: (V,) bool)."""
        gens, logits = [], []
        with torch.no_grad():
            for i in range(0, len(prompts), 256):
                pb = prompts[i : i + 256].to(self.device)
                g = model.generate(pb, max_new)  # greedy, KV cache
                lg = model(g[:, :-1]).logits[:, pb.shape[1] - 1 :].float()  # teacher-forced on its own output
                gens.append(lg.argmax(-1).cpu())
                logits.append(lg.cpu())
        gen, lg = torch.cat(gens), torch.cat(logits)
        nonletter = ~is_letter[gen]
        first = torch.where(nonletter.any(1), nonletter.float().argmax(1), torch.full((len(gen),), max_new - 1))
        return gen, lg, first + 1

    def _word_cascade(self):
        """Sequence-level cascade (Gupta et al. 2024's setting): complete the word the prompt ends in;
        an output is right when its letters and the word boundary match the text. The small model
        answers; per-output deferral rules reduce its per-token log-probabilities (Chow-Quantile at
        several quantiles, Chow-Average, minimum max-prob) or learn the gain from them."""
        s = self.s
        n, T, max_new = s["cascade_n"], 64, 12
        chars = self.tok.chars
        is_letter = torch.tensor([c.isalpha() for c in chars])
        val = self.val_ids
        letter = is_letter[val]
        # prompt ends inside a word: the character before and the one after the cut are letters
        cand = torch.nonzero(letter[T - 1 : -max_new - 1] & letter[T : -max_new]).flatten() + T
        g = torch.Generator().manual_seed(13)
        pos = cand[torch.randperm(len(cand), generator=g)]
        rest_len = []
        keep = []
        for p in pos.tolist():
            k = 0
            while k < max_new and bool(letter[p + k]):
                k += 1
            if k < max_new:  # the word ends within max_new - 1 letters
                keep.append(p)
                rest_len.append(k)
            if len(keep) == n:
                break
        pos = torch.tensor(keep)
        L = torch.tensor(rest_len) + 1  # letters + the boundary character
        prompts = val[pos[:, None] - T + torch.arange(T)]
        truth = val[pos[:, None] + torch.arange(max_new)]

        small_gen, small_lg, small_len = self._word_completion(self.distilled, prompts, max_new, is_letter)
        large_gen, _, large_len = self._word_completion(self.target, prompts, max_new, is_letter)
        ok_s, ok_l = word_right(small_gen, small_len, truth, L), word_right(large_gen, large_len, truth, L)
        half = len(pos) // 2
        acc_l_cal, acc_l = float(ok_l[:half].float().mean()), float(ok_l[half:].float().mean())
        acc_s = float(ok_s[half:].float().mean())
        qs = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
        feats = torch.stack([cas.confidence(small_lg, "quantile", q, lengths=small_len) for q in qs]
                            + [cas.confidence(small_lg, "mean", lengths=small_len), small_len.float()], 1).double()
        rules = {f"quantile{q}": feats[:, i] for i, q in enumerate(qs) if q in (0.0, 0.25, 0.5)}
        rules["mean"] = feats[:, len(qs)]
        rules["max_prob_min"] = cas.confidence(small_lg, "max_prob", lengths=small_len).double()
        # learned: ridge regression of the gain 1(large right) - 1(small right) on the quantile features
        # (and their squares), fitted on the first half of the calibration half
        fq = torch.cat([torch.ones(len(feats), 1, dtype=torch.double), feats, feats ** 2], 1)
        fit = slice(0, half // 2)
        gain = ok_l.double() - ok_s.double()
        a = fq[fit].T @ fq[fit] + 1e-6 * len(fq[fit]) * torch.eye(fq.shape[1], dtype=torch.double)
        rules["learned"] = -(fq @ torch.linalg.solve(a, fq[fit].T @ gain[fit]))
        for name, conf in rules.items():
            thr, curve = cas.deferral_threshold(conf[:half], ok_s[:half], ok_l[:half], acc_l_cal)
            defer = conf[half:] < thr
            acc = float(torch.where(defer, ok_l[half:], ok_s[half:]).float().mean())
            self.add(f"cascade-word-{name}", {"method": "cascade", "rule": name, "small": "distilled draft (1 layer)",
                                              "task": "complete the current word (letters + boundary), tinyshakespeare val",
                                              "threshold": thr, "n_test": len(pos) - half, "prompt_len": T},
                     {"accuracy": acc, "accuracy_large": acc_l, "accuracy_small": acc_s,
                      "reaches_large": float(acc >= acc_l - 0.005)},
                     {"deferral_rate": float(defer.float().mean()),
                      **{f"cal_deferral_within_{tol}pt": min((d for d, a_ in curve if a_ >= acc_l_cal - tol / 100),
                                                             default=1.0) for tol in (0.5, 1)}})

    def _cascade_rules(self, prefix, small, large, rules, small_what, x, y, half, acc_large_cal, acc_large):
        n = len(x)
        acc_small = float((small(x[half:]).argmax(-1) == y[half:]).float().mean())
        for rule in rules:
            c = cas.Cascade(small, large, rule)
            if rule == "learned":  # the gain regression is fitted on half of the calibration half
                c.fit_rule(x[: half // 2], y[: half // 2])
            c.calibrate(x[:half], y[:half], target_accuracy=acc_large_cal)
            out = c.predict(x[half:])
            acc = float((out.predictions == y[half:]).float().mean())
            self.add(f"cascade-{prefix}{rule}", {"method": "cascade", "rule": rule, "small": small_what,
                                                 "task": "next-char, tinyshakespeare val",
                                                 "threshold": c.threshold, "n_test": n - half},
                     {"accuracy": acc, "accuracy_large": acc_large, "accuracy_small": acc_small,
                      "reaches_large": float(acc >= acc_large - 0.005)},
                     {"deferral_rate": out.deferral_rate,
                      # calibration curve: least deferral within 0.5 / 1 point of the large model's accuracy
                      **{f"cal_deferral_within_{tol}pt": min((d for d, a in c.curve_ if a >= acc_large_cal - tol / 100),
                                                             default=1.0) for tol in (0.5, 1)}})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/decoding.jsonl"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--save-dir", default=None, help="write trained draft weights (safetensors) here")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip")
    ap.add_argument("--profile", default="", choices=["", "cpu"], help="cpu: small models trained on CPU")
    ap.add_argument("--set", default="", help="override numeric settings, e.g. t_seconds=1500,d_seconds=120")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":  # full float32 matmuls: greedy outputs comparable across kernels
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    b = Bench(args)
    skip = set(args.skip.split(","))
    b.phase("train", b.train)
    b.phase("distill", b.distill)
    b.phase("cast", b.cast)
    for name in ("speculative", "big", "fastpaths", "calm", "cascade", "hf"):  # most important first
        if name not in skip:
            b.phase(name, getattr(b, name))
    log(f"wrote {len(b.points)} points to {args.out}")
    return b.points


if __name__ == "__main__":
    main()
