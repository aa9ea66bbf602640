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
@pytest.mark.parametrize("dispatch", ["fused", "torch"])
def test_moe_gpu_bf16_matches_fp64_loop(router, backend, dispatch):
    if backend == "grouped" and grouped_mm_fn() is None:
        pytest.skip("no grouped_mm in this torch")
    torch.manual_seed(0)
    moe = MoE(256, 512, 8, router, backend=backend, dispatch=dispatch).cuda()
    ref = copy.deepcopy(moe).double()
    ref.backend, ref.dispatch = "loop", "torch"
    moe.w_up.data, moe.w_down.data = moe.w_up.data.bfloat16(), moe.w_down.data.bfloat16()
    ref.w_up.data, ref.w_down.data = moe.w_up.data.double(), moe.w_down.data.double()
    x = torch.randn(1000, 256, device="cuda").bfloat16().requires_grad_()
    xr = x.detach().double().requires_grad_()
    out = moe(x)
    outr = ref(xr)
    assert torch.equal(out.stats["load"], outr.stats["load"])  # same routing
    g = torch.randn_like(xr)
    ((out.out.float() * g.float()).sum() + 100 * out.aux_loss).backward()  # aux: router grads via the logits
    ((outr.out * g).sum() + 100 * outr.aux_loss).backward()
    assert _rel(out.out, outr.out) < 1e-2
    assert _rel(x.grad, xr.grad) < 2e-2
    assert _rel(moe.w_up.grad, ref.w_up.grad) < 2e-2
    assert _rel(moe.w_down.grad, ref.w_down.grad) < 2e-2
    assert _rel(moe.gate.grad, ref.gate.grad) < 5e-2


def _without_near_ties(moe, x, k, gap=1e-4):
    """Redraw the rows whose k-th and (k+1)-th router logits (float64) are within `gap`: the two
    paths compute the logits with different fp32 rounding, so only such rows may route apart."""
    for _ in range(20):
        logits = x.to(moe.w_up.dtype).double() @ moe.gate.double().t()
        top = logits.topk(min(k + 1, logits.shape[1]), -1).values
        near = (top[:, :-1] - top[:, 1:]).min(-1).values < gap
        if not near.any():
            return x
        x[near] = torch.randn_like(x[near])
    raise AssertionError("could not draw rows without near-ties")


@needs_cuda
@pytest.mark.parametrize("router", [TopKRouter(k=2, capacity_factor=None), TopKRouter(k=1, capacity_factor=1.25),
                                    BatchPriorityRouter(k=2, capacity_ratio=0.5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_dispatch_matches_torch_dispatch(router, dtype):
    """The Triton router/dispatch/combine against the torch gathers: same routing, same outputs and
    gradients up to the combine's summation order (fp32 accumulation vs the input dtype)."""
    torch.manual_seed(1)
    E, d = 64, 320  # d not a multiple of the kernels' blocks; E > 32 takes the wide-router tiles
    moe = MoE(d, 256, E, router, backend="padded", dtype=dtype).cuda()
    x = _without_near_ties(moe, torch.randn(3001, d, device="cuda"), router.k).to(dtype).requires_grad_()
    g = torch.randn_like(x)
    res = {}
    for dispatch in ("torch", "fused"):
        moe.dispatch = dispatch
        for p in list(moe.parameters()) + [x]:
            p.grad = None
        out = moe(x)
        ((out.out.float() * g.float()).sum() + 10 * out.aux_loss).backward()
        res[dispatch] = [out.out, x.grad, moe.gate.grad, moe.w_up.grad, out.stats["load"], out.stats["dropped_tokens"]]
    (a, ga, gga, gua, la, da), (b, gb, ggb, gub, lb, db) = res["torch"], res["fused"]
    assert torch.equal(la, lb) and torch.equal(da, db)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert _rel(b, a) < tol and _rel(gb, ga) < tol and _rel(gub, gua) < tol
    assert _rel(ggb, gga) < (1e-4 if dtype == torch.float32 else 2e-2)


@needs_cuda
@pytest.mark.parametrize("E", [8, 64])
def test_fused_router_is_fp32_accurate(E):
    """The router kernel (tf32x3 dot on a bf16 input, softmax, top-2, gates) against float64."""
    from paretoml.arch import _moe_triton

    torch.manual_seed(2)
    x = torch.randn(777, 1024, device="cuda").bfloat16()
    w = torch.randn(E, 1024, device="cuda") * 0.05
    logits = x.double() @ w.double().t()
    ref_p = logits.softmax(-1)
    probs, lse, expert, gate, psum, cnt, zsum, hist = _moe_triton.router(x, w, 2)
    assert (probs.double() - ref_p).abs().max().item() < 2e-6
    assert (lse.double() - torch.logsumexp(logits, -1)).abs().max().item() < 2e-5
    top = ref_p.topk(3, -1)
    clear = (top.values[:, 1] - top.values[:, 2]) > 1e-5  # rows without a near-tie for the 2nd choice
    assert clear.float().mean() > 0.9
    assert torch.equal(expert[clear], top.indices[clear, :2])
    ref_g = top.values[:, :2] / top.values[:, :2].sum(-1, keepdim=True)
    assert (gate[clear].double() - ref_g[clear]).abs().max().item() < 2e-6
    assert (psum.sum(0).double() - ref_p.sum(0)).abs().max().item() < 1e-3
    assert torch.equal(cnt.sum(0).long().cpu(), torch.bincount(expert[:, 0].cpu(), minlength=E))
    assert torch.equal(hist.sum(0).long().cpu(), torch.bincount(expert.reshape(-1).cpu(), minlength=E))
    assert abs(zsum.sum().item() - torch.logsumexp(logits, -1).pow(2).sum().item()) < 1e-2


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fused_router_weight_gradient_is_fp32_accurate(dtype):
    """glogitsᵀ · x for the fp32 router weight: bf16 inputs take three bf16 parts of glogits on
    bf16 tensor cores, the others tf32x3; both must match float64 to fp32 accuracy."""
    from paretoml.arch import _moe_triton

    torch.manual_seed(4)
    x = torch.randn(5000, 1024, device="cuda").to(dtype)
    glog = torch.randn(5000, 64, device="cuda") * torch.logspace(-6, 0, 64, device="cuda")
    ref = glog.double().t() @ x.double()
    got = _moe_triton._router_dw(glog, x)
    scale = glog.double().abs().t() @ x.double().abs()  # error bound scale of each entry
    assert ((got.double() - ref).abs() / scale).max().item() < 1e-6


@needs_cuda
def test_fused_dropless_step_captures_in_one_cuda_graph():
    """Dropless top-k with check_finite=False has no host sync, so fwd+bwd replays from one graph
    and gives the eager step's gradients."""
    torch.manual_seed(3)
    moe = MoE(512, 1024, 8, TopKRouter(k=2, capacity_factor=None), check_finite=False,
              dtype=torch.bfloat16).cuda()
    x = torch.randn(4096, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)

    def step():
        for p in list(moe.parameters()) + [x]:
            p.grad = None
        out = moe(x)
        ((out.out.float() * g.float()).sum() + out.aux_loss).backward()

    assert moe._use_fused(x.detach())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    eager = [x.grad.clone(), moe.gate.grad.clone(), moe.w_down.grad.clone()]
    for p in list(moe.parameters()) + [x]:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = moe(x)
        ((out.out.float() * g.float()).sum() + out.aux_loss).backward()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(eager, [x.grad, moe.gate.grad, moe.w_down.grad]):
        assert _rel(b, a) < 1e-6
