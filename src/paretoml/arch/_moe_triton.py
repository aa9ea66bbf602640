"""Triton kernels for the MoE layer's router and data movement (token-choice rules, CUDA).

Imported only when an `MoE` layer runs a token-choice router on a CUDA device (or under
TRITON_INTERPRET=1); never at `import paretoml`. The expert matmuls stay with the grouped GEMM;
these kernels replace the elementwise work around them, each one pass over its data:

  * `_router_kernel`: per block of tokens, logits = x · Wᵀ in fp32 without an fp32 copy of x,
    then softmax, top-k, the gates (renormalised for k > 1), and the block's partial sums for
    the balance and z-losses and its histogram of choices. The dot runs as "tf32x3" on tensor
    cores: a bf16/fp16 activation is exact in tf32 and the fp32 weight is split in two tf32
    parts, so the products match fp32 to ~2⁻²².
  * `_plan_dispatch_kernel` (dropless): each token's row = the expert's offset + the rows that
    expert got in earlier blocks + the assignment's rank in its block (a cumulative sum over a
    one-hot matrix), which is the order a stable sort by expert would give; the same kernel
    copies x into the rows. `_dispatch_kernel` copies along a plan made in torch (capacity).
  * `_combine_kernel`: y[t] = Σⱼ w[t, j] · rows[slots[t, j]], fp32 accumulation.
  * `_combine_bwd_kernel`: grows[slots[t, j]] = w[t, j] · g[t] and gw[t, j] = ⟨g[t], rows[slots[t, j]]⟩
    in one sweep (no (T, k, d) temporaries).
  * `_finalize_kernel`: one program reduces the router blocks' partial sums into the weighted
    aux loss, its two parts and, dropless, the rows per expert, the grouped matmul's offsets and
    each block's first row per expert (replacing a dozen small torch kernels).
  * `_router_bwd_kernel`: d loss / d logits from the gates' gradients and the aux loss's.
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
def _split3(v):
    """fp32 → three bf16 parts whose sum is v to ~2⁻²⁴ relative (8 + 8 + 8 mantissa bits)."""
    hi = v.to(tl.bfloat16)
    r = v - hi.to(tl.float32)
    mid = r.to(tl.bfloat16)
    lo = (r - mid.to(tl.float32)).to(tl.bfloat16)
    return hi, mid, lo


@triton.jit
def _router_kernel(x_ptr, w_ptr, probs_ptr, lse_ptr, expert_ptr, gate_ptr, psum_ptr, cnt_ptr, zsum_ptr, hist_ptr,
                   T, D, E, stride_x, stride_w,
                   K: tl.constexpr, BT: tl.constexpr, BE: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr):
    """One block of BT tokens: logits = x·Wᵀ (fp32), softmax, top-k, gates, and this block's
    partial sums for the auxiliary losses (Σ probs per expert, top-1 counts, Σ lse²) and the
    block's histogram of all k choices (for the dropless plan, `_plan_dispatch_kernel`)."""
    pid = tl.program_id(0)
    rt = pid * BT + tl.arange(0, BT)
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
    # softmax over the E valid columns; a row with a non-finite logit gets lse = NaN (checked on the host)
    bad = tl.max(tl.where(me[None, :] & ((acc != acc) | (tl.abs(acc) == float("inf"))), 1, 0), axis=1)
    logits = tl.where(me[None, :], acc, float("-inf"))
    m = tl.max(logits, axis=1)
    ex = tl.exp(logits - m[:, None])
    ssum = tl.sum(ex, axis=1)
    probs = ex / ssum[:, None]
    lse = tl.where(bad > 0, float("nan"), m + tl.log(ssum))
    m2 = mt[:, None] & me[None, :]
    tl.store(probs_ptr + rt[:, None].to(tl.int64) * E + re[None, :], probs, mask=m2)
    tl.store(lse_ptr + rt, lse, mask=mt)
    # top-k, descending, ties to the lower expert id
    cur = tl.where(me[None, :], probs, -1.0)
    gsum = tl.zeros((BT,), dtype=tl.float32)
    hist = tl.zeros((BE,), dtype=tl.int32)
    for i in tl.static_range(K):
        # clamped: with NaN scores (check_finite off) argmax may land on a padding column, and
        # an expert id >= E would index past the plan's tables
        best = tl.minimum(tl.argmax(cur, axis=1, tie_break_left=True), E - 1)
        hist += tl.sum((mt[:, None] & (re[None, :] == best[:, None])).to(tl.int32), axis=0)
        gval = tl.max(cur, axis=1)
        tl.store(expert_ptr + rt * K + i, best.to(tl.int64), mask=mt)
        tl.store(gate_ptr + rt * K + i, gval, mask=mt)
        gsum += gval
        if i == 0:
            top1 = best
        cur = tl.where(re[None, :] == best[:, None], -1.0, cur)
    if K > 1:  # renormalise over the k choices (GShard); k = 1 keeps the raw probability (Switch)
        inv = 1.0 / tl.maximum(gsum, 1e-9)
        for i in tl.static_range(K):
            g = tl.load(gate_ptr + rt * K + i, mask=mt, other=0.0)
            tl.store(gate_ptr + rt * K + i, g * inv, mask=mt)
    tl.store(psum_ptr + pid * E + re, tl.sum(tl.where(m2, probs, 0.0), axis=0), mask=me)
    hit = mt[:, None] & (re[None, :] == top1[:, None])
    tl.store(cnt_ptr + pid * E + re, tl.sum(hit.to(tl.int32), axis=0), mask=me)
    tl.store(hist_ptr + pid * E + re, hist, mask=me)
    tl.store(zsum_ptr + pid, tl.sum(tl.where(mt, lse * lse, 0.0), axis=0))


