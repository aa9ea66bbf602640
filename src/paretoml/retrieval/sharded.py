"""`ShardedIndex`: the same index spread over Ray actors (extra ``distributed``).

The driver trains the partitions and codebooks once and installs them in every shard, so a
vector is coded exactly as in a single index. ``add`` deals vectors to shards by id; ``search``
asks every shard for its approximate candidate heap (the best ``reorder_k`` entries) and the
exact scores of those candidates, keeps the global best ``reorder_k`` entries by approximate
score — exactly the entries one index over all the data would keep — then de-duplicates and
returns the top k by exact score. Results equal a single `Index` over the same data (up to
ties in the approximate scores at the reorder boundary).

    sidx = ShardedIndex(384, IndexConfig(num_partitions=200), num_shards=2)
    sidx.train(x); sidx.add(x); D, I = sidx.search(q, 10)
"""

from __future__ import annotations

import numpy as np

from paretoml.errors import NotFittedError, require
from paretoml.retrieval import _kernels
from paretoml.retrieval.index import _RERANK, Index, IndexConfig, _as_matrix, _order_ties, _rerank_prefetch

__all__ = ["ShardedIndex"]


class _Shard:
    """One shard: an `Index` whose trained state was installed by the driver."""

    def __init__(self, d: int, config: IndexConfig, state: dict, threads: int):
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        self.index = Index(d, config)
        self.index._restore_trained(state)

    def add(self, x, ids):
        self.index.add(x, ids)
        return self.index.ntotal

    def remove(self, ids):
        present = ids[np.isin(ids, self.index._ids)]
        return self.index.remove(present) if len(present) else 0

    def ntotal(self):
        return self.index.ntotal

    def memory_bytes(self):
        return self.index.memory_bytes()

    def candidates(self, q, k, leaves, reorder):
        """Raw heaps (approx score, id) and exact scores of the unique candidates, per query."""
        idx = self.index
        q, k, leaves, reorder = idx._check_search(q, k, leaves, reorder)
        cand_s, cand_i, sizes = idx._scan(q, k, leaves, reorder)
        cap = cand_s.shape[1]
        ex_s = np.full((len(q), cap), -np.inf, np.float32)
        ex_i = np.full((len(q), cap), -1, np.int64)
        _kernels.rerank(q, cand_i, sizes, idx._kernel_data(), _RERANK.index(idx.config.rerank_dtype),
                        idx._bias(), cap, True, cand_s, ex_s, ex_i, _rerank_prefetch())
        ids = np.where(cand_i >= 0, idx._ids[np.maximum(cand_i, 0)], -1)
        ex_ids = np.where(ex_i >= 0, idx._ids[np.maximum(ex_i, 0)], -1)
        return cand_s, ids, ex_s, ex_ids, idx.last_points_scored


