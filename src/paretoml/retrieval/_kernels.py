"""numba kernels of the SOAR index: codebook training, anisotropic encoding, LUT16 scanning,
top-k selection and exact re-ranking.

Every kernel is compiled with ``cache=True`` and the parallel ones use ``prange``, so
``numba.set_num_threads`` decides how many cores a call uses. Inputs are validated by the
Python layer (`index.py`); nothing here raises on user data.

Layout of a partitioned, 4-bit quantized index (built by `index.py`)::

    part_offsets (P+1,) int64   entries of partition p are rows part_offsets[p]:part_offsets[p+1]
    part_slots   (E,)   int32   the vector slot each entry refers to (a vector spilled to a second
                                partition has two entries with the same slot)
    part_codes   (E, B/2) uint8 two 4-bit codes per byte: block 2k in the low nibble, 2k+1 in the high
                                (pq8: (E, B) one byte per block)

For ``ah4`` the codes are kept in the blocked layout of `to_blocked` (per partition, blocks of
32 or 64 points with each code byte's points contiguous), which `_simd` scans with in-register
byte shuffles (AVX2 / AVX-512BW ``vpshufb``). `scan_lut16` below is the portable fallback for
CPUs without them: it takes the queries of one thread's chunk, inverts "query -> probed
partitions" into "partition -> queries", and scores each partition's entries against all its
queries at once: the per-query uint8 LUTs are transposed into ``T[b, code, query]`` so that the
innermost loop adds contiguous query vectors (SWAR over queries) instead of gathering one table
entry per query.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# queries scored together against one partition; T is B*16*_GROUP uint16 (~200 KB at d=384)
_GROUP = 32


# --------------------------------------------------------------------------- codebooks


@njit(cache=True, inline="always")
def _nearest_centre(res, i, b, cb):
    """Index of block b's codebook centre nearest to res[i, b] (squared L2)."""
    best, bestd = 0, np.inf
    for j in range(cb.shape[1]):
        dist = 0.0
        for t in range(cb.shape[2]):
            diff = res[i, b, t] - cb[b, j, t]
            dist += diff * diff
        if dist < bestd:
            bestd, best = dist, j
    return best


@njit(cache=True, parallel=True)
def train_codebooks(res: np.ndarray, num_centres: int, iters: int, seed: int) -> np.ndarray:
    """Lloyd's k-means run independently in every block of `res`.

    Args:
        res: (n, B, dpb) float32 residual sample split into B blocks of dpb dims.
    Returns:
        (B, num_centres, dpb) float32 codebooks.
    """
    n, nb, dpb = res.shape
    cb = np.zeros((nb, num_centres, dpb), np.float32)
    for b in prange(nb):
        np.random.seed(seed + b)
        # init: distinct random rows (n >= num_centres is checked by the caller)
        perm = np.random.permutation(n)
        for j in range(num_centres):
            for t in range(dpb):
                cb[b, j, t] = res[perm[j], b, t]
        sums = np.zeros((num_centres, dpb), np.float64)
        cnt = np.zeros(num_centres, np.int64)
        for _ in range(iters):
            sums[:] = 0.0
            cnt[:] = 0
            for i in range(n):
                best = _nearest_centre(res, i, b, cb)
                cnt[best] += 1
                for t in range(dpb):
                    sums[best, t] += res[i, b, t]
            for j in range(num_centres):
                if cnt[j] > 0:
                    for t in range(dpb):
                        cb[b, j, t] = sums[j, t] / cnt[j]
                else:  # empty centre: re-seed on a random row
                    r = np.random.randint(n)
                    for t in range(dpb):
                        cb[b, j, t] = res[r, b, t]
    return cb