@triton.jit
def _finalize_kernel(psum_ptr, cnt_ptr, zsum_ptr, hist_ptr, start_ptr, counts_ptr, offs_ptr, top1_ptr, out_ptr,
                     NB, E, T_f, bal_w, z_w, DROPLESS: tl.constexpr, BB: tl.constexpr, BE: tl.constexpr):
    """One program: reduce the router blocks' partial sums into top-1 counts (E,), the losses
    out = (w_b·bal + w_z·z, bal, z); when dropless also rows per expert (E,), the grouped
    matmul's end offsets (E,) int32 and each block's first row per expert, start (NB, E)."""
    re = tl.arange(0, BE)
    me = re < E
    psum = tl.zeros((BE,), dtype=tl.float32)
    top1 = tl.zeros((BE,), dtype=tl.int32)
    tot = tl.zeros((BE,), dtype=tl.int32)
    zs = tl.zeros((BB,), dtype=tl.float32)
    for b0 in range(0, NB, BB):
        rb = b0 + tl.arange(0, BB)
        mb = rb < NB
        m2 = mb[:, None] & me[None, :]
        psum += tl.sum(tl.load(psum_ptr + rb[:, None] * E + re[None, :], mask=m2, other=0.0), axis=0)
        top1 += tl.sum(tl.load(cnt_ptr + rb[:, None] * E + re[None, :], mask=m2, other=0), axis=0)
        zs += tl.load(zsum_ptr + rb, mask=mb, other=0.0)
        if DROPLESS:
            tot += tl.sum(tl.load(hist_ptr + rb[:, None] * E + re[None, :], mask=m2, other=0), axis=0)
    bal = E * tl.sum((top1.to(tl.float32) / T_f) * (psum / T_f), axis=0)
    z = tl.sum(zs, axis=0) / T_f
    tl.store(out_ptr, bal_w * bal + z_w * z)
    tl.store(out_ptr + 1, bal)
    tl.store(out_ptr + 2, z)
    tl.store(top1_ptr + re, top1, mask=me)
    if DROPLESS:
        end = tl.cumsum(tot, axis=0)
        tl.store(counts_ptr + re, tot.to(tl.int64), mask=me)
        tl.store(offs_ptr + re, end, mask=me)
        run = end - tot
        for b0 in range(0, NB, BB):
            rb = b0 + tl.arange(0, BB)
            m2 = (rb < NB)[:, None] & me[None, :]
            h = tl.load(hist_ptr + rb[:, None] * E + re[None, :], mask=m2, other=0)
            tl.store(start_ptr + rb[:, None] * E + re[None, :], run[None, :] + tl.cumsum(h, axis=0) - h, mask=m2)
            run += tl.sum(h, axis=0)


