"""Triton kernels for the decode step's small operations (CUDA only; imported lazily by `decode`).

At batch 1 a decode step is a chain of ~15 kernels per layer, most of them tiny; each costs a few
microseconds of launch and latency whatever it computes, so fewer kernels is the speed-up:

  * `rope_kv`: one kernel after the QKV GEMM rotates q and k (interleaved pairs, RoPE), writes k
    and v into the KV buffer at each row's positions and q in the grouped-query-folded layout
    SDPA reads (head h = kv_head·g + j at row j·T + t) — replacing casts, a complex multiply, a
    copy and two scatters.
  * `attention`: attention of a few query rows per (row, kv head) over the KV buffer, causal by
    each query's position (no mask tensor), online softmax over key blocks. PyTorch's
    memory-efficient SDPA kernel launches one program per 64 query rows and head: at T = 1 that is
    8 programs for a whole layer, ~31 µs (float32, 208 keys) — half of a 16-layer decode step.
  * `swiglu`: silu(gate)·val in one pass (two kernels in eager torch), rounded as eager torch
    rounds (silu's result to the activation dtype, then the product).
  * `skinny_linear`: y = x·Wᵀ (+ r) for float32 with M <= 8 rows (the verification pass of
    speculative decoding, T = γ+1): cuBLAS picks a GEMM tile kernel there that can be several µs
    slower than its M = 1 GEMV; this kernel streams W once for all M rows. `linear` measures it
    against cuBLAS once per shape and uses the faster.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["rope_kv", "swiglu", "attention", "skinny_linear", "linear", "selftest"]


@triton.jit
def _rope_kv_kernel(qkv_ptr, pos_ptr, cos_ptr, sin_ptr, k_ptr, v_ptr, q_ptr, T, S, stride_pb,
                    NH: tl.constexpr, NKV: tl.constexpr, G: tl.constexpr, HS: tl.constexpr,
                    HALF_P2: tl.constexpr, ROPE: tl.constexpr):
    bt = tl.program_id(0)  # b·T + t
    h = tl.program_id(1)  # q heads, then k heads, then v heads
    b = bt // T
    t = bt % T
    pos = tl.load(pos_ptr + b * stride_pb + t)
    i = tl.arange(0, HALF_P2)
    m = i < HS // 2
    src = qkv_ptr + bt * ((NH + 2 * NKV) * HS) + h * HS
    if h < NH + NKV:
        x0 = tl.load(src + 2 * i, mask=m, other=0.0).to(tl.float32)
        x1 = tl.load(src + 2 * i + 1, mask=m, other=0.0).to(tl.float32)
        if ROPE:
            c = tl.load(cos_ptr + pos * (HS // 2) + i, mask=m, other=0.0)
            s = tl.load(sin_ptr + pos * (HS // 2) + i, mask=m, other=0.0)
            y0 = x0 * c - x1 * s
            y1 = x0 * s + x1 * c
        else:
            y0 = x0
            y1 = x1
        if h < NH:
            dst = q_ptr + ((b * NKV + h // G) * (G * T) + (h % G) * T + t) * HS
        else:
            dst = k_ptr + ((b * NKV + (h - NH)) * S + pos) * HS
        tl.store(dst + 2 * i, y0.to(k_ptr.dtype.element_ty), mask=m)
        tl.store(dst + 2 * i + 1, y1.to(k_ptr.dtype.element_ty), mask=m)
    else:  # (names differ from the branch above: Triton merges same-named values of both branches)
        vdst = v_ptr + ((b * NKV + (h - NH - NKV)) * S + pos) * HS
        v0 = tl.load(src + 2 * i, mask=m, other=0.0)
        v1 = tl.load(src + 2 * i + 1, mask=m, other=0.0)
        tl.store(vdst + 2 * i, v0, mask=m)
        tl.store(vdst + 2 * i + 1, v1, mask=m)


def rope_kv(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
            k: torch.Tensor, v: torch.Tensor, n_head: int) -> torch.Tensor:
    """qkv (B, T, (nh + 2·nkv)·hs) contiguous; positions (B, T) (last stride 1); cos/sin (P, hs/2)
    float32 or None (no RoPE); k, v (B, nkv, S, hs) contiguous buffers. Returns q (B, nkv, g·T, hs)."""
    B, T, _ = qkv.shape
    _, nkv, S, hs = k.shape
    g = n_head // nkv
    q = torch.empty(B, nkv, g * T, hs, device=qkv.device, dtype=k.dtype)
    rope = cos is not None
    _rope_kv_kernel[(B * T, n_head + 2 * nkv)](
        qkv, positions, cos if rope else qkv, sin if rope else qkv, k, v, q, T, S, positions.stride(0),
        NH=n_head, NKV=nkv, G=g, HS=hs, HALF_P2=triton.next_power_of_2(hs // 2), ROPE=rope, num_warps=1)
    return q


@triton.jit
def _attn_kernel(q_ptr, k_ptr, v_ptr, o_ptr, pos_ptr, stride_pb, T, S, R, NKV, scale,
                 HS: tl.constexpr, HS_P2: tl.constexpr, BR: tl.constexpr, BS: tl.constexpr, IEEE: tl.constexpr):
    bh = tl.program_id(0)  # b·nkv + kv head
    b = bh // NKV
    rows = tl.program_id(1) * BR + tl.arange(0, BR)  # query rows of this kv head: r = j·T + t
    rmask = rows < R
    qpos = tl.load(pos_ptr + b * stride_pb + rows % T, mask=rmask, other=0)
    d = tl.arange(0, HS_P2)
    dmask = d < HS
    q = tl.load(q_ptr + (bh * R + rows)[:, None] * HS + d[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
    m_i = tl.full((BR,), float("-inf"), tl.float32)
    l_i = tl.zeros((BR,), tl.float32)
    acc = tl.zeros((BR, HS_P2), tl.float32)
    base = bh * S * HS
    for s0 in range(0, S, BS):
        s = s0 + tl.arange(0, BS)
        kvmask = (s[:, None] < S) & dmask[None, :]
        k = tl.load(k_ptr + base + s[:, None] * HS + d[None, :], mask=kvmask, other=0.0)
        if IEEE:
            qk = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            qk = tl.dot(q, tl.trans(k))
        qk = tl.where(s[None, :] <= qpos[:, None], qk * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + base + s[:, None] * HS + d[None, :], mask=kvmask, other=0.0)
        if IEEE:
            pv = tl.dot(p, v, input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + (bh * R + rows)[:, None] * HS + d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, T: int) -> torch.Tensor:
    """q (B, nkv, R, hs) with R = g·T rows (query row r is at position positions[b, r % T]);
    k, v (B, nkv, S, hs) buffers. Key s is visible to a query at position p iff s <= p.
    Returns the attention output in q's layout."""
    q = q.contiguous()
    B, nkv, R, hs = q.shape
    S = k.shape[2]
    o = torch.empty_like(q)
    BR, hp = 16, max(16, triton.next_power_of_2(hs))
    _attn_kernel[(B * nkv, triton.cdiv(R, BR))](
        q, k, v, o, positions, positions.stride(0), T, S, R, nkv, 1.0 / hs ** 0.5,
        HS=hs, HS_P2=hp, BR=BR, BS=64 if hp <= 64 else 32, IEEE=q.dtype == torch.float32,
        num_warps=4, num_stages=2)
    return o


