"""The fused Triton router/dispatch/combine of `paretoml.arch._moe_triton`, run on the CPU by
Triton's interpreter (TRITON_INTERPRET=1, in a subprocess) against the torch dispatch.

Skipped where triton is not installed (the CPU-only CI image); the same kernels are compiled and
checked on a GPU by tests/test_moe_gpu.py (pytest -m gpu)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
_np = tuple(int(v) for v in __import__("numpy").__version__.split(".")[:2])
if _np >= (2, 3):  # Triton 3.6's interpreter fails on numpy >= 2.3 ("only 0-dimensional arrays ...")
    pytest.skip("Triton's CPU interpreter needs numpy < 2.3 (found " + __import__("numpy").__version__ + ")",
                allow_module_level=True)

SCRIPT = r"""
import torch
from paretoml.arch.moe import MoE, TopKRouter, BatchPriorityRouter

def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))

cases = [(TopKRouter(2, None), 70, 48, 6), (TopKRouter(2, 1.0), 70, 48, 6), (TopKRouter(1, 1.25), 33, 20, 5),
         (BatchPriorityRouter(2, 0.5), 64, 48, 6), (TopKRouter(3, None), 50, 40, 40), (TopKRouter(1, None), 300, 24, 5),
         (TopKRouter(2, None), 333, 20, 3), (TopKRouter(2, None), 4500, 16, 4),  # 71 router blocks
         (TopKRouter(3, None), 90, 24, 3), (TopKRouter(1, None), 40, 16, 1)]  # k = E; one expert
for router, T, d, E in cases:
    torch.manual_seed(0)
    m = MoE(d, 32, E, router, backend="padded")
    x = torch.randn(T, d, requires_grad=True)
    g = torch.randn(T, d)
    assert m._use_fused(x.detach()), "the interpreter run must take the fused path"
    res = {}
    for disp in ("torch", "fused"):
        m.dispatch = disp
        for p in list(m.parameters()) + [x]:
            p.grad = None
        r = m(x)
        ((r.out * g).sum() + 3 * r.aux_loss).backward()
        res[disp] = [r.out.detach(), x.grad, m.gate.grad, m.w_up.grad, m.w_down.grad, r.stats["balance_loss"],
                     r.stats["z_loss"], r.stats["load"], r.stats["dropped_tokens"]]
    a, b = res["torch"], res["fused"]
    assert torch.equal(a[7], b[7]) and torch.equal(a[8], b[8]), (router, "routing differs")
    for i, name in enumerate(("out", "x.grad", "gate.grad", "w_up.grad", "w_down.grad", "balance", "z")):
        assert rel(b[i], a[i]) < 1e-5, (router, name, rel(b[i], a[i]))
    # non-finite router input: the fused path raises like the torch path
    bad = x.detach().clone()
    bad[3, 0] = float("nan")
    try:
        m(bad)
    except ValueError as e:
        assert "not finite" in str(e)
    else:
        raise AssertionError("NaN input was not refused")
# NaN input with the finiteness check off: garbage out, but every expert id stays in range, so the
# plan and dispatch kernels never index past their tables (and every row is written once)
torch.manual_seed(0)
m = MoE(16, 32, 5, TopKRouter(2, None), backend="padded", check_finite=False)
r = m(torch.full((70, 16), float("nan")))
assert int(r.stats["load"].sum()) == 140 and r.stats["load"].min() >= 0, r.stats["load"]
assert torch.isnan(r.out).all()
print("ok", len(cases))
"""


def test_fused_kernels_match_torch_dispatch_under_the_interpreter():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok 10"
