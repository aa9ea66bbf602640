"""Triton kernels for the MoE layer's router and data movement (token-choice rules, CUDA).

Imported only when an `MoE` layer runs a token-choice router on a CUDA device; never at
`import paretoml`. The expert matmuls stay with the grouped GEMM; these kernels replace the
elementwise work around them, each one pass over the data:

  * `_router_kernel`: logits = x · Wᵀ in fp32 without materialising an fp32 copy of x.
    The dot runs as "tf32x3" on tensor cores: a bf16/fp16 activation is exact in tf32 and the
    fp32 weight is split into two tf32 parts, so the products equal the fp32 ones to ~2⁻²².
  * `_dispatch_kernel`: rows[slots[t, j]] = x[t] (each token read once, written k times).
  * `_combine_kernel`: y[t] = Σⱼ w[t, j] · rows[slots[t, j]], fp32 accumulation.
  * `_combine_bwd_kernel`: grows[slots[t, j]] = w[t, j] · g[t] and gw[t, j] = ⟨g[t], rows[slots[t, j]]⟩
    in one sweep (no (T, k, d) temporaries).
  * `_dispatch_bwd_kernel`: gx[t] = Σⱼ grows[slots[t, j]] + glogits[t] · W (the router's input
    gradient fused into the same pass, so x gets one gradient tensor, not a sum of two).
  * `_router_dw_kernel`: gW = glogitsᵀ · x, split over token ranges into fp32 partials summed
    afterwards (deterministic: no atomics).

slots (T, k) int64: the row of each (token, choice), -1 where capacity dropped it. Rows are
disjoint, so every write has one writer.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["route_dispatch", "combine"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_PREC = "ieee" if _INTERPRET else "tf32x3"  # the interpreter computes in fp32 numpy anyway


@triton.jit
def _router_kernel(x_ptr, w_ptr, out_ptr, T, D, E, stride_x, stride_w, stride_o,
                   BT: tl.constexpr, BE: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr):
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    re = tl.arange(0, BE)
    mt = rt < T
    me = re < E
    acc = tl.zeros((BT, BE), dtype=tl.float32)
    for d0 in range(0, D, BD):
        rd = d0 + tl.arange(0, BD)
        md = rd < D
        xt = tl.load(x_ptr + rt[:, None].to(tl.int64) * stride_x + rd[None, :],
                     mask=mt[:, None] & md[None, :], other=0.0).to(tl.float32)
        wt = tl.load(w_ptr + re[None, :] * stride_w + rd[:, None], mask=me[None, :] & md[:, None], other=0.0)
        acc = tl.dot(xt, wt, acc, input_precision=PREC)
    tl.store(out_ptr + rt[:, None].to(tl.int64) * stride_o + re[None, :], acc, mask=mt[:, None] & me[None, :])


@triton.jit
def _dispatch_kernel(x_ptr, slots_ptr, rows_ptr, T, D, stride_x, stride_r,
                     K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    rd = tl.program_id(1) * BD + tl.arange(0, BD)
    mt = rt < T
    md = rd < D
    xv = tl.load(x_ptr + rt[:, None].to(tl.int64) * stride_x + rd[None, :], mask=mt[:, None] & md[None, :])
    for j in tl.static_range(K):
        s = tl.load(slots_ptr + rt * K + j, mask=mt, other=-1)
        tl.store(rows_ptr + s[:, None] * stride_r + rd[None, :], xv, mask=(s >= 0)[:, None] & md[None, :])


@triton.jit
def _dispatch_bwd_kernel(grows_ptr, slots_ptr, glog_ptr, w_ptr, gx_ptr, T, D, E,
                         stride_r, stride_gl, stride_w, stride_gx,
                         K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
                         HAS_ROUTER: tl.constexpr, PREC: tl.constexpr):
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    rd = tl.program_id(1) * BD + tl.arange(0, BD)
    mt = rt < T
    md = rd < D
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    for j in tl.static_range(K):
        s = tl.load(slots_ptr + rt * K + j, mask=mt, other=-1)
        acc += tl.load(grows_ptr + s[:, None] * stride_r + rd[None, :],
                       mask=(s >= 0)[:, None] & md[None, :], other=0.0).to(tl.float32)
    if HAS_ROUTER:
        re = tl.arange(0, BE)
        me = re < E
        gl = tl.load(glog_ptr + rt[:, None].to(tl.int64) * stride_gl + re[None, :],
                     mask=mt[:, None] & me[None, :], other=0.0)
        wv = tl.load(w_ptr + re[:, None] * stride_w + rd[None, :], mask=me[:, None] & md[None, :], other=0.0)
        acc = tl.dot(gl, wv, acc, input_precision=PREC)
    tl.store(gx_ptr + rt[:, None].to(tl.int64) * stride_gx + rd[None, :], acc.to(gx_ptr.dtype.element_ty),
             mask=mt[:, None] & md[None, :])


@triton.jit
def _router_dw_kernel(glog_ptr, x_ptr, part_ptr, T, D, E, T_PER, stride_gl, stride_x,
                      BT: tl.constexpr, BE: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr):
    rd = tl.program_id(0) * BD + tl.arange(0, BD)
    split = tl.program_id(1)
    re = tl.arange(0, BE)
    md = rd < D
    me = re < E
    t_lo = split * T_PER
    t_hi = tl.minimum(t_lo + T_PER, T)
    acc = tl.zeros((BE, BD), dtype=tl.float32)
    for t0 in range(t_lo, t_hi, BT):
        rt = t0 + tl.arange(0, BT)
        mt = rt < t_hi
        glt = tl.load(glog_ptr + rt[None, :].to(tl.int64) * stride_gl + re[:, None],
                      mask=mt[None, :] & me[:, None], other=0.0)  # (BE, BT)
        xv = tl.load(x_ptr + rt[:, None].to(tl.int64) * stride_x + rd[None, :],
                     mask=mt[:, None] & md[None, :], other=0.0).to(tl.float32)
        acc = tl.dot(glt, xv, acc, input_precision=PREC)
    tl.store(part_ptr + split * E * D + re[:, None] * D + rd[None, :], acc, mask=me[:, None] & md[None, :])


@triton.jit
def _combine_kernel(rows_ptr, slots_ptr, w_ptr, y_ptr, T, D, stride_r, stride_y,
                    K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    rd = tl.program_id(1) * BD + tl.arange(0, BD)
    mt = rt < T
    md = rd < D
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    for j in tl.static_range(K):
        s = tl.load(slots_ptr + rt * K + j, mask=mt, other=-1)
        wj = tl.load(w_ptr + rt * K + j, mask=mt, other=0.0).to(tl.float32)
        r = tl.load(rows_ptr + s[:, None] * stride_r + rd[None, :], mask=(s >= 0)[:, None] & md[None, :], other=0.0)
        acc += wj[:, None] * r.to(tl.float32)
    tl.store(y_ptr + rt[:, None].to(tl.int64) * stride_y + rd[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mt[:, None] & md[None, :])


@triton.jit
def _combine_bwd_kernel(g_ptr, rows_ptr, slots_ptr, w_ptr, grows_ptr, gw_ptr, T, D, stride_g, stride_r,
                        K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    mt = rt < T
    for j in tl.static_range(K):
        s = tl.load(slots_ptr + rt * K + j, mask=mt, other=-1)
        ms = s >= 0
        wj = tl.load(w_ptr + rt * K + j, mask=mt, other=0.0).to(tl.float32)
        dot = tl.zeros((BT,), dtype=tl.float32)
        for d0 in range(0, D, BD):
            rd = d0 + tl.arange(0, BD)
            md = rd < D
            g = tl.load(g_ptr + rt[:, None].to(tl.int64) * stride_g + rd[None, :],
                        mask=mt[:, None] & md[None, :], other=0.0).to(tl.float32)
            m2 = ms[:, None] & md[None, :]
            r = tl.load(rows_ptr + s[:, None] * stride_r + rd[None, :], mask=m2, other=0.0).to(tl.float32)
            dot += tl.sum(g * r, axis=1)
            tl.store(grows_ptr + s[:, None] * stride_r + rd[None, :],
                     (wj[:, None] * g).to(grows_ptr.dtype.element_ty), mask=m2)
        tl.store(gw_ptr + rt * K + j, dot, mask=mt)


def _blocks(E: int) -> int:
    return max(16, triton.next_power_of_2(E))


def router_logits(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(T, d) activations (bf16/fp16/fp32) · (E, d) fp32 weightᵀ → (T, E) fp32 logits."""
    T, D = x.shape
    E = w.shape[0]
    out = torch.empty(T, E, device=x.device, dtype=torch.float32)
    BE = _blocks(E)
    BT = 64 if BE <= 32 else 32
    _router_kernel[(triton.cdiv(T, BT),)](x, w, out, T, D, E, x.stride(0), w.stride(0), out.stride(0),
                                         BT=BT, BE=BE, BD=64, PREC=_PREC, num_warps=4)
    return out


