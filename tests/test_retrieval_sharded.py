"""ShardedIndex over a local 2-worker Ray cluster equals one Index over the same data."""

from __future__ import annotations

import numpy as np
import pytest

from paretoml.retrieval import Index, IndexConfig

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_sharded_equals_unsharded(ray_cluster, shared_data):
    from paretoml.retrieval import ShardedIndex

    base = np.load(shared_data / "ann" / "base_100k.f16.npy", mmap_mode="r")[:5000].astype(np.float32)
    q = np.load(shared_data / "ann" / "queries_2k.f16.npy")[:100].astype(np.float32)
    cfg = IndexConfig.from_spec("IVF32,SOAR1.5,AH4,RR50,L6")
    single = Index(384, cfg)
    single.train(base)
    single.add(base)
    sharded = ShardedIndex(384, cfg, num_shards=2)
    sharded.train(base)
    sharded.add(base)
    assert sharded.ntotal == single.ntotal
    np.testing.assert_array_equal(sharded._local._centres, single._centres)
    for leaves, reorder in ((6, 50), (3, 0)):
        d1, i1 = single.search(q, 10, leaves_to_search=leaves, reorder_k=reorder)
        d2, i2 = sharded.search(q, 10, leaves_to_search=leaves, reorder_k=reorder)
        # identical ids, ties included: both keep the best (score, then id) entries and list equal
        # scores in ascending id order, whatever order the shards scanned them in; distances to
        # float rounding (the actors' separately compiled re-rank may sum in another order)
        np.testing.assert_array_equal(i2, i1)
        np.testing.assert_allclose(d2, d1, rtol=1e-6, atol=1e-6)
    gone = i1[:, 0]
    sharded.remove(np.unique(gone))
    _, i3 = sharded.search(q, 10)
    assert not np.isin(i3, gone).any()
    with pytest.raises(ValueError, match="not in the index"):
        sharded.remove([10**9])
    with pytest.raises(ValueError, match="num_shards"):
        ShardedIndex(384, cfg, num_shards=0)
    sharded.shutdown()