@triton.jit
def _router_bwd_kernel(probs_ptr, lse_ptr, expert_ptr, gate_ptr, ggate_ptr, gaux_ptr, top1_ptr, glog_ptr, T, E,
                       coef_bal, coef_z, K: tl.constexpr, BT: tl.constexpr, BE: tl.constexpr):
    """d loss / d logits from the gates' gradients and the aux loss's:
    aux = w_b·E·Σₑ fₑ·Pₑ + w_z·mean(lse²) with fₑ = top1ₑ/T (constant), Pₑ = Σₜ pₜₑ/T, so
    d aux/d pₜₑ = coef_bal·top1ₑ (coef_bal = w_b·E/T²) and d aux/d logitsₜ = coef_z·2·lseₜ·pₜ."""
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    re = tl.arange(0, BE)
    mt = rt < T
    me = re < E
    m2 = mt[:, None] & me[None, :]
    p = tl.load(probs_ptr + rt[:, None].to(tl.int64) * E + re[None, :], mask=m2, other=0.0)
    lse = tl.load(lse_ptr + rt, mask=mt, other=0.0)
    gaux = tl.load(gaux_ptr)
    top1 = tl.load(top1_ptr + re, mask=me, other=0).to(tl.float32)
    gp = tl.zeros((BT, BE), dtype=tl.float32) + (gaux * coef_bal * top1)[None, :]
    if K == 1:
        e0 = tl.load(expert_ptr + rt, mask=mt, other=0)
        g0 = tl.load(ggate_ptr + rt, mask=mt, other=0.0)
        gp += tl.where(re[None, :] == e0[:, None], g0[:, None], 0.0)
    else:
        ssum = tl.zeros((BT,), dtype=tl.float32)
        gdot = tl.zeros((BT,), dtype=tl.float32)
        for i in tl.static_range(K):
            ei = tl.load(expert_ptr + rt * K + i, mask=mt, other=0)
            ssum += tl.sum(tl.where(re[None, :] == ei[:, None], p, 0.0), axis=1)
            gdot += tl.load(ggate_ptr + rt * K + i, mask=mt, other=0.0) * tl.load(gate_ptr + rt * K + i, mask=mt,
                                                                                  other=0.0)
        inv = 1.0 / tl.maximum(ssum, 1e-9)
        for i in tl.static_range(K):
            ei = tl.load(expert_ptr + rt * K + i, mask=mt, other=0)
            gi = tl.load(ggate_ptr + rt * K + i, mask=mt, other=0.0)
            gp += tl.where(re[None, :] == ei[:, None], ((gi - gdot) * inv)[:, None], 0.0)
    gl = p * (gp - tl.sum(gp * p, axis=1)[:, None])
    gl += (2.0 * gaux * coef_z) * lse[:, None] * p
    tl.store(glog_ptr + rt[:, None].to(tl.int64) * E + re[None, :], gl, mask=m2)