class _RouteDispatch(torch.autograd.Function):
    """(x, W) → (rows, logits, *plan tensors). The plan (which row each (token, choice) takes)
    is a non-differentiable function of the logits, made by `plan_fn`; gradients flow through
    rows (to x) and logits (to x and W) and meet in one kernel in backward."""

    @staticmethod
    def forward(ctx, x, w, plan_fn):
        logits = router_logits(x, w)
        plan = plan_fn(logits)
        slots = plan.slots.contiguous()
        T, D = x.shape
        K = slots.shape[1]
        rows = x.new_empty(plan.src.numel(), D)
        BT, BD = 32, min(128, triton.next_power_of_2(D))
        _dispatch_kernel[(triton.cdiv(T, BT), triton.cdiv(D, BD))](
            x, slots, rows, T, D, x.stride(0), rows.stride(0), K=K, BT=BT, BD=BD, num_warps=4)
        ctx.save_for_backward(x, w, slots)
        ctx.mark_non_differentiable(slots)
        ctx.n_rows = rows.shape[0]
        return rows, logits, slots

    @staticmethod
    def backward(ctx, g_rows, g_logits, _g_slots):
        x, w, slots = ctx.saved_tensors
        T, D = x.shape
        E = w.shape[0]
        K = slots.shape[1]
        BE = _blocks(E)
        has_router = g_logits is not None
        gl = g_logits.contiguous() if has_router else w  # any valid pointer when unused
        if g_rows is None:
            g_rows = x.new_zeros(ctx.n_rows, D)
        g_rows = g_rows.contiguous()
        gx = torch.empty_like(x)
        BT, BD = 32, min(64 if BE > 32 else 128, triton.next_power_of_2(max(D, 16)))
        _dispatch_bwd_kernel[(triton.cdiv(T, BT), triton.cdiv(D, BD))](
            g_rows, slots, gl, w, gx, T, D, E, g_rows.stride(0), gl.stride(0), w.stride(0), gx.stride(0),
            K=K, BT=BT, BD=BD, BE=BE, HAS_ROUTER=has_router, PREC=_PREC, num_warps=4)
        gw = None
        if has_router and ctx.needs_input_grad[1]:
            BTw, BDw = 64, 64 if BE <= 32 else 32
            splits = max(1, min(32, triton.cdiv(T, 512)))
            t_per = triton.cdiv(triton.cdiv(T, splits), BTw) * BTw
            splits = triton.cdiv(T, t_per)
            part = torch.empty(splits, E, D, device=x.device, dtype=torch.float32)
            _router_dw_kernel[(triton.cdiv(D, BDw), splits)](
                gl, x, part, T, D, E, t_per, gl.stride(0), x.stride(0),
                BT=BTw, BE=BE, BD=BDw, PREC=_PREC, num_warps=4)
            gw = part.sum(0)
        return gx, gw, None