@njit(cache=True, parallel=True)
def encode(res: np.ndarray, xdir: np.ndarray, eta: np.ndarray, cb: np.ndarray, passes: int) -> np.ndarray:
    """Score-aware (anisotropic) encoding by coordinate descent over blocks.

    Minimises ``||e||^2 + (eta - 1) * <e, xdir>^2`` with e = res - quantized(res): the error
    parallel to the datapoint costs `eta` times the orthogonal error (Guo et al. 2020). With
    eta = 1 this is plain nearest-centre PQ encoding.

    Args:
        res: (n, B, dpb) float32 residuals.  xdir: (n, B, dpb) unit datapoint directions.
        eta: (n,) float32 parallel/orthogonal weight ratio.  cb: (B, K, dpb) codebooks.
    Returns:
        (n, B) uint8 codes.
    """
    n, nb, dpb = res.shape
    k = cb.shape[1]
    codes = np.zeros((n, nb), np.uint8)
    for i in prange(n):
        err = np.empty((nb, dpb), np.float32)
        sq = 0.0
        par = 0.0
        for b in range(nb):  # start from the nearest centre of each block
            best = _nearest_centre(res, i, b, cb)
            codes[i, b] = best
            for t in range(dpb):
                e = res[i, b, t] - cb[b, best, t]
                err[b, t] = e
                sq += e * e
                par += e * xdir[i, b, t]
        w = eta[i] - 1.0
        if w == 0.0:
            continue
        for _ in range(passes):
            changed = False
            for b in range(nb):
                esq_b = 0.0
                epar_b = 0.0
                for t in range(dpb):
                    esq_b += err[b, t] * err[b, t]
                    epar_b += err[b, t] * xdir[i, b, t]
                sq0 = sq - esq_b
                par0 = par - epar_b
                best = int(codes[i, b])
                bestl = sq + w * par * par
                for j in range(k):
                    nsq = 0.0
                    npar = 0.0
                    for t in range(dpb):
                        e = res[i, b, t] - cb[b, j, t]
                        nsq += e * e
                        npar += e * xdir[i, b, t]
                    loss = sq0 + nsq + w * (par0 + npar) * (par0 + npar)
                    if loss < bestl - 1e-12:
                        bestl = loss
                        best = j
                if best != codes[i, b]:
                    changed = True
                    codes[i, b] = best
                    sq = sq0
                    par = par0
                    for t in range(dpb):
                        e = res[i, b, t] - cb[b, best, t]
                        err[b, t] = e
                        sq += e * e
                        par += e * xdir[i, b, t]
            if not changed:
                break
    return codes


# --------------------------------------------------------------------------- heaps


@njit(cache=True, inline="always")
def _worse(s1, i1, s2, i2):
    """Whether entry (s1, i1) ranks below (s2, i2): lower score, or equal score and lower index.
    Breaking ties by index makes every kept set independent of the order entries arrive in."""
    return s1 < s2 or (s1 == s2 and i1 < i2)


@njit(cache=True, inline="always")
def _heap_push(hs, hi, size, s, idx):
    """Min-heap of the `len(hs)` best (score, index) entries; returns the new size."""
    cap = hs.shape[0]
    if size < cap:
        pos = size
        size += 1
        while pos > 0:
            parent = (pos - 1) >> 1
            if not _worse(s, idx, hs[parent], hi[parent]):
                break
            hs[pos] = hs[parent]
            hi[pos] = hi[parent]
            pos = parent
        hs[pos] = s
        hi[pos] = idx
        return size
    if not _worse(hs[0], hi[0], s, idx):
        return size
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= cap:
            break
        if c + 1 < cap and _worse(hs[c + 1], hi[c + 1], hs[c], hi[c]):
            c += 1
        if not _worse(hs[c], hi[c], s, idx):
            break
        hs[pos] = hs[c]
        hi[pos] = hi[c]
        pos = c
    hs[pos] = s
    hi[pos] = idx
    return size


@njit(cache=True)
def _invert_probes(probes, q0, q1, num_parts):
    """CSR of (query, probe rank) pairs per partition for queries q0:q1."""
    counts = np.zeros(num_parts + 1, np.int64)
    nl = probes.shape[1]
    for q in range(q0, q1):
        for l in range(nl):
            p = probes[q, l]
            if p >= 0:
                counts[p + 1] += 1
    for p in range(num_parts):
        counts[p + 1] += counts[p]
    fill = counts[:-1].copy()
    pairs = np.empty((counts[num_parts], 2), np.int64)
    for q in range(q0, q1):
        for l in range(nl):
            p = probes[q, l]
            if p >= 0:
                pairs[fill[p], 0] = q
                pairs[fill[p], 1] = l
                fill[p] += 1
    return counts, pairs