@triton.jit
def _plan_dispatch_kernel(expert_ptr, start_ptr, x_ptr, rows_ptr, slots_ptr, src_ptr, T, D, E, stride_x, stride_r,
                          K: tl.constexpr, KP: tl.constexpr, BT: tl.constexpr, BE: tl.constexpr,
                          BD: tl.constexpr):
    """Dropless plan and dispatch for one block of BT tokens (the router kernel's blocks).

    start (B, E): the first row of expert e that this block fills (expert offset + rows of e in
    earlier blocks). The rank of an assignment among the block's earlier assignments to the same
    expert (token-major, then choice) comes from a cumulative sum over a one-hot matrix, so rows
    end up grouped by expert in (token, choice) order: a stable sort by expert, without a sort."""
    pid = tl.program_id(0)
    rt = pid * BT + tl.arange(0, BT)
    mt = rt < T
    rj = tl.arange(0, KP)
    m2 = mt[:, None] & (rj[None, :] < K)
    e2 = tl.load(expert_ptr + rt[:, None] * K + rj[None, :], mask=m2, other=-1)  # (BT, KP)
    re = tl.arange(0, BE)
    onehot = (tl.reshape(e2, (BT * KP,))[:, None] == re[None, :]).to(tl.int32)  # (BT*KP, BE)
    rank = tl.sum(tl.cumsum(onehot, axis=0) * onehot, axis=1) - 1  # -1 where the assignment is padding
    start = tl.load(start_ptr + pid * E + tl.maximum(tl.reshape(e2, (BT * KP,)), 0))
    slot2 = tl.reshape(tl.where(rank >= 0, start + rank, -1), (BT, KP))
    tl.store(slots_ptr + rt[:, None] * K + rj[None, :], slot2.to(tl.int64), mask=m2)
    tl.store(src_ptr + slot2, (rt[:, None] + 0 * rj[None, :]).to(tl.int64), mask=m2)
    for d0 in range(0, D, BD):
        rd = d0 + tl.arange(0, BD)
        md = rd < D
        xv = tl.load(x_ptr + rt[:, None].to(tl.int64) * stride_x + rd[None, :], mask=mt[:, None] & md[None, :])
        for j in tl.static_range(K):
            s = tl.sum(tl.where(rj[None, :] == j, slot2, 0), axis=1).to(tl.int64)
            tl.store(rows_ptr + s[:, None] * stride_r + rd[None, :], xv, mask=mt[:, None] & md[None, :])


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
                         stride_r, stride_w, stride_gx,
                         K: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, BE: tl.constexpr,
                         PREC: tl.constexpr, D_STEP: tl.constexpr):
    """grid (T/BT, D/D_STEP): each program covers D_STEP columns in chunks of BD."""
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    mt = rt < T
    re = tl.arange(0, BE)
    me = re < E
    gl = tl.load(glog_ptr + rt[:, None].to(tl.int64) * E + re[None, :], mask=mt[:, None] & me[None, :], other=0.0)
    d_lo = tl.program_id(1) * D_STEP
    for d0 in range(d_lo, tl.minimum(d_lo + D_STEP, D), BD):
        rd = d0 + tl.arange(0, BD)
        md = rd < D
        wv = tl.load(w_ptr + re[:, None] * stride_w + rd[None, :], mask=me[:, None] & md[None, :], other=0.0)
        acc = tl.dot(gl, wv, input_precision=PREC)
        for j in tl.static_range(K):
            s = tl.load(slots_ptr + rt * K + j, mask=mt, other=-1)
            acc += tl.load(grows_ptr + s[:, None] * stride_r + rd[None, :],
                           mask=(s >= 0)[:, None] & md[None, :], other=0.0).to(tl.float32)
        tl.store(gx_ptr + rt[:, None].to(tl.int64) * stride_gx + rd[None, :], acc.to(gx_ptr.dtype.element_ty),
                 mask=mt[:, None] & md[None, :])