def route_dispatch(x: torch.Tensor, w: torch.Tensor, plan_fn):
    """Router logits and dispatched rows in one autograd node. x (T, d) contiguous, w (E, d) fp32;
    `plan_fn(logits)` returns the layer's plan (token-choice: `slots` (T, k), `src` (N,)).
    Returns (rows (N, d), logits (T, E) fp32, plan)."""
    holder = {}

    def keep(logits):
        holder["plan"] = plan_fn(logits)
        return holder["plan"]

    rows, logits, _ = _RouteDispatch.apply(x.contiguous(), w.contiguous(), keep)
    return rows, logits, holder["plan"]


class _Combine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, w, slots):
        T, K = slots.shape
        D = rows.shape[1]
        y = rows.new_empty(T, D)
        BT, BD = 32, min(128, triton.next_power_of_2(max(D, 16)))
        _combine_kernel[(triton.cdiv(T, BT), triton.cdiv(D, BD))](
            rows, slots, w, y, T, D, rows.stride(0), y.stride(0), K=K, BT=BT, BD=BD, num_warps=4)
        ctx.save_for_backward(rows, w, slots)
        return y

    @staticmethod
    def backward(ctx, g):
        rows, w, slots = ctx.saved_tensors
        T, K = slots.shape
        D = rows.shape[1]
        g = g.contiguous()
        grows = torch.empty_like(rows)
        gw = torch.empty(T, K, device=w.device, dtype=torch.float32)
        BT, BD = 16, min(256, triton.next_power_of_2(max(D, 16)))
        _combine_bwd_kernel[(triton.cdiv(T, BT),)](
            g, rows, slots, w, grows, gw, T, D, g.stride(0), rows.stride(0), K=K, BT=BT, BD=BD, num_warps=4)
        return grows, gw.to(w.dtype), None


def combine(rows: torch.Tensor, w: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """y[t] = Σⱼ w[t, j] · rows[slots[t, j]] (slot -1: nothing). rows (N, d), w (T, k), slots (T, k)."""
    return _Combine.apply(rows.contiguous(), w.contiguous(), slots.contiguous())