@triton.jit
def _swiglu_kernel(u_ptr, y_ptr, H, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = j < H
    g = tl.load(u_ptr + row * 2 * H + j, mask=m, other=0.0)
    v = tl.load(u_ptr + row * 2 * H + H + j, mask=m, other=0.0)
    gf = g.to(tl.float32)
    s = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)  # eager torch rounds silu's result first
    tl.store(y_ptr + row * H + j, (s.to(tl.float32) * v.to(tl.float32)).to(g.dtype), mask=m)


def swiglu(u: torch.Tensor) -> torch.Tensor:
    """u (..., 2H) contiguous, [gate | val] → silu(gate)·val (..., H)."""
    H = u.shape[-1] // 2
    rows = u.numel() // (2 * H)
    y = torch.empty(*u.shape[:-1], H, device=u.device, dtype=u.dtype)
    BLOCK = min(1024, triton.next_power_of_2(H))
    _swiglu_kernel[(rows, triton.cdiv(H, BLOCK))](u, y, H, BLOCK=BLOCK, num_warps=4)
    return y


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, r_ptr, y_ptr, M, N, K, sxm, swn, srm, sym,
                   HAS_R: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    rn = pid * BN + tl.arange(0, BN)
    rm = tl.arange(0, BM)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        w = tl.load(w_ptr + rn[:, None] * swn + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K), other=0.0)
        x = tl.load(x_ptr + rm[:, None] * sxm + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    msk = (rm[:, None] < M) & (rn[None, :] < N)
    if HAS_R:
        acc += tl.load(r_ptr + rm[:, None] * srm + rn[None, :], mask=msk, other=0.0)
    tl.store(y_ptr + rm[:, None] * sym + rn[None, :], acc, mask=msk)


SKINNY_CONFIGS = [{"BN": 4, "BK": 128, "num_warps": 4}, {"BN": 8, "BK": 128, "num_warps": 4},
                  {"BN": 16, "BK": 64, "num_warps": 4}, {"BN": 8, "BK": 64, "num_warps": 2}]
_TUNED: dict[tuple, dict | None] = {}  # (N, K, M, device) -> fastest config, None = cuBLAS


def _pick(x: torch.Tensor, w: torch.Tensor) -> dict | None:
    """The fastest of the tile configs and cuBLAS for this GEMM shape, measured once (outside graph
    capture; inside one, an untimed shape takes cuBLAS)."""
    key = (w.shape[0], w.shape[1], x.shape[0], w.device.index)
    if key in _TUNED:
        return _TUNED[key]
    if torch.cuda.is_current_stream_capturing():
        return None
    from triton.testing import do_bench

    def run(c):
        return (lambda: torch.nn.functional.linear(x, w)) if c is None else (lambda: skinny_linear(x, w, None, c))
    times = [(do_bench(run(c), warmup=2, rep=10), i) for i, c in enumerate([None] + SKINNY_CONFIGS)]
    best = ([None] + SKINNY_CONFIGS)[min(times)[1]]
    _TUNED[key] = best
    return best


def linear(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
    """float32 x (M, K), M <= 8 → x·wᵀ (+ r) by whichever of cuBLAS and the skinny kernel was
    measured faster for this shape."""
    c = _pick(x, w)
    if c is None:
        return torch.nn.functional.linear(x, w) if r is None else torch.addmm(r, x, w.t())
    return skinny_linear(x, w, r, c)


def skinny_linear(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor | None = None, cfg: dict | None = None) -> torch.Tensor:
    """float32 x (M, K) with M <= 8, w (N, K) contiguous, optional r (M, N) → x·wᵀ (+ r), (M, N)."""
    M, K = x.shape
    N = w.shape[0]
    if M > 8:
        raise ValueError(f"skinny_linear: at most 8 rows, got {M}")
    c = cfg or SKINNY_CONFIGS[1]
    y = torch.empty(M, N, device=x.device, dtype=torch.float32)
    rr = r if r is not None else y
    _skinny_kernel[(triton.cdiv(N, c["BN"]),)](
        x, w, rr, y, M, N, K, x.stride(0), w.stride(0), rr.stride(0), y.stride(0),
        HAS_R=r is not None, BM=8, BN=c["BN"], BK=c["BK"], num_warps=c["num_warps"])
    return y


def selftest(device: torch.device) -> dict[str, str | None]:
    """Run every kernel once on small random inputs against torch: {kernel: None if it agrees,
    else what went wrong}. The caller uses the plain torch path for a kernel that failed."""
    g = torch.Generator(device).manual_seed(0)
    out = {}
    checks = [("skinny_linear", _check_skinny), ("swiglu", _check_swiglu), ("rope_kv", _check_rope_kv)]
    checks += [(f"attention_{str(dt).split('.')[-1]}", lambda d, g, dt=dt: _check_attention(d, g, dt))
               for dt in (torch.float32, torch.bfloat16, torch.float16)]
    for name, check in checks:
        try:
            check(device, g)
            out[name] = None
        except Exception as e:  # noqa: BLE001 — compile errors, resource limits, mismatches
            out[name] = f"{type(e).__name__}: {e}"
    return out


def _check_skinny(device, g):
    x, w, r = (torch.randn(s, device=device, generator=g) for s in ((3, 40), (24, 40), (3, 24)))
    ref = torch.addmm(r, x, w.t())
    if not torch.allclose(skinny_linear(x, w, r, SKINNY_CONFIGS[0]), ref, rtol=1e-4, atol=1e-4):
        raise RuntimeError("skinny_linear disagrees with torch.addmm")


def _check_swiglu(device, g):
    for dt in (torch.float32, torch.bfloat16):
        u = torch.randn(2, 2 * 24, device=device, generator=g).to(dt)
        gate, val = u.chunk(2, -1)
        if not torch.allclose(swiglu(u).float(), (torch.nn.functional.silu(gate) * val).float(), rtol=1e-2, atol=1e-2):
            raise RuntimeError(f"swiglu disagrees with torch ({dt})")


def _check_rope_kv(device, g):
    B, T, nh, nkv, hs, S = 1, 2, 4, 2, 8, 16
    qkv = torch.randn(B, T, (nh + 2 * nkv) * hs, device=device, generator=g)
    pos = torch.tensor([[3, 4]], device=device)
    ang = torch.randn(S, hs // 2, device=device, generator=g)
    k = torch.zeros(B, nkv, S, hs, device=device)
    v = torch.zeros_like(k)
    q = rope_kv(qkv, pos, ang.cos().contiguous(), ang.sin().contiguous(), k, v, nh)
    xr = qkv.view(B, T, nh + 2 * nkv, hs // 2, 2)
    rot = torch.polar(torch.ones_like(ang), ang)[pos][:, :, None]  # (B, T, 1, hs/2)
    qk = torch.view_as_real(torch.view_as_complex(xr[:, :, : nh + nkv].contiguous()) * rot).flatten(-2)
    want_q = qk[:, :, :nh].transpose(1, 2).reshape(B, nkv, (nh // nkv) * T, hs)
    want_k = qk[:, :, nh:].transpose(1, 2)
    if not (torch.allclose(q, want_q, atol=1e-5) and torch.allclose(k[:, :, 3:5], want_k, atol=1e-5)
            and torch.equal(v[:, :, 3:5], qkv.view(B, T, nh + 2 * nkv, hs)[:, :, nh + nkv:].transpose(1, 2))):
        raise RuntimeError("rope_kv disagrees with torch")


def _check_attention(device, g, dtype):
    # 2 rows, 2 kv heads of 2 query heads each, 3 new tokens at different positions; then the tile
    # shapes in use (head dims 64, 96, 128) at the positions of a decode step
    B, nkv, grp, T, S, hs = 2, 2, 2, 3, 80, 16
    shapes = [(B, nkv, grp, T, S, hs, [[10, 11, 12], [70, 71, 72]])]
    shapes += [(1, 2, 1, 6, 208, h, [[190, 191, 192, 193, 194, 195]]) for h in (64, 96, 128)]
    for B, nkv, grp, T, S, hs, pos in shapes:
        qa = torch.randn(B, nkv, grp * T, hs, device=device, generator=g).to(dtype)
        ka, va = (torch.randn(B, nkv, S, hs, device=device, generator=g).to(dtype) for _ in range(2))
        pos = torch.tensor(pos, device=device)
        mask = torch.arange(S, device=device)[None, None, :] <= pos[:, :, None]  # (B, T, S)
        mask = mask.repeat(1, grp, 1)[:, None]  # rows j·T + t
        want = torch.nn.functional.scaled_dot_product_attention(qa.float(), ka.float(), va.float(), attn_mask=mask)
        got = attention(qa, ka, va, pos, T).float()
        if float((got - want).norm() / want.norm()) > (1e-5 if dtype == torch.float32 else 2e-2):
            raise RuntimeError(f"attention disagrees with torch SDPA (head dim {hs}, {dtype})")
