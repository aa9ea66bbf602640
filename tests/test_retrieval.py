"""Tests of paretoml.retrieval: recall vs brute force on real embeddings, SOAR's loss argmin on a
hand-checked case, persistence, removal, metrics, prefix search, autotune, bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from paretoml.errors import NotFittedError
from paretoml.retrieval import Index, IndexConfig, autotune
from paretoml.retrieval.tuning import exact_search, recall_at_k
from paretoml.retrieval.kmeans import second_nearest, soar_assign
from paretoml.retrieval.quantizer import ProductQuantizer, anisotropic_eta

D = 384


@pytest.fixture(scope="module")
def real(shared_data):
    """8k real base vectors, 300 tune + 200 test queries (both sources) with exact top-10."""
    base = np.load(shared_data / "ann" / "base_100k.f16.npy", mmap_mode="r")[:8000].astype(np.float32)
    q_all = np.load(shared_data / "ann" / "queries_2k.f16.npy").astype(np.float32)
    q = np.concatenate([q_all[:250], q_all[1000:1250]])
    truth = np.argsort(-(q @ base.T), axis=1)[:, :10]
    return base, q, truth


@pytest.fixture(scope="module")
def soar_index(real):
    base, _, _ = real
    index = Index(D, IndexConfig.from_spec("IVF64,SOAR1.5,AH4,RR60,L8"))
    index.train(base)
    index.add(base)
    return index


def _recall(ids, truth):
    return recall_at_k(ids, truth, 10)


# ---------------------------------------------------------------- recall vs brute force


def test_search_recall_vs_brute_force(real, soar_index):
    _, q, truth = real
    _, ids = soar_index.search(q, 10, leaves_to_search=12, reorder_k=80)
    assert _recall(ids, truth) >= 0.93
    # more leaves never lose recall by more than noise, and score more points
    _, ids_small = soar_index.search(q, 10, leaves_to_search=2, reorder_k=80)
    small_scored = soar_index.last_points_scored.mean()
    soar_index.search(q, 10, leaves_to_search=12, reorder_k=80)
    assert soar_index.last_points_scored.mean() > small_scored
    assert _recall(ids_small, truth) < _recall(ids, truth)


def test_flat_all_leaves_is_exact(real):
    base, q, truth = real
    index = Index(D, IndexConfig(num_partitions=16, spill=0, quantizer="none"))
    index.train(base)
    index.add(base)
    dist, ids = index.search(q, 10, leaves_to_search=16)
    assert (ids == truth).mean() > 0.995  # ties in f32 sums may swap neighbours
    np.testing.assert_allclose(dist, np.take_along_axis(q @ base.T, truth, axis=1), rtol=1e-5, atol=1e-5)


def test_lut16_scores_match_decoded_residuals(real, soar_index):
    """Approximate scores (no re-rank) equal <q, centre + decoded residual> up to LUT rounding."""
    base, q, _ = real
    idx = soar_index
    dist, ids = idx.search(q[:20], 5, leaves_to_search=64, reorder_k=0)
    slots = np.searchsorted(idx._ids, ids)  # ids == slots here
    qs = q[:20]
    for r in range(20):
        for j in range(5):
            ents = np.flatnonzero(idx._entry_slot == slots[r, j])
            cands = [qs[r] @ (idx._centres[idx._entry_part[e]] + idx._pq.decode(idx._row_codes()[e:e + 1])[0])
                     for e in ents]
            # LUT step: span/255 per block; rounding error <= B/2 steps, loosely bounded here
            assert min(abs(dist[r, j] - c) for c in cands) < 0.02


def test_pq8_and_bf16_and_f16_rerank(real):
    base, q, truth = real
    recalls = {}
    trained = Index(D, IndexConfig(num_partitions=32, spill=1))
    trained.train(base)
    for dtype in ("f32", "bf16", "f16"):  # same centres and codebooks, different re-rank copies
        index = Index(D, IndexConfig(num_partitions=32, spill=1, rerank_dtype=dtype))
        index._restore_trained(trained._trained_state())
        index.add(base)
        recalls[dtype] = _recall(index.search(q, 10, leaves_to_search=8, reorder_k=60)[1], truth)
    assert recalls["f32"] >= 0.9
    assert recalls["bf16"] >= recalls["f32"] - 0.01
    assert recalls["f16"] >= recalls["f32"] - 0.005
    pq8 = Index(D, IndexConfig(num_partitions=32, quantizer="pq8", spill=0))
    pq8.train(base[:4000])
    pq8.add(base)
    assert _recall(pq8.search(q, 10, leaves_to_search=8, reorder_k=60)[1], truth) >= 0.85


def test_f16_rerank_scores_equal_numpy_half(real):
    base, q, _ = real
    index = Index(D, IndexConfig(num_partitions=8, spill=0, quantizer="none", rerank_dtype="f16"))
    index.train(base[:2000])
    index.add(base[:2000])
    dist, ids = index.search(q[:30], 5, leaves_to_search=8)
    ref = q[:30, None, :] @ base[:2000].astype(np.float16).astype(np.float32)[ids].transpose(0, 2, 1)
    np.testing.assert_allclose(dist, ref[:, 0, :], rtol=1e-5, atol=1e-5)


def test_l2_and_cosine_metrics(real):
    base, q, _ = real
    x = base[:3000] * np.linspace(0.5, 2.0, 3000, dtype=np.float32)[:, None]  # non-unit norms
    l2 = Index(D, IndexConfig(num_partitions=8, spill=0, quantizer="none", metric="l2"))
    l2.train(x)
    l2.add(x)
    dist, ids = l2.search(q[:40], 5, leaves_to_search=8)
    d2 = ((q[:40, None, :] - x[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids[:, 0], d2.argmin(1))
    np.testing.assert_allclose(dist[:, 0], d2.min(1), rtol=1e-4, atol=1e-4)
    cos = Index(D, IndexConfig(num_partitions=8, spill=0, quantizer="none", metric="cosine"))
    cos.train(x)
    cos.add(x)
    _, cids = cos.search(3.0 * q[:40], 5, leaves_to_search=8)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(cids[:, 0], (q[:40] @ xn.T).argmax(1))


def test_prefix_pca_search(real):
    base, q, truth = real
    plain = Index(D, IndexConfig(num_partitions=32, spill=1, prefix_dims=96, pca_rotate=False))
    pca = Index(D, IndexConfig.from_spec("IVF32,SOAR,AH4,PCA96"))
    for idx in (plain, pca):
        idx.train(base)
        idx.add(base)
    r_plain = _recall(plain.search(q, 10, leaves_to_search=8, reorder_k=100)[1], truth)
    r_pca = _recall(pca.search(q, 10, leaves_to_search=8, reorder_k=100)[1], truth)
    assert r_pca >= 0.85 and r_pca > r_plain  # PCA puts the energy in the prefix (MiniLM is not MRL)


# ---------------------------------------------------------------- SOAR assignment


def test_soar_assignment_is_loss_argmin_hand_checked():
    # x = (1, 0), primary c0 = (0, 0): r = (1, 0), rhat = (1, 0). With lambda = 1:
    #   c1 = (2.1, 0): ||r'||^2 = 1.21, <r', rhat>^2 = 1.21 -> loss 2.42 (nearest after c0)
    #   c2 = (1, 1.2): ||r'||^2 = 1.44, <r', rhat>^2 = 0    -> loss 1.44 (SOAR's choice)
    #   c0 itself: (1 + lambda) * 1 = 2.0
    x = np.array([[1.0, 0.0]], np.float32)
    c = np.array([[0, 0], [2.1, 0], [1, 1.2]], np.float32)
    primary = np.array([0], np.int32)
    assert soar_assign(x, c, primary, 1.0)[0] == 2
    assert second_nearest(x, c, primary)[0] == 1
    # lambda = 0: the loss is plain distance, so the primary itself wins: no second copy
    assert soar_assign(x, c, primary, 0.0)[0] == -1
    # when the primary wins the loss, no second copy: c1 = (3, 0): 4 + 4 = 8 > 2
    assert soar_assign(x, np.array([[0, 0], [3, 0]], np.float32), primary, 1.0)[0] == -1


def test_soar_cuts_points_scored_vs_no_spill(real):
    """At equal recall SOAR scores fewer points than no spill (the paper's claim; a number)."""
    base, q, truth = real

    def points_at(index, target):
        for leaves in range(1, 65):
            _, ids = index.search(q, 10, leaves_to_search=leaves, reorder_k=200)
            if _recall(ids, truth) >= target:
                return index.last_points_scored.mean()
        return math.inf

    got = {}
    for name, spec in (("none", "IVF64,AH4"), ("soar", "IVF64,SOAR1.5,AH4")):
        index = Index(D, IndexConfig.from_spec(spec))
        index.train(base)
        index.add(base)
        got[name] = points_at(index, 0.9)
    assert got["soar"] * 1.1 < got["none"]


def test_anisotropic_encoding_cuts_parallel_error(real):
    base, _, _ = real
    x = base[:3000]
    res = x - x.mean(0)
    errs = {}
    for thr in (0.0, 0.2):
        pq = ProductQuantizer(D, "ah4", thr)
        pq.train(res)
        e = res - pq.decode(pq.encode(res, x))
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        errs[thr] = (np.mean(np.einsum("ij,ij->i", e, xn) ** 2), np.mean((e**2).sum(1)))
    assert errs[0.2][0] < 0.5 * errs[0.0][0]  # parallel error much smaller ...
    assert errs[0.2][1] > errs[0.0][1]  # ... paid for with total error
    # eta for unit norm, d=384, T=0.2: 383 * 0.04 / 0.96
    assert anisotropic_eta(np.ones(1), 384, 0.2)[0] == pytest.approx(383 * 0.04 / 0.96, rel=1e-5)


# ---------------------------------------------------------------- persistence, removal


def test_save_load_round_trip(tmp_path, real, soar_index):
    _, q, _ = real
    soar_index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    d1, i1 = soar_index.search(q, 10)
    d2, i2 = loaded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
    assert loaded.ntotal == soar_index.ntotal and loaded.config == soar_index.config
    assert loaded.memory_bytes() == soar_index.memory_bytes()
    soar_index.save(tmp_path / "idx")  # overwriting an existing folder works
    assert not list(tmp_path.glob(".idx*"))  # no temp folders left


def test_removed_ids_never_returned(real):
    base, q, _ = real
    index = Index(D, IndexConfig(num_partitions=16))
    index.train(base[:4000])
    ids = np.arange(4000) * 7 + 3
    index.add(base[:4000], ids=ids)
    _, before = index.search(q[:100], 10, leaves_to_search=16, reorder_k=100)
    gone = np.unique(before[:, :5])
    assert index.remove(gone) == len(gone)
    assert index.ntotal == 4000 - len(gone)
    _, after = index.search(q[:100], 10, leaves_to_search=16, reorder_k=100)
    assert not np.isin(after, gone).any()
    assert np.isin(after, ids).all()
    index.add(base[:2], ids=gone[:2])  # removed ids can be reused
    assert index.ntotal == 4000 - len(gone) + 2


# ---------------------------------------------------------------- autotune


def test_autotune_reaches_target_on_unseen_queries(real, soar_index):
    base, q, truth = real
    tune_q = np.concatenate([q[:125], q[250:375]])
    test_idx = np.r_[125:250, 375:500]
    res = autotune(soar_index, tune_q, target_recall=0.9, k=10, repeats=1)
    assert res.reached_target and res.recall >= 0.9
    _, ids = soar_index.search(q[test_idx], 10)  # uses the tuned defaults
    assert _recall(ids, truth[test_idx]) >= 0.88
    assert soar_index.config.leaves_to_search == res.leaves_to_search
    np.testing.assert_array_equal(exact_search(soar_index, q[:20], 10), truth[:20])
    # the pick is one of the measured settings that reach the target, re-timed among the finalists
    ok = {(r[0], r[1]) for r in res.grid if r[2] >= 0.9}
    assert (res.leaves_to_search, res.reorder_k) in ok
    # bisection: at the pick's reorder_k the measured settings include the fewest leaves that
    # reach the target (one leaf fewer misses it on the tuning queries)
    R = res.reorder_k
    L = min(r[0] for r in res.grid if r[1] == R and r[2] >= 0.9)
    if L > 1:
        truth_tune = exact_search(soar_index, tune_q, 10)
        _, fewer = soar_index.search(tune_q, 10, leaves_to_search=L - 1, reorder_k=R)
        assert recall_at_k(fewer, truth_tune, 10) < 0.9


# ---------------------------------------------------------------- factory strings, config


def test_from_spec_parses_parts():
    cfg = IndexConfig.from_spec("IVF2000,SOAR1.5,AH4,RR200")
    assert (cfg.num_partitions, cfg.spill, cfg.spill_mode, cfg.soar_lambda, cfg.quantizer, cfg.reorder_k) == \
        (2000, 1, "soar", 1.5, "ah4", 200)
    cfg = IndexConfig.from_spec("ivf10, spill, flat, l2, bf16, l4, t0.1, prefix64")
    assert (cfg.spill_mode, cfg.quantizer, cfg.metric, cfg.rerank_dtype, cfg.leaves_to_search) == \
        ("nearest", "none", "l2", "bf16", 4)
    assert cfg.anisotropic_threshold == 0.1 and cfg.prefix_dims == 64 and not cfg.pca_rotate
    assert IndexConfig.from_spec("IVF10,PQ8").spill == 0
    assert dataclasses.asdict(IndexConfig(**dataclasses.asdict(cfg))) == dataclasses.asdict(cfg)


@pytest.mark.parametrize("spec,bad", [("IVF2000,SOAR1.5,AH5", "'AH5'"), ("IVFx", "'IVFx'"),
                                      ("IVF100,,AH4", "''"), ("IVF100,RR-3", "'RR-3'")])
def test_from_spec_errors_quote_the_bad_part(spec, bad):
    with pytest.raises(ValueError, match=f"cannot parse {bad}"):
        IndexConfig.from_spec(spec)


def test_from_spec_invalid_values_and_types():
    with pytest.raises(ValueError, match="num_partitions"):
        IndexConfig.from_spec("IVF0")
    with pytest.raises(ValueError, match="empty spec"):
        IndexConfig.from_spec("  ")
    with pytest.raises(TypeError, match="must be a str"):
        IndexConfig.from_spec(5)


@pytest.mark.parametrize("field,value", [
    ("num_partitions", 0), ("spill", 2), ("spill_mode", "x"), ("soar_lambda", -1.0), ("quantizer", "pq4"),
    ("anisotropic_threshold", 1.5), ("metric", "dot"), ("rerank_dtype", "int8"), ("leaves_to_search", 0),
    ("reorder_k", -1), ("prefix_dims", -2), ("pca_rotate", 1), ("training_sample", 0), ("kmeans_iters", 0),
    ("seed", -1)])
def test_config_validation_names_field(field, value):
    with pytest.raises(ValueError, match=f"IndexConfig.{field}"):
        IndexConfig(**{field: value})


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small(real):
    base, q, _ = real
    index = Index(D, IndexConfig(num_partitions=8, spill=0))
    index.train(base[:1000])
    index.add(base[:1000])
    return index


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="d must be an int"):
        Index(0)
    with pytest.raises(TypeError, match="IndexConfig"):
        Index(8, {"num_partitions": 4})
    with pytest.raises(ValueError, match="prefix_dims=16 exceeds d=8"):
        Index(8, IndexConfig(prefix_dims=16))


