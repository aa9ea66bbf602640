"""x86 SIMD LUT16 scanning for numba: in-register byte shuffles (``vpshufb``) written as LLVM IR.

numba has no vector types, but a ``numba.extending.intrinsic`` can emit LLVM IR directly, and
LLVM's x86 back end turns ``llvm.x86.avx2.pshuf.b`` / ``llvm.x86.avx512.pshuf.b.512`` into
``vpshufb`` on ymm / zmm registers. This module builds one such intrinsic per register width and
the per-query scan kernels that call them; `available_lanes()` says which widths this process can
run (the kernels are compiled lazily, so importing this module is safe on any CPU).

Code layout it reads (built by `index.py`, see `_kernels.to_blocked`): the entries of each
partition are cut into blocks of ``bw`` points (the last one ragged, width ``w <= bw``); a block
starting at entry ``eb`` stores, for every code byte ``kb`` (4-bit subspace 2kb in the low nibble,
2kb+1 in the high nibble), the ``w`` points' bytes contiguously at ``eb * nbytes + kb * w``. One
vector load therefore brings 32 (or 64) points' codes for two subspaces. The flat code array has
64 bytes of slack so that a load in a ragged block may read past its last point; those lanes are
never used.

Sums: each shuffle yields 32 (64) uint8 LUT entries. LUT entries are < 128, so the two shuffles
of a code byte (its low- and high-nibble subspaces) add as bytes without a carry (one add instead
of widening each); that sum is added as uint16 lanes (each lane = an even point's byte + 256 *
the next odd point's byte) into one accumulator, and shifted right by 8 into a second; at the end
``even = acc0 - (acc1 << 8)`` (mod 2^16) and ``odd = acc1``. Both are exact because the LUT
levels keep every point's true sum below 2^16.

Order of work (`_scan_chunk`): a thread walks its chunk of queries partition by partition, first
over every query's nearest partition, then over the rest, so each query's candidate threshold is
tight early; queries probing the same partition are taken two at a time, sharing each code
vector's load and nibble split (`pair_sums_32`). Neither changes any result.
"""

from __future__ import annotations

import os
import platform

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_PSHUFB = {32: "llvm.x86.avx2.pshuf.b", 64: "llvm.x86.avx512.pshuf.b.512"}
SLACK = 64  # bytes after the last code that a ragged block's vector loads may touch


def _host_lanes() -> int:
    """Widest shuffle this process can compile and run: 64 (AVX-512BW), 32 (AVX2) or 0."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 0
    from numba import config

    # numba compiles for the host CPU unless told otherwise; a generic target has no AVX2
    if config.CPU_NAME not in (None, "host") or config.CPU_FEATURES:
        return 0
    try:
        import llvmlite.binding as llvm

        feats = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001 - no feature map: take the portable kernel
        return 0
    if not feats.get("avx2", False):
        return 0
    return 64 if feats.get("avx512bw", False) else 32


HOST_LANES = _host_lanes()


def available_lanes() -> int:
    """Shuffle width the LUT16 scan uses: the host's, capped by ``PARETOML_RETRIEVAL_SIMD``
    (``0`` forces the portable kernel, ``32`` AVX2 only)."""
    cap = os.environ.get("PARETOML_RETRIEVAL_SIMD")
    if cap is None or cap == "":
        return HOST_LANES
    try:
        cap_i = int(cap)
    except ValueError:
        raise ValueError(f"PARETOML_RETRIEVAL_SIMD must be 0, 32 or 64, got {cap!r}") from None
    if cap_i not in (0, 32, 64):
        raise ValueError(f"PARETOML_RETRIEVAL_SIMD must be 0, 32 or 64, got {cap!r}")
    return min(cap_i, HOST_LANES)


def pair_queries() -> bool:
    """Whether the scan pairs queries per code load (``PARETOML_RETRIEVAL_PAIR=0`` turns it off,
    for A/B timing; results are identical)."""
    v = os.environ.get("PARETOML_RETRIEVAL_PAIR", "1")
    if v not in ("0", "1"):
        raise ValueError(f"PARETOML_RETRIEVAL_PAIR must be 0 or 1, got {v!r}")
    return v == "1"


def _broadcast(builder, value, ty: ir.VectorType):
    """A vector of type `ty` with every element = the scalar IR value `value`."""
    one = builder.insert_element(ir.Constant(ty, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_I32, ty.count), [0] * ty.count))


@intrinsic
def _ctz(typingctx, x):
    """Index of the lowest set bit of a uint64 (undefined for 0)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64, ir.IntType(1)]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return types.int64(types.uint64), codegen