@triton.jit
def _router_dw_kernel(glog_ptr, x_ptr, part_ptr, T, D, E, T_PER, stride_x,
                      BT: tl.constexpr, BE: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr,
                      X_BF16: tl.constexpr):
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
        glt = tl.load(glog_ptr + rt[None, :].to(tl.int64) * E + re[:, None],
                      mask=mt[None, :] & me[:, None], other=0.0)  # (BE, BT)
        xv = tl.load(x_ptr + rt[:, None].to(tl.int64) * stride_x + rd[None, :],
                     mask=mt[:, None] & md[None, :], other=0.0)
        if X_BF16:
            g_hi, g_mid, g_lo = _split3(glt)
            acc = tl.dot(g_hi, xv, acc)
            acc = tl.dot(g_mid, xv, acc)
            acc = tl.dot(g_lo, xv, acc)
        else:
            acc = tl.dot(glt, xv.to(tl.float32), acc, input_precision=PREC)
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
                        K: tl.constexpr, KP: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    mt = rt < T
    rj = tl.arange(0, KP)
    mk = mt[:, None] & (rj[None, :] < K)
    s2 = tl.load(slots_ptr + rt[:, None] * K + rj[None, :], mask=mk, other=-1)
    w2 = tl.load(w_ptr + rt[:, None] * K + rj[None, :], mask=mk, other=0.0).to(tl.float32)
    gw = tl.zeros((BT, KP), dtype=tl.float32)
    for d0 in range(0, D, BD):
        rd = d0 + tl.arange(0, BD)
        md = rd < D
        g = tl.load(g_ptr + rt[:, None].to(tl.int64) * stride_g + rd[None, :],
                    mask=mt[:, None] & md[None, :], other=0.0).to(tl.float32)
        for j in tl.static_range(K):
            s = tl.sum(tl.where(rj[None, :] == j, s2, 0), axis=1)
            wj = tl.sum(tl.where(rj[None, :] == j, w2, 0.0), axis=1)
            m2 = (s >= 0)[:, None] & md[None, :]
            r = tl.load(rows_ptr + s[:, None] * stride_r + rd[None, :], mask=m2, other=0.0).to(tl.float32)
            gw += tl.where(rj[None, :] == j, tl.sum(g * r, axis=1)[:, None], 0.0)
            tl.store(grows_ptr + s[:, None] * stride_r + rd[None, :],
                     (wj[:, None] * g).to(grows_ptr.dtype.element_ty), mask=m2)
    tl.store(gw_ptr + rt[:, None] * K + rj[None, :], gw, mask=mk)


def _blocks(E: int) -> int:
    return max(16, triton.next_power_of_2(E))


_BT = 64  # tokens per router block; the dropless plan kernel uses the router's blocks


def router(x: torch.Tensor, w: torch.Tensor, k: int):
    """Router forward without autograd: x (T, d) bf16/fp16/fp32, w (E, d) fp32 → probs (T, E),
    lse (T,) (NaN on rows with a non-finite logit), expert (T, k) int64, gate (T, k) fp32 and
    per-block partial sums psum (B, E), top-1 counts (B, E) int32, Σ lse² (B,)."""
    T, D = x.shape
    E = w.shape[0]
    BE = _blocks(E)
    BT = _BT
    nb = triton.cdiv(T, BT)
    f32 = dict(device=x.device, dtype=torch.float32)
    probs, lse = torch.empty(T, E, **f32), torch.empty(T, **f32)
    expert = torch.empty(T, k, device=x.device, dtype=torch.int64)
    gate = torch.empty(T, k, **f32)
    psum, zsum = torch.empty(nb, E, **f32), torch.empty(nb, **f32)
    cnt = torch.empty(nb, E, device=x.device, dtype=torch.int32)
    hist = torch.empty(nb, E, device=x.device, dtype=torch.int32)
    _router_kernel[(nb,)](x, w, probs, lse, expert, gate, psum, cnt, zsum, hist, T, D, E, x.stride(0), w.stride(0),
                          K=k, BT=BT, BE=BE, BD=64, PREC=_PREC, num_warps=4)
    return probs, lse, expert, gate, psum, cnt, zsum, hist


