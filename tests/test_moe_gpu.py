"""GPU checks of the MoE dispatch paths (run on the device machine: pytest -m gpu)."""

from __future__ import annotations

import copy

import pytest
import torch

from paretoml.arch.moe import BatchPriorityRouter, MoE, TopKRouter, grouped_mm_fn

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _rel(a, b):
    return ((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm()).item()


@needs_cuda
@pytest.mark.parametrize("router", [TopKRouter(k=2, capacity_factor=None), TopKRouter(k=2, capacity_factor=1.0),
                                    BatchPriorityRouter(k=2, capacity_ratio=0.5)])
@pytest.mark.parametrize("backend", ["grouped", "padded"])
def test_moe_gpu_bf16_matches_fp64_loop(router, backend):
    if backend == "grouped" and grouped_mm_fn() is None:
        pytest.skip("no grouped_mm in this torch")
    torch.manual_seed(0)
    moe = MoE(256, 512, 8, router, backend=backend).cuda()
    ref = copy.deepcopy(moe).double()
    ref.backend = "loop"
    moe.w_up.data, moe.w_down.data = moe.w_up.data.bfloat16(), moe.w_down.data.bfloat16()
    ref.w_up.data, ref.w_down.data = moe.w_up.data.double(), moe.w_down.data.double()
    x = torch.randn(1000, 256, device="cuda").bfloat16().requires_grad_()
    xr = x.detach().double().requires_grad_()
    out = moe(x)
    outr = ref(xr)
    assert torch.equal(out.stats["load"], outr.stats["load"])  # same routing
    g = torch.randn_like(xr)
    out.out.backward(g.bfloat16())
    outr.out.backward(g)
    assert _rel(out.out, outr.out) < 1e-2
    assert _rel(x.grad, xr.grad) < 2e-2
    assert _rel(moe.w_up.grad, ref.w_up.grad) < 2e-2
    assert _rel(moe.w_down.grad, ref.w_down.grad) < 2e-2
    assert _rel(moe.gate.grad, ref.gate.grad) < 5e-2