# --------------------------------------------------------------------------- scanning


@njit(cache=True, parallel=True)
def top_probes(cscore, leaves):
    """The `leaves` best partitions of every query, best first (ties: lower index first).

    Args:
        cscore: (nq, P) float32 query-centre scores (larger is better); leaves <= P.
    Returns:
        (probes (nq, leaves) int32, base (nq, leaves) float32 their scores).
    """
    nq, num_parts = cscore.shape
    probes = np.empty((nq, leaves), np.int32)
    base = np.empty((nq, leaves), np.float32)
    for q in prange(nq):
        vals = base[q]
        idx = probes[q]
        n = 0
        for p in range(num_parts):
            s = np.float32(cscore[q, p])
            if n == leaves and s <= vals[n - 1]:
                continue
            pos = n if n < leaves else leaves - 1
            while pos > 0 and vals[pos - 1] < s:  # insertion into the sorted buffer
                if pos < leaves:
                    vals[pos] = vals[pos - 1]
                    idx[pos] = idx[pos - 1]
                pos -= 1
            vals[pos] = s
            idx[pos] = p
            if n < leaves:
                n += 1
    return probes, base


@njit(cache=True, parallel=True, fastmath=True)
def build_lut16(qb, cbt, levels):
    """Per-query uint8 LUTs from (nq, B, dpb) query blocks and (dpb, 16, B) transposed codebooks.

    Returns (lut8 (nq, B', 16) uint8, scale (nq,) float32, bias (nq,) float32) such that
    sum_b <q_b, cb[b, code_b]> ~= bias + scale * sum_b lut8[q, b, code_b]; B' is B rounded up to
    even (a padding block's table is all zeros), so row q is the 32 * ceil(B/2) bytes the LUT16
    scans read (the tables of code byte kb's low and high nibble at 32kb and 32kb + 16).

    The float tables are built as (16, B): every loop below runs over the B blocks, so it
    vectorises (a (B, 16) layout needs a 16-way min/max per block); one byte transpose at the end.
    """
    nq, nb, dpb = qb.shape
    nbp = nb + (nb & 1)
    lut8 = np.zeros((nq, nbp, 16), np.uint8)
    scale = np.empty(nq, np.float32)
    bias = np.empty(nq, np.float32)
    nchunks = (nq + 63) // 64
    for ch in prange(nchunks):
        x = np.empty((dpb, nb), np.float32)
        tab = np.empty((16, nb), np.float32)
        lo = np.empty(nb, np.float32)
        hi = np.empty(nb, np.float32)
        qt = np.empty((16, nb), np.uint8)
        for q in range(ch * 64, min(nq, ch * 64 + 64)):
            for b in range(nb):
                for t in range(dpb):
                    x[t, b] = qb[q, b, t]
            for j in range(16):
                row = tab[j]
                for b in range(nb):
                    row[b] = x[0, b] * cbt[0, j, b]
                for t in range(1, dpb):
                    for b in range(nb):
                        row[b] += x[t, b] * cbt[t, j, b]
            for b in range(nb):
                lo[b] = tab[0, b]
                hi[b] = tab[0, b]
            for j in range(1, 16):
                for b in range(nb):
                    lo[b] = min(lo[b], tab[j, b])
                    hi[b] = max(hi[b], tab[j, b])
            span = np.float32(0.0)
            tot = np.float32(0.0)
            for b in range(nb):
                span = max(span, hi[b] - lo[b])
                tot += lo[b]
            sc = max(span, np.float32(1e-30)) / levels
            inv = np.float32(1.0) / sc
            for j in range(16):
                for b in range(nb):
                    qt[j, b] = np.uint8(np.int32((tab[j, b] - lo[b]) * inv + np.float32(0.5)))
            for b in range(nb):
                for j in range(16):
                    lut8[q, b, j] = qt[j, b]
            scale[q] = sc
            bias[q] = tot
    return lut8, scale, bias


