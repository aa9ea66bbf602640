"""Parity of the LUT16 scan kernels on real embeddings: the SIMD (vpshufb) block sums and scans
against the portable kernel and a numpy reference, over ragged block tails, empty partitions,
spilled duplicates and removed ids; the blocked code layout; the SIMD switch."""

from __future__ import annotations

import numpy as np
import pytest

from paretoml.retrieval import Index, IndexConfig, _kernels, _simd

D = 384
HOST = _simd.HOST_LANES
# every kernel this machine can run: 0 = portable (always), 32 = AVX2, 64 = AVX-512BW
LANES = [0] + [w for w in (32, 64) if w <= HOST]


@pytest.fixture(scope="module")
def data(shared_data):
    base = np.load(shared_data / "ann" / "base_100k.f16.npy", mmap_mode="r")[:3000].astype(np.float32)
    q_all = np.load(shared_data / "ann" / "queries_2k.f16.npy")
    q = np.concatenate([q_all[:40], q_all[1000:1040]]).astype(np.float32)  # PyPI + Debian queries
    return base, q


@pytest.fixture(scope="module")
def index(data):
    """SOAR index (spilled duplicates) with removed ids and one partition emptied."""
    base, _ = data
    idx = Index(D, IndexConfig.from_spec("IVF24,SOAR1.5,AH4"))
    idx.train(base)
    idx.add(base, ids=np.arange(len(base)) * 3 + 1)
    part = idx._entry_part
    empty = int(np.argmin(np.diff(idx._offsets)))  # the smallest partition: remove all its vectors
    gone = np.unique(idx._ids[idx._entry_slot[part == empty]])
    gone = np.union1d(gone, idx._ids[::17])  # and a scattering of others
    idx.remove(gone)
    sizes = np.diff(idx._offsets)
    assert sizes[empty] == 0 and (sizes % 32 != 0).sum() > 10  # empty partition and ragged tails
    assert len(np.unique(idx._entry_slot)) < len(idx._entry_slot)  # spilled duplicates
    idx.removed = gone
    return idx


def _reference_sums(idx, lut8, q):
    """numpy: integer LUT sum of every entry for query q (from the row codes)."""
    rows = idx._row_codes()
    lo, hi = rows & 15, rows >> 4
    kb = np.arange(rows.shape[1])
    lut = lut8[q].astype(np.int64)
    return lut[2 * kb, lo].sum(1) + lut[2 * kb + 1, hi].sum(1)


@pytest.mark.skipif(HOST < 32, reason="no AVX2 on this CPU: only the portable kernel runs")
def test_block_sums_equal_numpy_every_width(index, data):
    """SIMD block sums of every block (full and ragged, widths 1..64) equal numpy's, and the
    returned mask marks exactly the lanes whose sum reaches the threshold."""
    _, q = data
    qs = index._project(q[:6])
    lut8, _, _ = index._pq.luts_u8(qs)
    lut = lut8.reshape(len(qs), -1)
    nbytes = lut.shape[1] // 32
    bw = index._block_width
    fns = [_simd.lut16_block_avx2] + ([_simd.lut16_block_avx512] if HOST == 64 else [])
    out = np.empty(64, np.uint16)
    widths = set()
    for qi in range(len(qs)):
        ref = _reference_sums(index, lut8, qi)
        for p in range(len(index._offsets) - 1):
            e0, e1 = index._offsets[p], index._offsets[p + 1]
            for eb in range(e0, e1, bw):
                w = min(bw, e1 - eb)
                widths.add(w)
                want = ref[eb:eb + w]
                at_least = np.uint16(np.median(want))
                for fn in fns:
                    out[:] = 0
                    mask = fn(index._entry_codes, eb * nbytes, w, nbytes, lut[qi], 0, out, at_least)
                    np.testing.assert_array_equal(out[:w], want)
                    bits = np.array([(int(mask) >> i) & 1 for i in range(64)], bool)
                    np.testing.assert_array_equal(bits[:w], want >= at_least)
                    assert not bits[w:].any()
    assert min(widths) < 32  # ragged tails were covered
    if bw == 64:
        assert any(32 < w < 64 for w in widths)


