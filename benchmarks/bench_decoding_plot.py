"""Plot benchmarks/results/decoding_h100.jsonl → docs/decoding.png.

    python benchmarks/bench_decoding_plot.py [--results PATH] [--out docs/decoding.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paretoml.frontier import read_jsonl


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="benchmarks/results/decoding_h100.jsonl")
    ap.add_argument("--out", default="docs/decoding.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = {p.name: p for p in read_jsonl(args.results)}
    fig, ax = plt.subplots(1, 4, figsize=(21, 4.6))
    # 1: tokens/s at batch 1 on the trained 16-layer char model
    rows = [("HF generate", "hf-generate-b1"), ("HF assisted", "hf-assisted-b1"), ("ours: target only", "target-only-b1")]
    best = {}
    for draft in ("plain", "distilled"):
        cands = [p for n, p in pts.items() if n.startswith(f"speculative-{draft}-") and n.endswith("-b1")]
        if cands:
            b = max(cands, key=lambda p: p.cost["tokens_per_s"])
            best[draft] = b
            rows.append((f"ours: spec. {draft} γ={b.config['gamma']}", b.name))
    rows.append(("ours: CALM softmax, certified λ", "calm-softmax-e4-certified-b1"))
    rows = [(label, pts[n]) for label, n in rows if n in pts]
    colors = ["#999999" if p.peer else "#1f77b4" for _, p in rows]
    ax[0].barh([r[0] for r in rows], [r[1].cost["tokens_per_s"] for r in rows], color=colors)
    for i, (_, p) in enumerate(rows):
        ax[0].text(p.cost["tokens_per_s"], i, f" {p.cost['tokens_per_s']:.0f}", va="center", fontsize=8)
    ax[0].set_xlabel("tokens/s, batch 1, greedy (H100)")
    ax[0].set_title("16-layer char LM (fp32): ours vs HF")
    # 2: speculative speed-up vs γ, measured and theoretical
    for draft, c, theory in (("plain", "#1f77b4", True), ("distilled", "#d62728", True),
                             ("plain_long", "#7f7f7f", False), ("distilled_tvd", "#ff7f0e", False)):
        ps = sorted((p for n, p in pts.items() if n.startswith(f"speculative-{draft}-g") and n.endswith("-b1")),
                    key=lambda p: p.config["gamma"])
        if ps:
            g = [p.config["gamma"] for p in ps]
            ax[1].plot(g, [p.cost["speedup_vs_target"] for p in ps], "o-", color=c, label=f"{draft}: measured")
            if theory:
                ax[1].plot(g, [p.cost["theoretical_speedup"] for p in ps], "x--", color=c, alpha=0.6,
                           label=f"{draft}: theory (α, γ, c)")
    ax[1].axhline(2.0, color="k", lw=0.8, ls=":")
    ax[1].set_xlabel("γ (draft tokens per round)")
    ax[1].set_ylabel("speed-up over our target-only loop")
    ax[1].set_title("speculative decoding, batch 1")
    ax[1].legend(fontsize=8)
    # 3: CALM calibration: consistency with full depth vs share of layers, per λ tried
    for measure, c in (("softmax", "#1f77b4"), ("classifier", "#d62728")):
        cal = [p for n, p in pts.items() if n.startswith(f"calm-cal-{measure}-")]
        if cal:
            ax[2].plot([p.cost["layer_fraction"] for p in cal], [p.quality["consistency"] for p in cal], "o-", color=c,
                       label=f"{measure}: calibration (n={cal[0].config['n_cal']})")
            for p in cal:
                if p.quality.get("certified"):
                    ax[2].plot(p.cost["layer_fraction"], p.quality["consistency"], "*", color=c, ms=12)
        for tag, mk in (("certified", "s"), ("aggressive", "^")):
            t = pts.get(f"calm-{measure}-e4-{tag}-b1")
            if t is not None and t.cost["layer_fraction"] < 1.0:
                ax[2].plot(t.cost["layer_fraction"], t.quality["consistency"], mk, color=c, mfc="none", ms=9,
                           label=f"{measure} {tag}, test: {t.cost['speedup_vs_full']:.2f}× wall-clock")
    ax[2].axhline(0.95, color="k", lw=0.8, ls=":")
    ax[2].axvline(0.5, color="k", lw=0.8, ls=":")
    ax[2].set_xlabel("mean share of layers used")
    ax[2].set_ylabel("per-token consistency with full depth")
    ax[2].set_title("CALM, 16 layers (★ certified by LTT; goal: right of 0.95, left of 0.5)")
    ax[2].legend(fontsize=7)
    # 4: the 1.1B Llama shape: HF, ours, HBM bound
    if "big-target-only-b1" in pts:
        ours = pts["big-target-only-b1"]
        bars = [("HBM bound", ours.cost["hbm_bound_tokens_per_s"], "#2ca02c"),
                ("ours", ours.cost["tokens_per_s"], "#1f77b4")]
        if "big-hf-generate-b1" in pts:
            bars.insert(0, ("HF generate", pts["big-hf-generate-b1"].cost["tokens_per_s"], "#999999"))
        ax[3].bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
        for i, b in enumerate(bars):
            ax[3].text(i, b[1], f"{b[1]:.0f}", ha="center", va="bottom", fontsize=9)
        ax[3].set_ylabel("tokens/s, batch 1")
        ax[3].set_title("1.1B Llama shape, bf16, random init (H100)")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