@njit(cache=True, parallel=True)
def scan_lut16(probes, base, lut8, scale, part_offsets, part_slots, codes, slot_bias, bw,
               nchunks, cand_s, cand_i, sizes, scored):
    """Portable LUT16 scan (no SIMD shuffles): score the 4-bit codes of every probed partition
    and keep each query's best candidates.

    Args:
        probes: (nq, L) int32 probed partitions (-1 = none).
        base: (nq, L) float32 score offset of (query, probe): <q, centre> + LUT bias.
        lut8: (nq, B, 16) uint8 quantized LUTs; scale: (nq,) float32 LUT step.
        codes: the blocked code layout of block width `bw` (see `to_blocked`).
        slot_bias: (N,) float32 added to every entry of a slot (-|x|^2/2 for L2, else 0).
        cand_s, cand_i: (nq, R) outputs, min-heaps of approximate scores and slots.
        sizes: (nq,) int64 heap sizes; scored: (nq,) int64 points scored per query.
    """
    nq = probes.shape[0]
    cap = cand_s.shape[1]
    num_parts = part_offsets.shape[0] - 1
    nb = lut8.shape[1]
    nbytes = (nb + 1) // 2
    step = (nq + nchunks - 1) // nchunks
    for ch in prange(nchunks):
        q0 = ch * step
        q1 = min(nq, q0 + step)
        if q0 >= q1:
            continue
        counts, pairs = _invert_probes(probes, q0, q1, num_parts)
        # tab[b, code, lane]: 32 queries' uint16 LUT entries, read as 8 uint64 words so that
        # each add below sums 4 queries at once in registers (SWAR); lane sums never carry
        # because the LUT levels keep every sum < 65536.
        tab16 = np.zeros((2 * nbytes, 16, _GROUP), np.uint16)
        tab = tab16.reshape(2 * nbytes * 16 * _GROUP).view(np.uint64).reshape((2 * nbytes, 16, _GROUP // 4))
        accs = np.zeros(_GROUP // 4, np.uint64)
        acc16 = accs.view(np.uint16)
        gq = np.empty(_GROUP, np.int64)
        gbase = np.empty(_GROUP, np.float32)
        gscale = np.empty(_GROUP, np.float32)
        thr = np.empty(_GROUP, np.float32)
        for p in range(num_parts):
            e0 = part_offsets[p]
            e1 = part_offsets[p + 1]
            for g0 in range(counts[p], counts[p + 1], _GROUP):
                g = min(_GROUP, counts[p + 1] - g0)
                for gi in range(g):
                    q = pairs[g0 + gi, 0]
                    gq[gi] = q
                    gbase[gi] = base[q, pairs[g0 + gi, 1]]
                    gscale[gi] = scale[q]
                    scored[q] += e1 - e0
                    thr[gi] = cand_s[q, 0] if sizes[q] == cap else -np.inf
                for b in range(nb):
                    for j in range(16):
                        for gi in range(g):
                            tab16[b, j, gi] = lut8[gq[gi], b, j]
                        for gi in range(g, _GROUP):
                            tab16[b, j, gi] = 0
                for eb in range(e0, e1, bw):
                    w = min(bw, e1 - eb)
                    for lane in range(w):
                        e = eb + lane
                        a0, a1, a2, a3, a4, a5, a6, a7 = _sum_codes(codes, eb * nbytes + lane, w, nbytes, tab)
                        accs[0] = a0
                        accs[1] = a1
                        accs[2] = a2
                        accs[3] = a3
                        accs[4] = a4
                        accs[5] = a5
                        accs[6] = a6
                        accs[7] = a7
                        slot = part_slots[e]
                        sb = slot_bias[slot]
                        for gi in range(g):
                            s = gbase[gi] + gscale[gi] * np.float32(acc16[gi]) + sb
                            if s > thr[gi]:
                                q = gq[gi]
                                sizes[q] = _heap_push(cand_s[q], cand_i[q], sizes[q], s, slot)
                                if sizes[q] == cap:
                                    thr[gi] = cand_s[q, 0]


@njit(cache=True, inline="always")
def _sum_codes(codes, c0, stride, nbytes, tab):
    """LUT sums of one entry for 32 queries as 8 SWAR words (4 uint16 lanes each); the entry's
    code byte kb is codes[c0 + kb * stride].

    Eight scalar accumulators stay in registers; a loop over lanes here compiled to gathers and
    memory round trips (3x slower).
    """
    a0 = np.uint64(0)
    a1 = np.uint64(0)
    a2 = np.uint64(0)
    a3 = np.uint64(0)
    a4 = np.uint64(0)
    a5 = np.uint64(0)
    a6 = np.uint64(0)
    a7 = np.uint64(0)
    for kb in range(nbytes):
        byte = codes[c0 + kb * stride]
        lo = byte & 15
        hi = byte >> 4
        b0 = 2 * kb
        b1 = b0 + 1
        a0 += tab[b0, lo, 0] + tab[b1, hi, 0]
        a1 += tab[b0, lo, 1] + tab[b1, hi, 1]
        a2 += tab[b0, lo, 2] + tab[b1, hi, 2]
        a3 += tab[b0, lo, 3] + tab[b1, hi, 3]
        a4 += tab[b0, lo, 4] + tab[b1, hi, 4]
        a5 += tab[b0, lo, 5] + tab[b1, hi, 5]
        a6 += tab[b0, lo, 6] + tab[b1, hi, 6]
        a7 += tab[b0, lo, 7] + tab[b1, hi, 7]
    return a0, a1, a2, a3, a4, a5, a6, a7


@njit(cache=True)
def _relayout(rows, flat, offsets, bw, to_flat):
    """Copy codes between row form (E, nbytes) and the blocked layout, in either direction."""
    nbytes = rows.shape[1]
    for p in range(offsets.shape[0] - 1):
        for eb in range(offsets[p], offsets[p + 1], bw):
            w = min(bw, offsets[p + 1] - eb)
            c0 = eb * nbytes
            for lane in range(w):
                for kb in range(nbytes):
                    if to_flat:
                        flat[c0 + kb * w + lane] = rows[eb + lane, kb]
                    else:
                        rows[eb + lane, kb] = flat[c0 + kb * w + lane]


def to_blocked(rows, offsets, bw, slack):
    """Row codes (E, nbytes) of partition-sorted entries -> the blocked layout scanned by LUT16.

    Each partition's entries are cut into blocks of `bw` points (the last one ragged, w <= bw);
    a block starting at entry eb keeps code byte kb of its w points at
    ``eb * nbytes + kb * w + lane``. Same size as `rows`, plus `slack` zero bytes at the end.
    """
    flat = np.zeros(rows.shape[0] * rows.shape[1] + slack, np.uint8)
    _relayout(rows, flat, offsets, bw, True)
    return flat


def to_rows(flat, offsets, bw, nbytes):
    """Inverse of `to_blocked`: (E, nbytes) row codes."""
    rows = np.empty((offsets[-1], nbytes), np.uint8)
    _relayout(rows, flat, offsets, bw, False)
    return rows


@njit(cache=True)
def part_bias_max(offsets, slots, slot_bias):
    """Max of slot_bias over each partition's entries (-inf for empty partitions)."""
    num_parts = offsets.shape[0] - 1
    out = np.full(num_parts, -np.inf, np.float32)
    for p in range(num_parts):
        for e in range(offsets[p], offsets[p + 1]):
            out[p] = max(out[p], slot_bias[slots[e]])
    return out


@njit(cache=True, parallel=True)
def scan_float_lut(probes, base, lut, part_offsets, part_slots, part_codes, slot_bias,
                   nchunks, cand_s, cand_i, sizes, scored):
    """Like `scan_lut16` for 8-bit codes (one byte per block) with float32 LUTs (nq, B, 256)."""
    nq = probes.shape[0]
    nl = probes.shape[1]
    nb = lut.shape[1]
    step = (nq + nchunks - 1) // nchunks
    for ch in prange(nchunks):
        for q in range(ch * step, min(nq, (ch + 1) * step)):
            for l in range(nl):
                p = probes[q, l]
                if p < 0:
                    continue
                e0 = part_offsets[p]
                e1 = part_offsets[p + 1]
                scored[q] += e1 - e0
                for e in range(e0, e1):
                    s = base[q, l]
                    for b in range(nb):
                        s += lut[q, b, part_codes[e, b]]
                    slot = part_slots[e]
                    sizes[q] = _heap_push(cand_s[q], cand_i[q], sizes[q], s + slot_bias[slot], slot)


@intrinsic
def _prefetch(typingctx, arr, byte_off):
    """Hint the CPU to fetch the cache line at byte `byte_off` of a C-contiguous array into
    cache (``llvm.prefetch``: read, high locality; a no-op where the target has none)."""
    if not (isinstance(arr, types.Array) and isinstance(byte_off, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        a, off = args
        data = context.make_array(signature.args[0])(context, builder, a).data
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.gep(builder.bitcast(data, i8p), [off])
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, types.int64), codegen


@njit(cache=True, inline="always")
def _prefetch_row(data, slot):
    """Prefetch every cache line of row `slot` of a C-contiguous 2-D array."""
    row_bytes = data.shape[1] * data.itemsize
    start = slot * row_bytes
    for off in range(start - (start & 63), start + row_bytes, 64):
        _prefetch(data, off)


PREFETCH_ROWS = 4  # default: rows of the re-rank copy prefetched ahead of the dot products


@njit(cache=True, inline="always")
def _row_f32(data, kind, slot, out, tmp):
    """Row `slot` of the re-rank copy as float32 into `out`.

    `data` is always uint16 (one compiled specialisation): kind 0 = float32 rows seen as
    (n, 2d) uint16 (little-endian halves), 1 = bfloat16 bits, 2 = IEEE half bits.
    """
    d = out.shape[0]
    if kind == 0:
        for t in range(d):
            tmp[t] = np.uint32(data[slot, 2 * t]) | (np.uint32(data[slot, 2 * t + 1]) << np.uint32(16))
    elif kind == 1:  # bfloat16: the high half of a float32
        for t in range(d):
            tmp[t] = np.uint32(data[slot, t]) << np.uint32(16)
    else:  # IEEE half -> float32 bits (subnormals are patched below)
        for t in range(d):
            h = np.uint32(data[slot, t])
            sign = (h >> np.uint32(15)) << np.uint32(31)
            ex = (h >> np.uint32(10)) & np.uint32(31)
            man = h & np.uint32(1023)
            if ex == 0:
                tmp[t] = sign
            elif ex == 31:
                tmp[t] = sign | np.uint32(0x7F800000) | (man << np.uint32(13))
            else:
                tmp[t] = sign | ((ex + np.uint32(112)) << np.uint32(23)) | (man << np.uint32(13))
    fv = tmp.view(np.float32)
    for t in range(d):
        out[t] = fv[t]
    if kind == 2:
        for t in range(d):
            h = np.uint32(data[slot, t])
            if (h >> np.uint32(10)) & np.uint32(31) == 0 and (h & np.uint32(1023)) != 0:
                v = np.float32(h & np.uint32(1023)) * np.float32(5.960464477539063e-08)
                out[t] = -v if (h >> np.uint32(15)) else v


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def scan_exact(probes, queries, data, kind, part_offsets, part_slots, slot_bias, nchunks,
               cand_s, cand_i, sizes, scored):
    """Exact inner products over the probed partitions (the "none" quantizer: IVF-Flat)."""
    nq = probes.shape[0]
    nl = probes.shape[1]
    d = queries.shape[1]
    step = (nq + nchunks - 1) // nchunks
    for ch in prange(nchunks):
        row = np.empty(d, np.float32)
        tmp = np.empty(d, np.uint32)
        for q in range(ch * step, min(nq, (ch + 1) * step)):
            for l in range(nl):
                p = probes[q, l]
                if p < 0:
                    continue
                e0 = part_offsets[p]
                e1 = part_offsets[p + 1]
                scored[q] += e1 - e0
                for e in range(e0, e1):
                    slot = part_slots[e]
                    _row_f32(data, kind, slot, row, tmp)
                    s = np.float32(0.0)
                    for t in range(d):
                        s += queries[q, t] * row[t]
                    sizes[q] = _heap_push(cand_s[q], cand_i[q], sizes[q], s + slot_bias[slot], slot)


# --------------------------------------------------------------------------- re-ranking


_GAPS = np.array([701, 301, 132, 57, 23, 10, 4, 1], np.int64)  # Ciura's shell-sort gaps


@njit(cache=True)
def _argsort_small(keys, n, descending):
    """Indices that sort keys[:n] (ascending, or descending), by shell sort: fast for the few
    hundred candidates of a query, and quick to compile (np.argsort costs seconds of JIT)."""
    order = np.arange(n)
    for gap in _GAPS:
        for i in range(gap, n):
            j = order[i]
            v = keys[j]
            pos = i
            while pos >= gap:
                u = keys[order[pos - gap]]
                if (u < v) if descending else (u > v):
                    order[pos] = order[pos - gap]
                    pos -= gap
                else:
                    break
            order[pos] = j
    return order


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def rerank(queries, cand_i, sizes, data, kind, slot_bias, k, exact, cand_s, out_s, out_i,
           prefetch=PREFETCH_ROWS):
    """De-duplicate each query's candidates, score them exactly, keep the best k.

    With ``exact=False`` the approximate scores in `cand_s` are kept (no re-rank).
    Scores are "larger is better" (<q,x>, or <q,x> - |x|^2/2 for L2). Missing results keep
    the caller's fill values. `prefetch` rows (in slot order) are requested ahead of the row
    being scored (0: none), to overlap the DRAM latency of these random rows (measured gain:
    small, ~1-2% of a search; see docs/retrieval.md).
    """
    nq, d = queries.shape
    # f32 rows are read in place (kind 0: data is (n, 2d) uint16 halves of float32 rows)
    fdata = data.view(np.float32) if kind == 0 else np.zeros((1, d), np.float32)
    for q in prange(nq):
        n = sizes[q]
        row = np.empty(d, np.float32)
        tmp = np.empty(d, np.uint32)
        hs = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        hsize = 0
        if exact:
            # sort by slot so that the two entries of a spilled vector are adjacent
            order = _argsort_small(cand_i[q], n, False)
            # rows are random reads from DRAM: keep a few rows' loads in flight ahead of the dot products
            for jj in range(min(n, prefetch)):
                _prefetch_row(data, cand_i[q, order[jj]])
            prev = -1
            for jj in range(n):
                if jj + prefetch < n:
                    _prefetch_row(data, cand_i[q, order[jj + prefetch]])
                slot = cand_i[q, order[jj]]
                if slot == prev:
                    continue
                prev = slot
                s = np.float32(0.0)
                if kind == 0:
                    for t in range(d):
                        s += queries[q, t] * fdata[slot, t]
                else:
                    _row_f32(data, kind, slot, row, tmp)
                    for t in range(d):
                        s += queries[q, t] * row[t]
                hsize = _heap_push(hs, hi, hsize, s + slot_bias[slot], slot)
        else:
            # best approximate score first; a slot already kept is a spilled duplicate
            order = _argsort_small(cand_s[q], n, True)
            for jj in range(n):
                j = order[jj]
                slot = cand_i[q, j]
                dup = False
                for r in range(hsize):
                    if hi[r] == slot:
                        dup = True
                        break
                if not dup:
                    hsize = _heap_push(hs, hi, hsize, cand_s[q, j], slot)
        srt = _argsort_small(hs, hsize, True)
        for r in range(hsize):
            out_s[q, r] = hs[srt[r]]
            out_i[q, r] = hi[srt[r]]