def _numpy_scan(idx, q, leaves, cap):
    """numpy reference of the approximate phase: the `cap` best (score, slot) of every query."""
    qs = idx._project(q)
    cscore = qs @ idx._centres.T
    probes = np.argsort(-cscore, axis=1)[:, :leaves]
    lut8, scale, bias = idx._pq.luts_u8(qs)
    slot_bias = idx._bias()
    best = []
    for r in range(len(q)):
        sums = _reference_sums(idx, lut8, r)
        scores, slots = [], []
        for p in probes[r]:
            e0, e1 = idx._offsets[p], idx._offsets[p + 1]
            b = np.float32(np.float32(cscore[r, p]) + bias[r])
            s = (b + scale[r] * sums[e0:e1].astype(np.float32)) + slot_bias[idx._entry_slot[e0:e1]]
            scores.append(s.astype(np.float32))
            slots.append(idx._entry_slot[e0:e1])
        s = np.concatenate(scores)
        order = np.argsort(-s, kind="stable")[:cap]
        best.append((s[order], np.concatenate(slots)[order]))
    return best


@pytest.mark.parametrize("lanes", LANES)
def test_scan_equals_numpy_reference(index, data, lanes, monkeypatch):
    """Every kernel keeps the same best candidates as numpy (scores bit-equal; slots equal up
    to ties at the cut), never returns a removed id, and counts the same points scored."""
    _, q = data
    monkeypatch.setenv("PARETOML_RETRIEVAL_SIMD", str(lanes))
    leaves, cap = 6, 50
    cand_s, cand_i, sizes = index._scan(q, 10, leaves, cap)
    ref = _numpy_scan(index, q, leaves, cap)
    sizes_ref = np.diff(index._offsets)
    probes = np.argsort(-(index._project(q) @ index._centres.T), axis=1)[:, :leaves]
    np.testing.assert_array_equal(index.last_points_scored, sizes_ref[probes].sum(1))
    for r in range(len(q)):
        n = sizes[r]
        got = np.sort(cand_s[r, :n])[::-1]
        want_s, want_i = ref[r]
        np.testing.assert_array_equal(got, want_s)
        # slots agree wherever the score is not tied with the cut-off score
        cut = want_s[-1]
        assert set(cand_i[r, :n][cand_s[r, :n] > cut]) == set(want_i[want_s > cut])
        assert not np.isin(index._ids[cand_i[r, :n]], index.removed).any()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_identical_across_kernels(data, metric, monkeypatch):
    """End to end (with re-rank and without), every kernel returns the same ids and distances;
    l2 exercises the per-slot norm offsets in the SIMD skip test."""
    base, q = data
    x = base[:2000] * (np.linspace(0.5, 1.5, 2000, dtype=np.float32)[:, None] if metric == "l2" else 1)
    idx = Index(D, IndexConfig(num_partitions=16, spill=1, metric=metric))
    idx.train(x)
    idx.add(x)
    results = {}
    # SIMD kernels with and without two queries per code load (pair=1 is the default)
    runs = [(0, "1")] + [(lanes, pair) for lanes in LANES[1:] for pair in ("0", "1")]
    for lanes, pair in runs:
        monkeypatch.setenv("PARETOML_RETRIEVAL_SIMD", str(lanes))
        monkeypatch.setenv("PARETOML_RETRIEVAL_PAIR", pair)
        results[lanes, pair] = [idx.search(q, 10, leaves_to_search=5, reorder_k=rr) for rr in (0, 40)]
    for run in runs[1:]:
        for (d0, i0), (d1, i1) in zip(results[0, "1"], results[run]):
            np.testing.assert_array_equal(d1, d0)
            # ties included: every kernel keeps the best (score, then slot) entries
            np.testing.assert_array_equal(i1, i0)