def test_dimension_mismatch_names_both_dims(small):
    with pytest.raises(ValueError, match=r"\(n, 384\).*got \(2, 256\).*d=256"):
        small.search(np.zeros((2, 256), np.float32), 5)
    with pytest.raises(ValueError, match="384"):
        small.add(np.zeros((2, 3, 4), np.float32))


def test_nan_row_named(small):
    q = np.ones((5, D), np.float32)
    q[3, 7] = np.nan
    with pytest.raises(ValueError, match="row 3 contains NaN or inf"):
        small.search(q, 5)
    x = np.ones((4, D), np.float32)
    x[2, 0] = np.inf
    with pytest.raises(ValueError, match="row 2"):
        small.add(x)


def test_dtype_handling(small, real):
    _, q, _ = real
    with pytest.raises(TypeError, match="float array, got dtype int64"):
        small.search(np.ones((2, D), np.int64), 5)
    d64, i64 = small.search(q[:5].astype(np.float64), 5)  # floats are cast
    d32, i32 = small.search(q[:5], 5)
    np.testing.assert_array_equal(i64, i32)
    _, i1 = small.search(q[0], 5)  # a single 1-d query
    np.testing.assert_array_equal(i1[0], i32[0])


def test_k_larger_than_ntotal_pads(real):
    base, q, _ = real
    index = Index(D, IndexConfig(num_partitions=2, spill=0))
    index.train(base[:50])
    index.add(base[:6])
    dist, ids = index.search(q[:3], 10, leaves_to_search=2)
    assert (ids[:, :6] >= 0).all() and (ids[:, 6:] == -1).all()
    assert np.isneginf(dist[:, 6:]).all()
    l2 = Index(D, IndexConfig(num_partitions=2, spill=0, metric="l2"))
    l2.train(base[:50])
    l2.add(base[:6])
    dist, ids = l2.search(q[:3], 10, leaves_to_search=2)
    assert (ids[:, 6:] == -1).all() and np.isposinf(dist[:, 6:]).all()