def _splat(ty: ir.VectorType, value: int) -> ir.Constant:
    return ir.Constant(ty, [ir.Constant(ty.element, value)] * ty.count)


def _emit_sums(builder, lanes: int, cdata, cbase, stride, nbytes, queries) -> list:
    """Emit the LUT16 sums of one block of `lanes` points for one or more queries that share each
    code vector's load and nibble split.

    `queries` holds one (lut data pointer, lut base offset, out data pointer, at_least) of IR
    values per query. For each, ``out[i] = sum_kb lut[lbase + 32kb + (c & 15)] + lut[lbase + 32kb
    + 16 + (c >> 4)]`` with ``c = codes[cbase + kb * stride + i]`` is stored as uint16, and the
    returned list holds its lane mask ``out[i] >= at_least`` (an i`lanes` IR value)."""
    v8 = ir.VectorType(_I8, lanes)
    v16 = ir.VectorType(_I16, lanes // 2)
    out_ty = ir.VectorType(_I16, lanes)
    lut_ty = ir.VectorType(_I8, 16)
    # broadcast a 16-byte table into every 128-bit lane (vpshufb looks up within 128-bit lanes)
    dup = ir.Constant(ir.VectorType(_I32, lanes), [i % 16 for i in range(lanes)])
    # interleave even / odd point sums back into point order
    inter = ir.Constant(ir.VectorType(_I32, lanes), [j for i in range(lanes // 2) for j in (i, lanes // 2 + i)])
    pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8]), _PSHUFB[lanes])
    accs = [(cgutils.alloca_once_value(builder, _splat(v16, 0)), cgutils.alloca_once_value(builder, _splat(v16, 0)))
            for _ in queries]
    m4, four, eight = _splat(v8, 15), _splat(v8, 4), _splat(v16, 8)
    with cgutils.for_range(builder, nbytes) as loop:
        kb = loop.index
        cptr = builder.gep(cdata, [builder.add(cbase, builder.mul(kb, stride))])
        c = builder.load(builder.bitcast(cptr, v8.as_pointer()), align=1)
        lo = builder.and_(c, m4)
        hi = builder.and_(builder.lshr(c, four), m4)
        loff = builder.shl(kb, ir.Constant(_I64, 5))
        for (ldata, lbase, _, _), (acc0, acc1) in zip(queries, accs):
            lptr = builder.gep(ldata, [builder.add(lbase, loff)])
            tlo = builder.load(builder.bitcast(lptr, lut_ty.as_pointer()), align=1)
            thi = builder.load(builder.bitcast(builder.gep(lptr, [ir.Constant(_I64, 16)]), lut_ty.as_pointer()),
                               align=1)
            tlo = builder.shuffle_vector(tlo, tlo, dup)
            thi = builder.shuffle_vector(thi, thi, dup)
            # entries are < 128, so the two subspaces' bytes add without carry (one vpaddb)
            t = builder.bitcast(builder.add(builder.call(pshufb, [tlo, lo]), builder.call(pshufb, [thi, hi])), v16)
            builder.store(builder.add(builder.load(acc0), t), acc0)
            builder.store(builder.add(builder.load(acc1), builder.lshr(t, eight)), acc1)
    masks = []
    for (_, _, odata, least), (acc0, acc1) in zip(queries, accs):
        a0 = builder.load(acc0)
        a1 = builder.load(acc1)
        even = builder.sub(a0, builder.shl(a1, eight))
        res = builder.shuffle_vector(even, a1, inter)
        builder.store(res, builder.bitcast(odata, out_ty.as_pointer()), align=1)
        cmp = builder.icmp_unsigned(">=", res, _broadcast(builder, least, out_ty))
        masks.append(builder.bitcast(cmp, ir.IntType(lanes)))
    return masks


def _u8_vector(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.uint8 and a.ndim == 1


def _u16_vector(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.uint16 and a.ndim == 1


def _make_block_sums(lanes: int):
    """An intrinsic ``f(codes, cbase, stride, nbytes, lut, lbase, out, at_least) -> mask`` that
    writes, for the `lanes` points ``i`` of one block, ``out[i] = sum_kb lut[lbase + 32kb + (c & 15)]
    + lut[lbase + 32kb + 16 + (c >> 4)]`` with ``c = codes[cbase + kb * stride + i]`` (uint16), and
    returns the uint64 bit mask of the lanes with ``out[i] >= at_least`` (a uint16 value)."""

    def block_sums(typingctx, codes, cbase, stride, nbytes, lut, lbase, out, at_least):
        if not (_u8_vector(codes) and _u8_vector(lut) and _u16_vector(out)):
            return None
        sig = types.uint64(codes, types.int64, types.int64, types.int64, lut, types.int64, out, types.uint16)

        def codegen(context, builder, signature, args):
            ca, cb0, stride_v, nb, la, lb0, oa, least = args
            sa = signature.args
            data = [context.make_array(sa[k])(context, builder, v).data for k, v in ((0, ca), (4, la), (6, oa))]
            (bits,) = _emit_sums(builder, lanes, data[0], cb0, stride_v, nb, [(data[1], lb0, data[2], least)])
            return builder.zext(bits, _I64) if lanes < 64 else bits

        return sig, codegen

    block_sums.__name__ = f"block_sums_{lanes}"
    return intrinsic(block_sums)


def _make_pair_sums(lanes: int):
    """As `_make_block_sums` for two queries at once: one load and nibble split of each code
    vector feeds both queries' shuffles. ``f(codes, cbase, stride, nbytes, luta, lutb, outa, outb,
    least_a, least_b) -> mask_a | mask_b << 32`` (32 lanes only, so both masks fit one uint64)."""
    assert lanes == 32

    def pair_sums(typingctx, codes, cbase, stride, nbytes, luta, lutb, outa, outb, least_a, least_b):
        if not (_u8_vector(codes) and _u8_vector(luta) and _u8_vector(lutb) and _u16_vector(outa)
                and _u16_vector(outb)):
            return None
        sig = types.uint64(codes, types.int64, types.int64, types.int64, luta, lutb, outa, outb,
                           types.uint16, types.uint16)

        def codegen(context, builder, signature, args):
            ca, cb0, stride_v, nb, la, lb, oa, ob, least_a_v, least_b_v = args
            sa = signature.args
            data = [context.make_array(sa[k])(context, builder, v).data
                    for k, v in ((0, ca), (4, la), (5, lb), (6, oa), (7, ob))]
            zero = ir.Constant(_I64, 0)
            ma, mb = _emit_sums(builder, lanes, data[0], cb0, stride_v, nb,
                                [(data[1], zero, data[3], least_a_v), (data[2], zero, data[4], least_b_v)])
            return builder.or_(builder.zext(ma, _I64), builder.shl(builder.zext(mb, _I64), ir.Constant(_I64, 32)))

        return sig, codegen

    pair_sums.__name__ = f"pair_sums_{lanes}"
    return intrinsic(pair_sums)


block_sums_32 = _make_block_sums(32)
block_sums_64 = _make_block_sums(64)


@njit(cache=True, inline="always")
def lut16_block_avx2(codes, cbase, w, nbytes, lut, lbase, out, at_least):
    """Sums of a block of `w` (<= 64) points whose code bytes have stride `w`, into out[:w];
    returns the bit mask of the lanes < w whose sum is >= at_least."""
    mask = block_sums_32(codes, cbase, w, nbytes, lut, lbase, out[:32], at_least)
    if w > 32:
        mask |= block_sums_32(codes, cbase + 32, w, nbytes, lut, lbase, out[32:], at_least) << np.uint64(32)
    if w < 64:
        mask &= (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    return mask


pair_sums_32 = _make_pair_sums(32)


@njit(cache=True, inline="always")
def lut16_pair(codes, cbase, w, nbytes, luta, lutb, outa, outb, at_least_a, at_least_b):
    """`lut16_block_avx2` for two queries sharing each code load: returns both lane masks."""
    lo32 = np.uint64(0xFFFFFFFF)
    m = pair_sums_32(codes, cbase, w, nbytes, luta, lutb, outa[:32], outb[:32], at_least_a, at_least_b)
    ma = m & lo32
    mb = m >> np.uint64(32)
    if w > 32:
        m = pair_sums_32(codes, cbase + 32, w, nbytes, luta, lutb, outa[32:], outb[32:], at_least_a, at_least_b)
        ma |= (m & lo32) << np.uint64(32)
        mb |= (m >> np.uint64(32)) << np.uint64(32)
    if w < 64:
        lim = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
        ma &= lim
        mb &= lim
    return ma, mb


@njit(cache=True, inline="always")
def lut16_block_avx512(codes, cbase, w, nbytes, lut, lbase, out, at_least):
    """As `lut16_block_avx2` with one 64-byte shuffle per subspace pair for blocks of > 32 points."""
    if w > 32:
        mask = block_sums_64(codes, cbase, w, nbytes, lut, lbase, out, at_least)
    else:
        mask = block_sums_32(codes, cbase, w, nbytes, lut, lbase, out[:32], at_least)
    if w < 64:
        mask &= (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    return mask


@njit(cache=True, inline="always")
def _int_threshold(thr, base, scale, bias_max):
    """Smallest integer LUT sum that may score > thr (two LUT steps of margin for float
    rounding): lanes below it are never candidates. 0 when every lane must be checked."""
    if thr == -np.inf:
        return np.uint16(0)
    t = (thr - base - bias_max) / scale - 2.0
    if t >= 65535.0:
        return np.uint16(65535)
    if t >= 0.0:
        return np.uint16(int(t) + 1)
    return np.uint16(0)  # negative or nan: check every lane


@njit(cache=True, inline="always")
def _scan_chunk(q0, q1, probes, base, lut, scale, offsets, slots, codes, part_bias_max, slot_bias, bw,
                cand_s, cand_i, sizes, scored, block_fn, pair):
    """Scan queries q0:q1 partition by partition: every query probing partition p is scored
    against it while its codes are in cache. Writes each query's best `cap` (score, slot) pairs
    (unordered) to cand_s / cand_i and their count to sizes (rows start empty)."""
    cap = cand_s.shape[1]
    nbytes = lut.shape[1] // 32
    num_parts = offsets.shape[0] - 1
    out = np.empty(64, np.uint16)
    # "query -> probes" inverted into "bucket -> (query, probe rank)", ranks ascending. Bucket
    # p holds the queries whose nearest partition is p, bucket P + p those probing p further
    # down their list: every query first scans its nearest partition, which sets a tight
    # candidate threshold early (fewer lanes pass the SIMD compare afterwards)
    nbk = 2 * num_parts
    counts = np.zeros(nbk + 1, np.int64)
    nl = probes.shape[1]
    for q in range(q0, q1):
        for li in range(nl):
            p = probes[q, li]
            if p >= 0:
                counts[p + (num_parts if li else 0) + 1] += 1
    for bk in range(nbk):
        counts[bk + 1] += counts[bk]
    fill = counts[:-1].copy()
    pairs = np.empty((counts[nbk], 2), np.int64)
    for li in range(nl):
        for q in range(q0, q1):
            p = probes[q, li]
            if p >= 0:
                bk = p + (num_parts if li else 0)
                pairs[fill[bk], 0] = q
                pairs[fill[bk], 1] = li
                fill[bk] += 1
    # candidates: per query an unsorted buffer of up to 2 * cap order-preserving keys
    # (score bits << 32 | slot); when it fills, the best cap are kept and the cap-th best score
    # becomes the threshold (amortised O(1) per candidate instead of a heap push)
    nqc = q1 - q0
    buf = np.empty((nqc, 2 * cap), np.uint64)
    nbuf = np.zeros(nqc, np.int64)
    thr_q = np.full(nqc, -np.inf, np.float32)
    tkey_q = np.zeros(nqc, np.uint64)
    bits = np.empty(1, np.uint32)
    as_f32 = bits.view(np.float32)
    outb = np.empty(64, np.uint16)
    for bk in range(nbk):
        p = bk % num_parts
        e0 = offsets[p]
        e1 = offsets[p + 1]
        if e0 == e1:
            continue
        bmax = part_bias_max[p]
        pi = counts[bk]
        while pi < counts[bk + 1]:
            qa, ra, thr_a, tk_a, n_a, sc_a, b_a, ithr_a, buf_a = _query_state(
                pi, pairs, q0, e1 - e0, scored, thr_q, tkey_q, nbuf, scale, base, bmax, buf)
            if pair and pi + 1 < counts[bk + 1]:
                # two queries share each code load and nibble split
                qb, rb, thr_b, tk_b, n_b, sc_b, b_b, ithr_b, buf_b = _query_state(
                    pi + 1, pairs, q0, e1 - e0, scored, thr_q, tkey_q, nbuf, scale, base, bmax, buf)
                for eb in range(e0, e1, bw):
                    w = min(bw, e1 - eb)
                    mask_a, mask_b = lut16_pair(codes, eb * nbytes, w, nbytes, lut[qa], lut[qb], out, outb,
                                                ithr_a, ithr_b)
                    if mask_a:
                        thr_a, tk_a, ithr_a, n_a = _take(mask_a, out, eb, slots, slot_bias, b_a, sc_a, bmax,
                                                         thr_a, tk_a, ithr_a, n_a, buf_a, cap, bits, as_f32)
                    if mask_b:
                        thr_b, tk_b, ithr_b, n_b = _take(mask_b, outb, eb, slots, slot_bias, b_b, sc_b, bmax,
                                                         thr_b, tk_b, ithr_b, n_b, buf_b, cap, bits, as_f32)
                _store_state(rb, thr_b, tk_b, n_b, thr_q, tkey_q, nbuf)
                step = 2
            else:
                lq = lut[qa]
                for eb in range(e0, e1, bw):
                    w = min(bw, e1 - eb)
                    mask_a = block_fn(codes, eb * nbytes, w, nbytes, lq, 0, out, ithr_a)
                    if mask_a:
                        thr_a, tk_a, ithr_a, n_a = _take(mask_a, out, eb, slots, slot_bias, b_a, sc_a, bmax,
                                                         thr_a, tk_a, ithr_a, n_a, buf_a, cap, bits, as_f32)
                step = 1
            _store_state(ra, thr_a, tk_a, n_a, thr_q, tkey_q, nbuf)
            pi += step
    for r in range(nqc):
        q = q0 + r
        n = nbuf[r]
        if n > cap:
            _keep_top(buf[r], n, cap)
            n = cap
        keys = buf[r, :n]
        for j in range(keys.shape[0]):
            bits[0] = _unorder_bits(np.uint32(keys[j] >> np.uint64(32)))
            cand_s[q, j] = as_f32[0]
            cand_i[q, j] = np.int32(keys[j] & np.uint64(0xFFFFFFFF))
        sizes[q] = keys.shape[0]


@njit(cache=True, inline="always")
def _query_state(pi, pairs, q0, n_entries, scored, thr_q, tkey_q, nbuf, scale, base, bmax, buf):
    """The query of (query, probe rank) pair `pi` about to scan a partition of `n_entries`: counts
    them as scored and returns (query, chunk row, float threshold, key threshold, buffer fill, LUT
    scale, base score of that probe, integer threshold, candidate buffer)."""
    q = pairs[pi, 0]
    r = q - q0
    scored[q] += n_entries
    thr = thr_q[r]
    sc = scale[q]
    b = base[q, pairs[pi, 1]]
    return q, r, thr, tkey_q[r], nbuf[r], sc, b, _int_threshold(thr, b, sc, bmax), buf[r]


@njit(cache=True, inline="always")
def _store_state(r, thr, tkey, n, thr_q, tkey_q, nbuf):
    """Keep chunk row r's thresholds and buffer fill for its next partition."""
    thr_q[r] = thr
    tkey_q[r] = tkey
    nbuf[r] = n


@njit(cache=True, inline="always")
def _take(mask, out, eb, slots, slot_bias, b, sc, bmax, thr, tkey, ithr, n, bufr, cap, bits, as_f32):
    """Offer the lanes of `mask` (sums in `out`, entries eb + lane) to one query's candidate
    buffer `bufr` holding `n` keys. A lane enters when its key (score, then slot) beats `tkey`,
    the worst key kept at the last compaction, so the final set is the best `cap` keys whatever
    the scan order (ties go to the higher slot, as in `_kernels._heap_push`). Returns the updated
    (float threshold, key threshold, integer threshold, n)."""
    while mask:
        i = _ctz(mask)
        mask &= mask - np.uint64(1)
        slot = slots[eb + i]
        s = b + sc * np.float32(out[i]) + slot_bias[slot]
        if s >= thr:
            as_f32[0] = s + np.float32(0.0)  # -0.0 -> +0.0: equal floats get equal keys
            key = (np.uint64(_order_bits(bits[0])) << np.uint64(32)) | np.uint64(slot)
            if key > tkey:
                bufr[n] = key
                n += 1
                if n == 2 * cap:
                    tkey = _keep_top(bufr, n, cap)
                    n = cap
                    bits[0] = _unorder_bits(np.uint32(tkey >> np.uint64(32)))
                    thr = as_f32[0]
                    ithr = _int_threshold(thr, b, sc, bmax)
    return thr, tkey, ithr, n


@njit(cache=True)
def _keep_top(a, n, k):
    """Reorder a[:n] (n > k) so that a[:k] holds its k largest values; returns the smallest of
    them (quickselect, Hoare partition, median-of-three pivots)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        i = lo
        j = hi
        while i <= j:
            while a[i] > pivot:
                i += 1
            while a[j] < pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k - 1 <= j:
            hi = j
        elif k - 1 >= i:
            lo = i
        else:
            break
    worst = a[0]
    for t in range(1, k):
        worst = min(worst, a[t])
    return worst


@njit(cache=True, inline="always")
def _order_bits(u):
    """float32 bits -> uint32 whose unsigned order is the floats' order."""
    if u >> np.uint32(31):
        return ~u
    return u | np.uint32(0x80000000)


@njit(cache=True, inline="always")
def _unorder_bits(k):
    """Inverse of `_order_bits`."""
    if k >> np.uint32(31):
        return k & np.uint32(0x7FFFFFFF)
    return ~k


@njit(cache=True)
def _chunk_avx2(q0, q1, probes, base, lut, scale, offsets, slots, codes, part_bias_max, slot_bias, bw,
                cand_s, cand_i, sizes, scored, pair):
    _scan_chunk(q0, q1, probes, base, lut, scale, offsets, slots, codes, part_bias_max, slot_bias, bw,
                cand_s, cand_i, sizes, scored, lut16_block_avx2, pair)


@njit(cache=True)
def _chunk_avx512(q0, q1, probes, base, lut, scale, offsets, slots, codes, part_bias_max, slot_bias, bw,
                  cand_s, cand_i, sizes, scored, pair):
    _scan_chunk(q0, q1, probes, base, lut, scale, offsets, slots, codes, part_bias_max, slot_bias, bw,
                cand_s, cand_i, sizes, scored, lut16_block_avx512, pair)


@njit(cache=True, parallel=True)
def scan_lut16_avx2(probes, base, lut, scale, offsets, slots, codes, part_bias_max, slot_bias, bw,
                    nchunks, cand_s, cand_i, sizes, scored, pair=True):
    """LUT16 scan of every query's probed partitions with AVX2 shuffles, one query per task.

    Args:
        probes: (nq, L) int32 partitions in probe order (-1 = none).
        base: (nq, L) float32 score offset of (query, probe): <q, centre> + LUT bias.
        lut: (nq, 32 * nbytes) uint8 LUTs, 16 entries per subspace (even count, zero-padded).
        scale: (nq,) float32 LUT step.  offsets: (P+1,) int64 partition entry ranges.
        slots: (E,) int32 slot per entry.  codes: blocked codes (see the module docstring).
        part_bias_max: (P,) float32 max of slot_bias over each partition's entries.
        slot_bias: (N,) float32 per-slot score offset.  bw: block width of the layout.
        cand_s, cand_i, sizes, scored: as `_kernels.scan_lut16`.
        pair: score two queries that probe the same partition per code load (shared load and
            nibble split); results are identical either way.
    """
    nq = probes.shape[0]
    step = (nq + nchunks - 1) // nchunks
    for ch in prange(nchunks):
        _chunk_avx2(ch * step, min(nq, (ch + 1) * step), probes, base, lut, scale, offsets, slots, codes,
                    part_bias_max, slot_bias, bw, cand_s, cand_i, sizes, scored, pair)


@njit(cache=True, parallel=True)
def scan_lut16_avx512(probes, base, lut, scale, offsets, slots, codes, part_bias_max, slot_bias, bw,
                      nchunks, cand_s, cand_i, sizes, scored, pair=True):
    """`scan_lut16_avx2` with 64-byte (AVX-512BW) shuffles for blocks of more than 32 points."""
    nq = probes.shape[0]
    step = (nq + nchunks - 1) // nchunks
    for ch in prange(nchunks):
        _chunk_avx512(ch * step, min(nq, (ch + 1) * step), probes, base, lut, scale, offsets, slots, codes,
                      part_bias_max, slot_bias, bw, cand_s, cand_i, sizes, scored, pair)