def test_blocked_layout_round_trip_and_load_on_any_kernel(index, data, tmp_path, monkeypatch):
    """to_rows inverts to_blocked for either block width; a saved index (row codes on disk)
    loads into the layout of whichever kernel runs and searches identically."""
    rows = index._row_codes()
    for bw in (32, 64):
        flat = _kernels.to_blocked(rows, index._offsets, bw, _simd.SLACK)
        assert flat.shape == (rows.size + _simd.SLACK,)
        np.testing.assert_array_equal(_kernels.to_rows(flat, index._offsets, bw, rows.shape[1]), rows)
    _, q = data
    d0, i0 = index.search(q, 10, leaves_to_search=6, reorder_k=40)
    index.save(tmp_path / "idx")
    for lanes in LANES:
        monkeypatch.setenv("PARETOML_RETRIEVAL_SIMD", str(lanes))
        loaded = Index.load(tmp_path / "idx")
        assert loaded._block_width == (64 if lanes == 64 else 32)
        d1, i1 = loaded.search(q, 10, leaves_to_search=6, reorder_k=40)
        np.testing.assert_array_equal(d1, d0)
        assert (i1 == i0).mean() > 0.99


def test_simd_switch(monkeypatch):
    monkeypatch.setenv("PARETOML_RETRIEVAL_SIMD", "0")
    assert _simd.available_lanes() == 0
    monkeypatch.setenv("PARETOML_RETRIEVAL_SIMD", "64")
    assert _simd.available_lanes() == HOST  # a cap never raises above what the CPU has
    for bad in ("avx2", "16"):
        monkeypatch.setenv("PARETOML_RETRIEVAL_SIMD", bad)
        with pytest.raises(ValueError, match="PARETOML_RETRIEVAL_SIMD must be 0, 32 or 64"):
            _simd.available_lanes()


def test_keep_top_selects_the_largest(rng):
    """The candidate buffer's quickselect against a full sort (ties and distinct keys)."""
    for trial in range(300):
        n = int(rng.integers(2, 400))
        k = int(rng.integers(1, n))
        a = rng.integers(0, 8 if trial % 2 else 1 << 50, n).astype(np.uint64)
        want = np.sort(a)[::-1][:k]
        b = a.copy()
        worst = _simd._keep_top(b, n, k)
        np.testing.assert_array_equal(np.sort(b[:k]), np.sort(want))
        np.testing.assert_array_equal(np.sort(b), np.sort(a))  # a permutation
        assert worst == want[-1]


def test_pair_switch(monkeypatch):
    monkeypatch.delenv("PARETOML_RETRIEVAL_PAIR", raising=False)
    assert _simd.pair_queries()
    monkeypatch.setenv("PARETOML_RETRIEVAL_PAIR", "0")
    assert not _simd.pair_queries()
    monkeypatch.setenv("PARETOML_RETRIEVAL_PAIR", "yes")
    with pytest.raises(ValueError, match="PARETOML_RETRIEVAL_PAIR must be 0 or 1, got 'yes'"):
        _simd.pair_queries()


def test_prefetch_switch(monkeypatch):
    from paretoml.retrieval import _kernels as k
    from paretoml.retrieval.index import _rerank_prefetch

    monkeypatch.delenv("PARETOML_RETRIEVAL_PREFETCH", raising=False)
    assert _rerank_prefetch() == k.PREFETCH_ROWS
    monkeypatch.setenv("PARETOML_RETRIEVAL_PREFETCH", "0")
    assert _rerank_prefetch() == 0
    for bad in ("-1", "65", "x"):
        monkeypatch.setenv("PARETOML_RETRIEVAL_PREFETCH", bad)
        with pytest.raises(ValueError, match="PARETOML_RETRIEVAL_PREFETCH must be an integer 0-64"):
            _rerank_prefetch()
