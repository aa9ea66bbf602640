"""The M = 1 int4 GEMV kernels of `paretoml.infer._triton`, run on the CPU by Triton's interpreter
(TRITON_INTERPRET=1, in a subprocess) against a float64 reference, for every group size, with and
without zeros, ragged and whole tiles.

Skipped where triton is not installed (the CPU-only CI image) or numpy >= 2.3 (Triton 3.6's
interpreter breaks there); on a GPU the same candidates are checked by tests/test_quantize.py
(pytest -m gpu), where the inline-PTX conversion runs instead of its plain-op twin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
_np = tuple(int(v) for v in __import__("numpy").__version__.split(".")[:2])
if _np >= (2, 3):
    pytest.skip("Triton's CPU interpreter needs numpy < 2.3 (found " + __import__("numpy").__version__ + ")",
                allow_module_level=True)

SCRIPT = r"""
import torch, torch.nn as nn, torch.nn.functional as F
from paretoml.infer.quantize import QuantLinear, QuantizeConfig
from paretoml.infer import _triton

g = torch.Generator().manual_seed(0)
for gs, zero in ((128, True), (32, True), (64, False), (None, True), (None, False)):
    for n, k in ((40, 768), (64, 1024), (33, 384), (31, 100) if gs is None else (31, 512)):
        lin = nn.Linear(k, n, bias=False)
        nn.init.normal_(lin.weight, std=0.05, generator=g)
        q = QuantLinear.from_linear(lin, QuantizeConfig(bits=4, group_size=gs, symmetric=not zero))
        x = torch.randn(1, k, generator=g)
        bias = torch.randn(n, generator=g) if n % 2 else None
        ref = F.linear(x.double(), q.dequantize(torch.float64), None if bias is None else bias.double())
        wq = _triton.gpu_pack(q.qweight, 4, k)
        # (16, 4, 4) has whole tiles on (64, 1024): the mask-free EVEN path; the others are ragged
        for kind, cfg in [("gemv1w", (16, 4, 4)), ("gemv1w", (32, 8, 4)), ("gemv1w", (16, 16, 4)),
                          ("gemv1", (16, 8, 1, 4))]:
            for _ in range(2):  # split-K arrival counters must re-arm themselves
                out = torch.full((1, n), float("nan"))
                y = _triton._launch(kind, cfg, x, wq, q.scale, q.zero, bias, 4, gs, k, out)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                assert err < 1e-5, (gs, zero, n, k, kind, cfg, err)
print("ok")
"""


def test_int4_gemv_kernels_match_float64_under_interpreter():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-4000:]