def test_search_and_add_before_train():
    index = Index(D, IndexConfig(num_partitions=4))
    with pytest.raises(NotFittedError, match="not trained"):
        index.search(np.zeros((1, D), np.float32), 1)
    with pytest.raises(NotFittedError, match="not trained"):
        index.add(np.zeros((1, D), np.float32))
    with pytest.raises(NotFittedError, match="not trained"):
        index.save("/tmp/never")
    assert not index.is_trained and index.ntotal == 0


def test_bad_search_arguments(small):
    q = np.zeros((1, D), np.float32)
    for kwargs, field in (({"k": 0}, "k must"), ({"k": 2, "leaves_to_search": 0}, "leaves_to_search"),
                          ({"k": 2, "reorder_k": -1}, "reorder_k")):
        with pytest.raises(ValueError, match=field):
            small.search(q, **kwargs)


def test_train_needs_enough_rows(real):
    base, _, _ = real
    with pytest.raises(ValueError, match="num_partitions=100 needs at least"):
        Index(D, IndexConfig(num_partitions=100)).train(base[:50])
    pq = ProductQuantizer(D, "ah4")
    with pytest.raises(ValueError, match="at least 16"):
        pq.train(base[:5])


def test_empty_add_and_bad_ids(real):
    base, _, _ = real
    index = Index(D, IndexConfig(num_partitions=4, spill=0))
    index.train(base[:500])
    with pytest.raises(ValueError, match="got 0 vectors"):
        index.add(np.zeros((0, D), np.float32))
    with pytest.raises(ValueError, match="duplicate id 5"):
        index.add(base[:3], ids=[5, 6, 5])
    index.add(base[:3], ids=[5, 6, 7])
    with pytest.raises(ValueError, match="id 6 is already in the index"):
        index.add(base[3:5], ids=[6, 9])
    with pytest.raises(TypeError, match="ids must be integers"):
        index.add(base[3:5], ids=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        index.add(base[3:5], ids=[1])
    with pytest.raises(ValueError, match=">= 0"):
        index.add(base[3:5], ids=[-1, 2])
    with pytest.raises(ValueError, match="id 42 is not in the index"):
        index.remove([5, 42])
    assert index.ntotal == 3  # nothing removed on error
    with pytest.raises(TypeError, match="ids must be integers"):
        index.remove(np.array([1.5]))


def test_corrupted_index_folders(tmp_path, small):
    with pytest.raises(ValueError, match="not an index folder"):
        Index.load(tmp_path / "missing")
    small.save(tmp_path / "a")
    npz = tmp_path / "a" / "arrays.npz"
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="truncated"):
        Index.load(tmp_path / "a")
    small.save(tmp_path / "b")
    (tmp_path / "b" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json is corrupted"):
        Index.load(tmp_path / "b")
    # same size, garbage bytes
    small.save(tmp_path / "c")
    npz = tmp_path / "c" / "arrays.npz"
    npz.write_bytes(b"\0" * npz.stat().st_size)
    with pytest.raises(ValueError, match="corrupted"):
        Index.load(tmp_path / "c")
    # well-formed npz whose slots point out of range: refused before any JIT code runs
    small.save(tmp_path / "d")
    with np.load(tmp_path / "d" / "arrays.npz") as z:
        arrs = {k: z[k] for k in z.files}
    arrs["entry_slot"] = arrs["entry_slot"] + 10_000
    np.savez(tmp_path / "d" / "arrays.npz", **arrs)
    meta = json.loads((tmp_path / "d" / "index.json").read_text())
    meta["npz_bytes"] = (tmp_path / "d" / "arrays.npz").stat().st_size
    (tmp_path / "d" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="inconsistent.*entry_slot"):
        Index.load(tmp_path / "d")
    meta["format"] = 99
    (tmp_path / "d" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 99"):
        Index.load(tmp_path / "d")


def test_autotune_bad_input(small, real):
    _, q, _ = real
    with pytest.raises(ValueError, match="target_recall"):
        autotune(small, q[:10], target_recall=1.5)
    with pytest.raises(ValueError, match="k must"):
        autotune(small, q[:10], k=0)
    with pytest.raises(ValueError, match="finalists"):
        autotune(small, q[:10], finalists=0)
    for bad in (-0.01, 1.0, "0.1", True):
        with pytest.raises(ValueError, match="margin"):
            autotune(small, q[:10], margin=bad)
    with pytest.raises(NotFittedError):
        autotune(Index(D, IndexConfig(num_partitions=2)), q[:10])