def _bf16_dots(x: torch.Tensor) -> bool:
    """bf16 activations: the router weight gradient uses three bf16 parts of d logits (exact
    products on bf16 tensor cores); other dtypes, and the interpreter, use fp32/tf32x3 dots.
    Not used for the logits: bf16 tensor-core sums are not fp32-exact (lse error 2.4e-5 against
    float64 vs 1.5e-6 with tf32x3, measured on an H100)."""
    return x.dtype == torch.bfloat16 and not _INTERPRET


def _router_dw(glog: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """glogᵀ (E, T) · x (T, d) → (E, d) fp32, deterministic (token-range partials, then a sum)."""
    T, D = x.shape
    E = glog.shape[1]
    BT, BD = 64, min(128, triton.next_power_of_2(max(D, 16)))
    splits = max(1, min(32, triton.cdiv(T, 512)))
    t_per = triton.cdiv(triton.cdiv(T, splits), BT) * BT
    splits = triton.cdiv(T, t_per)
    part = torch.empty(splits, E, D, device=x.device, dtype=torch.float32)
    _router_dw_kernel[(triton.cdiv(D, BD), splits)](
        glog, x, part, T, D, E, t_per, x.stride(0), BT=BT, BE=_blocks(E), BD=BD, PREC=_PREC,
        X_BF16=_bf16_dots(x), num_warps=8)
    return part.sum(0)


class _RouteDispatch(torch.autograd.Function):
    """(x, W) → rows (N, d), gate (T, k), aux (the weighted balance + z-loss, a scalar), and
    non-differentiable stats (balance loss, z-loss, top-1 counts), slots (T, k), src (N,), rows
    per expert (E,) and, dropless, the grouped matmul's end offsets (E,) int32.

    Which row each (token, choice) takes is decided by `plan_fn(gate, expert, probs, lse)` (the
    layer's capacity rule, in torch) or, when it returns None (dropless), by
    `_plan_dispatch_kernel` from the router's per-block histograms. Gradients reach x and W
    through the rows, the gates and the aux loss, and meet in one kernel in backward."""

    @staticmethod
    def forward(ctx, x, w, k, plan_fn, bal_w, z_w):
        probs, lse, expert, gate, psum, cnt, zsum, hist = router(x, w, k)
        plan = plan_fn(gate, expert, probs, lse)
        T, D = x.shape
        E = w.shape[0]
        nb = hist.shape[0]
        dev = x.device
        BD = min(128, triton.next_power_of_2(max(D, 16)))
        dropless = plan is None
        top1 = torch.empty(E, device=dev, dtype=torch.int32)
        out = torch.empty(3, device=dev, dtype=torch.float32)
        # with a capacity plan the finalize kernel writes only top1 and out; start/offs get a
        # placeholder pointer it never touches (DROPLESS=False)
        start = torch.empty(nb, E, device=dev, dtype=torch.int32) if dropless else top1
        counts = torch.empty(E, device=dev, dtype=torch.int64) if dropless else plan.counts
        offs = torch.empty(E, device=dev, dtype=torch.int32) if dropless else None
        _finalize_kernel[(1,)](psum, cnt, zsum, hist, start, counts, offs if dropless else top1, top1, out,
                               nb, E, float(T), float(bal_w), float(z_w), DROPLESS=dropless, BB=64,
                               BE=_blocks(E), num_warps=4)
        if dropless:  # plan and dispatch in one kernel, no sort
            rows = x.new_empty(T * k, D)
            slots = torch.empty(T, k, device=dev, dtype=torch.int64)
            src = torch.empty(T * k, device=dev, dtype=torch.int64)
            _plan_dispatch_kernel[(nb,)](
                expert, start, x, rows, slots, src, T, D, E, x.stride(0), rows.stride(0),
                K=k, KP=triton.next_power_of_2(k), BT=_BT, BE=_blocks(E), BD=BD, num_warps=4)
        else:
            slots, src = plan.slots.contiguous(), plan.src
            offs = torch.cumsum(counts, 0).to(torch.int32)
            rows = x.new_empty(src.numel(), D)
            _dispatch_kernel[(triton.cdiv(T, 32), triton.cdiv(D, BD))](
                x, slots, rows, T, D, x.stride(0), rows.stride(0), K=k, BT=32, BD=BD, num_warps=4)
        ctx.save_for_backward(x, w, slots, probs, lse, expert, gate, top1)
        ctx.n_rows = rows.shape[0]
        ctx.coef = (float(bal_w) * E / (T * T), float(z_w) / T)
        aux, bal, z = out[0], out[1], out[2]
        ctx.mark_non_differentiable(bal, z, top1, slots, src, counts, offs)
        return rows, gate, aux, bal, z, top1, slots, src, counts, offs

    @staticmethod
    def backward(ctx, g_rows, g_gate, g_aux, *_non_differentiable):
        x, w, slots, probs, lse, expert, gate, top1 = ctx.saved_tensors
        T, D = x.shape
        E = w.shape[0]
        K = slots.shape[1]
        BE = _blocks(E)
        f32 = dict(device=x.device, dtype=torch.float32)
        g_gate = torch.zeros(T, K, **f32) if g_gate is None else g_gate.float().contiguous()
        g_aux = torch.zeros((), **f32) if g_aux is None else g_aux.float()
        glog = torch.empty(T, E, **f32)
        _router_bwd_kernel[(triton.cdiv(T, 64),)](probs, lse, expert, gate, g_gate, g_aux, top1, glog, T, E,
                                                   ctx.coef[0], ctx.coef[1], K=K, BT=64, BE=BE, num_warps=4)
        g_rows = x.new_zeros(ctx.n_rows, D) if g_rows is None else g_rows.contiguous()
        gx = torch.empty_like(x)
        # the router's share of gx is rounded to x's dtype: for bf16/fp16, one tf32 pass is
        # already finer than that rounding; fp32 inputs get the 3-pass fp32-accurate product
        prec = _PREC if x.dtype == torch.float32 or _INTERPRET else "tf32"
        BD = min(64 if BE > 32 else 128, triton.next_power_of_2(max(D, 16)))
        BT, step = (64, D) if BE > 32 else (32, BD)  # wide E: the router rows are loaded once per token block
        _dispatch_bwd_kernel[(triton.cdiv(T, BT), triton.cdiv(D, step))](
            g_rows, slots, glog, w, gx, T, D, E, g_rows.stride(0), w.stride(0), gx.stride(0),
            K=K, BT=BT, BD=BD, BE=BE, PREC=prec, D_STEP=step, num_warps=4)
        gw = None
        if ctx.needs_input_grad[1]:
            gw = _router_dw(glog, x)
        return gx, gw, None, None, None, None


def route_dispatch(x: torch.Tensor, w: torch.Tensor, k: int, plan_fn, balance_weight: float, z_loss_weight: float):
    """Router and dispatch in one autograd node. x (T, d), w (E, d) fp32; `plan_fn(gate, expert,
    probs, lse)` returns the layer's plan (with `slots` (T, k), `src` (N,), `counts` (E,)) or None
    for the dropless kernel plan. Returns (rows (N, d), gate (T, k), aux, balance loss, z-loss,
    top-1 counts, slots, src, counts, grouped-matmul end offsets (E,) int32)."""
    return _RouteDispatch.apply(x.contiguous(), w.contiguous(), k, plan_fn, balance_weight, z_loss_weight)


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
            g, rows, slots, w, grows, gw, T, D, g.stride(0), rows.stride(0), K=K, KP=triton.next_power_of_2(K),
            BT=BT, BD=BD, num_warps=4)
        return grows, gw.to(w.dtype), None


def combine(rows: torch.Tensor, w: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """y[t] = Σⱼ w[t, j] · rows[slots[t, j]] (slot -1: nothing). rows (N, d), w (T, k), slots (T, k)."""
    return _Combine.apply(rows.contiguous(), w.contiguous(), slots.contiguous())