class ShardedIndex:
    """An `Index` split over `num_shards` Ray actors, with the same verbs.

    Args:
        d, config: as for `Index`.
        num_shards: number of actors.
        threads_per_shard: numba threads inside each actor.
        ray_address: passed to ``ray.init`` when Ray is not initialised yet (None: a local
            cluster sized for the shards).
    """

    def __init__(self, d: int, config: IndexConfig = IndexConfig(), num_shards: int = 2, *,
                 threads_per_shard: int = 1, ray_address: str | None = None):
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"ShardedIndex: num_shards must be an int >= 1, got {num_shards!r}")
        self._ray = require("ray", "distributed", "ShardedIndex")
        self._local = Index(d, config)  # holds the trained centres/codebooks only
        self.d = self._local.d
        self.config = config
        self.num_shards = num_shards
        self.threads_per_shard = threads_per_shard
        self._ray_address = ray_address
        self._shards: list = []
        self._next_id = 0

    @property
    def is_trained(self) -> bool:
        return self._local.is_trained

    @property
    def ntotal(self) -> int:
        if not self._shards:
            return 0
        return int(sum(self._ray.get([s.ntotal.remote() for s in self._shards])))

    def memory_bytes(self) -> int:
        return int(sum(self._ray.get([s.memory_bytes.remote() for s in self._shards])))

    def train(self, x) -> None:
        """Train centres and codebooks on the driver and start the shard actors with them."""
        ray = self._ray
        self._local.train(x)
        if not ray.is_initialized():
            ray.init(address=self._ray_address, include_dashboard=False, log_to_driver=False,
                     **({} if self._ray_address else {"num_cpus": self.num_shards}))
        actor = ray.remote(num_cpus=0)(_Shard)  # CPU accounting off: shards share the host's cores
        state = self._local._trained_state()
        self._shards = [actor.remote(self.d, self.config, state, self.threads_per_shard)
                        for _ in range(self.num_shards)]

    def add(self, x, ids=None) -> None:
        """Add vectors; shard = id mod num_shards. Ids as for `Index.add` (unique across shards)."""
        if not self.is_trained:
            raise NotFittedError("ShardedIndex.add: not trained; call train(x) first")
        x = _as_matrix(x, self.d, "ShardedIndex.add")
        if ids is None:
            ids = np.arange(self._next_id, self._next_id + len(x), dtype=np.int64)
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" or ids.shape != (len(x),):
            raise ValueError(f"ShardedIndex.add: ids must be ({len(x)},) integers, got {ids.dtype} {ids.shape}")
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ShardedIndex.add: duplicate ids; ids must be unique")
        shard_of = ids % self.num_shards
        jobs = [self._shards[s].add.remote(x[shard_of == s], ids[shard_of == s])
                for s in range(self.num_shards) if (shard_of == s).any()]
        self._ray.get(jobs)  # re-raises a shard's ValueError (e.g. an id already present)
        self._next_id = max(self._next_id, int(ids.max()) + 1)

    def remove(self, ids) -> int:
        ids = np.unique(np.asarray(ids, np.int64).ravel())
        removed = sum(self._ray.get([s.remove.remote(ids) for s in self._shards]))
        if removed != len(ids):
            raise ValueError(f"ShardedIndex.remove: {len(ids) - removed} of the ids were not in the index "
                             "(the others were removed)")
        return int(removed)

    def search(self, q, k: int, *, leaves_to_search: int | None = None,
               reorder_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As `Index.search`: (D, I), padded with -1 ids and -inf/+inf distances."""
        if not self.is_trained:
            raise NotFittedError("ShardedIndex.search: not trained; call train(x) and add(x) first")
        q, k, leaves, reorder = self._local._check_search(q, k, leaves_to_search, reorder_k)
        parts = self._ray.get([s.candidates.remote(q, k, leaves, reorder) for s in self._shards])
        cap = parts[0][0].shape[1]
        exact = reorder > 0 or self.config.quantizer == "none"
        app_s = np.concatenate([p[0] for p in parts], axis=1)
        app_i = np.concatenate([p[1] for p in parts], axis=1)
        self.last_points_scored = sum(p[4] for p in parts)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            # the best `cap` by (score, then id): one index breaks ties by slot, and slots follow
            # ids when ids are added in increasing order (the default)
            keep = np.lexsort((-app_i[r], -app_s[r]))[:cap]
            keep = keep[app_i[r, keep] >= 0]
            if exact:
                lookup = {}
                for p in parts:
                    for s_, i_ in zip(p[2][r], p[3][r]):
                        if i_ >= 0:
                            lookup[int(i_)] = s_
                uniq = np.unique(app_i[r, keep])
                scores = np.array([lookup[int(i)] for i in uniq], np.float32)
            else:  # approximate scores: the best entry of each id
                best: dict = {}
                for j in keep:
                    best.setdefault(int(app_i[r, j]), app_s[r, j])
                uniq = np.array(list(best), np.int64)
                scores = np.array(list(best.values()), np.float32)
            order = np.lexsort((-uniq, -scores))[:k]
            out_s[r, : len(order)] = scores[order]
            out_i[r, : len(order)] = uniq[order]
        _order_ties(out_s, out_i)
        return self._local._to_distances(q, out_s, out_i >= 0), out_i

    def shutdown(self) -> None:
        """Stop the shard actors (Ray itself stays up)."""
        for s in self._shards:
            self._ray.kill(s)
        self._shards = []
