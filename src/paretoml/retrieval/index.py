"""`Index`: a SOAR vector index — k-means partitions, spilled (SOAR) assignment, anisotropic
4-bit product quantization scanned with LUT16, and exact re-ranking.

Pipeline (ScaNN's, Guo et al. 2020; SOAR, Sun et al. 2023)::

    train: k-means centres (P, d) -> residuals x - c -> per-block PQ codebooks (16 centres / 2 dims)
    add:   primary centre + SOAR spill centre -> anisotropic 4-bit codes of both residuals
    search: top `leaves_to_search` centres by <q, c> -> LUT16 scan of their codes -> best
            `reorder_k` candidates (a vector seen twice is de-duplicated) -> exact scores -> top k

Usage::

    index = Index(384, IndexConfig.from_spec("IVF500,SOAR1.5,AH4,RR100"))
    index.train(x); index.add(x)
    D, I = index.search(q, 10, leaves_to_search=20)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from paretoml.errors import NotFittedError
from paretoml.retrieval import _kernels, _simd
from paretoml.retrieval.kmeans import assign, second_nearest, soar_assign, train_kmeans
from paretoml.retrieval.quantizer import ProductQuantizer

__all__ = ["Index", "IndexConfig"]

_FORMAT = 1
_QUANTIZERS = ("ah4", "pq8", "none")
_METRICS = ("ip", "cosine", "l2")
_RERANK = ("f32", "bf16", "f16")
_SPILL_MODES = ("soar", "nearest")


@dataclass(frozen=True)
class IndexConfig:
    """Settings of an `Index`.

    Attributes:
        num_partitions: k-means leaves (ScaNN's rule of thumb: ~sqrt(N)).
        spill: 0 = each vector in one partition, 1 = a second, spilled assignment.
        spill_mode: "soar" (orthogonality-amplified residuals) or "nearest" (naive second-nearest
            centre, for comparison).
        soar_lambda: SOAR's lambda (>= 0); 1-1.5 is typical.
        quantizer: "ah4" (anisotropic 4-bit PQ, 2 dims per block, LUT16), "pq8" (8-bit PQ,
            4 dims per block) or "none" (exact scores inside partitions: IVF-Flat).
        anisotropic_threshold: T of the anisotropic loss (0 or nan = plain PQ). Ignored for l2.
        metric: "ip" (inner product, larger is better), "cosine" (rows are normalised) or "l2"
            (squared Euclidean distance, smaller is better).
        rerank_dtype: dtype of the exact re-rank copy: "f32", "bf16" or "f16".
        leaves_to_search, reorder_k: default search settings (`search` arguments override them).
            reorder_k = 0 returns approximate scores without re-ranking.
        prefix_dims: if > 0, partitions and codes use only the first `prefix_dims` dimensions
            (Matryoshka-style; after a PCA rotation when `pca_rotate`); re-ranking uses all d.
        pca_rotate: fit a PCA rotation at train time and apply it before taking the prefix.
        training_sample: at most this many rows are used by `train`.
        kmeans_iters: Lloyd iterations for the partitions.
        seed: random seed of training.
    """

    num_partitions: int = 1000
    spill: int = 1
    spill_mode: str = "soar"
    soar_lambda: float = 1.5
    quantizer: str = "ah4"
    anisotropic_threshold: float = 0.2
    metric: str = "ip"
    rerank_dtype: str = "f32"
    leaves_to_search: int = 32
    reorder_k: int = 100
    prefix_dims: int = 0
    pca_rotate: bool = False
    training_sample: int = 100_000
    kmeans_iters: int = 10
    seed: int = 0

    def __post_init__(self):
        def bad(field, value, allowed):
            raise ValueError(f"IndexConfig.{field} must be {allowed}, got {value!r}")

        for f in ("num_partitions", "leaves_to_search", "training_sample", "kmeans_iters"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f, v, "an int >= 1")
        for f in ("reorder_k", "prefix_dims", "seed"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(f, v, "an int >= 0")
        if self.spill not in (0, 1) or isinstance(self.spill, bool):
            bad("spill", self.spill, "0 or 1")
        if self.spill_mode not in _SPILL_MODES:
            bad("spill_mode", self.spill_mode, f"one of {_SPILL_MODES}")
        if not isinstance(self.soar_lambda, (int, float)) or not (self.soar_lambda >= 0):
            bad("soar_lambda", self.soar_lambda, "a number >= 0")
        if self.quantizer not in _QUANTIZERS:
            bad("quantizer", self.quantizer, f"one of {_QUANTIZERS}")
        t = self.anisotropic_threshold
        if not isinstance(t, (int, float)) or not (math.isnan(t) or 0 <= t < 1):
            bad("anisotropic_threshold", t, "a number in [0, 1) or nan")
        if self.metric not in _METRICS:
            bad("metric", self.metric, f"one of {_METRICS}")
        if self.rerank_dtype not in _RERANK:
            bad("rerank_dtype", self.rerank_dtype, f"one of {_RERANK}")
        if not isinstance(self.pca_rotate, bool):
            bad("pca_rotate", self.pca_rotate, "a bool")

    @classmethod
    def from_spec(cls, spec: str) -> "IndexConfig":
        """Parse a factory string such as ``"IVF2000,SOAR1.5,AH4,RR200"``.

        Parts (comma separated, case-insensitive): ``IVF<n>`` partitions; ``SOAR<lambda>`` SOAR
        spill; ``SPILL`` naive second-nearest spill; ``AH4`` / ``PQ8`` / ``FLAT`` quantizer;
        ``T<thr>`` anisotropic threshold; ``RR<n>`` reorder_k; ``L<n>`` or ``LEAVES<n>``
        leaves_to_search (``L2`` is the metric: write ``LEAVES2`` for two leaves);
        ``IP`` / ``COSINE`` / ``L2`` metric; ``F32`` / ``BF16`` / ``F16`` re-rank copy;
        ``PREFIX<m>`` / ``PCA<m>`` prefix dimensions (PCA-rotated for ``PCA``).
        Without ``SOAR`` or ``SPILL`` there is no spill.
        """
        if not isinstance(spec, str):
            raise TypeError(f"IndexConfig.from_spec: spec must be a str, got {type(spec).__name__}")
        fields: dict = {"spill": 0}
        patterns = [
            (r"IVF(\d+)", lambda m: {"num_partitions": int(m[1])}),
            (r"SOAR(\d+(?:\.\d*)?)?", lambda m: {"spill": 1, "spill_mode": "soar",
                                                 **({"soar_lambda": float(m[1])} if m[1] else {})}),
            (r"SPILL", lambda m: {"spill": 1, "spill_mode": "nearest"}),
            (r"(AH4|PQ8|FLAT)", lambda m: {"quantizer": {"FLAT": "none"}.get(m[1], m[1].lower())}),
            (r"T(\d*\.?\d+|NAN)", lambda m: {"anisotropic_threshold": float(m[1].lower())}),
            (r"RR(\d+)", lambda m: {"reorder_k": int(m[1])}),
            (r"(IP|COSINE|L2)", lambda m: {"metric": m[1].lower()}),
            (r"(?:L|LEAVES)(\d+)", lambda m: {"leaves_to_search": int(m[1])}),
            (r"(F32|BF16|F16)", lambda m: {"rerank_dtype": m[1].lower()}),
            (r"(PREFIX|PCA)(\d+)", lambda m: {"prefix_dims": int(m[2]), "pca_rotate": m[1] == "PCA"}),
        ]
        if not spec.strip():
            raise ValueError("IndexConfig.from_spec: empty spec; expected e.g. 'IVF2000,SOAR1.5,AH4,RR200'")
        for part in spec.split(","):
            token = part.strip().upper()
            for pat, make in patterns:
                m = re.fullmatch(pat, token)
                if m:
                    fields.update(make(m))
                    break
            else:
                raise ValueError(
                    f"IndexConfig.from_spec: cannot parse {part.strip()!r} in spec {spec!r}; expected "
                    "parts like IVF2000, SOAR1.5, SPILL, AH4|PQ8|FLAT, T0.2, RR200, L32, "
                    "IP|COSINE|L2, F32|BF16|F16, PREFIX128|PCA128")
        try:
            return cls(**fields)
        except ValueError as e:
            raise ValueError(f"IndexConfig.from_spec: spec {spec!r}: {e}") from None


def _order_ties(scores: np.ndarray, ids: np.ndarray) -> None:
    """In place: within each row (scores descending), equal scores are put in ascending id
    order, so results do not depend on scan order (one index vs its shards). Only rows that
    hold a tie are re-sorted."""
    tied = np.flatnonzero(np.any((scores[:, 1:] == scores[:, :-1]) & (ids[:, 1:] >= 0), axis=1))
    for r in tied:
        order = np.lexsort((ids[r], -scores[r]))
        scores[r] = scores[r, order]
        ids[r] = ids[r, order]


def _as_matrix(x, d: int, where: str, what: str = "vectors") -> np.ndarray:
    """Validate user vectors: 2-d, float (ints rejected), d columns, finite -> float32."""
    if not isinstance(x, np.ndarray):
        if hasattr(x, "numpy"):  # torch tensors
            x = x.detach().cpu().numpy()
        else:
            x = np.asarray(x)
    if x.dtype.kind not in "f":
        raise TypeError(f"{where}: {what} must be a float array, got dtype {x.dtype}; "
                        "convert with .astype(np.float32) if the values are meaningful as floats")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{where}: {what} must have shape (n, {d}) for this d={d} index, got "
                         f"{x.shape}; was the index built with d={x.shape[-1]}?")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: got 0 {what}; pass at least one row")
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{where}: {what} row {row} contains NaN or inf; remove or fix it")
    return x


_THREADPOOLS = []  # one threadpoolctl controller, made on first use


def _blas_threads(limit: int | None = None):
    """Limit BLAS (the centre scoring GEMMs) to `limit` threads (default: numba's thread count).

    The controller that finds the BLAS libraries is made once: `threadpool_limits()` scans every
    loaded shared library on each call (0.3-2 ms, i.e. up to ~2 µs per query of a 1,000-query
    batch)."""
    if not _THREADPOOLS:
        from threadpoolctl import ThreadpoolController

        _THREADPOOLS.append(ThreadpoolController())
    return _THREADPOOLS[0].limit(limits=limit or numba.get_num_threads(), user_api="blas")


def _rerank_prefetch() -> int:
    """Rows the re-rank prefetches ahead: ``PARETOML_RETRIEVAL_PREFETCH`` (0-64; 0 = off, for A/B
    timing; results are identical), default `_kernels.PREFETCH_ROWS`."""
    v = os.environ.get("PARETOML_RETRIEVAL_PREFETCH", "")
    if v == "":
        return _kernels.PREFETCH_ROWS
    if not v.isdigit() or int(v) > 64:
        raise ValueError(f"PARETOML_RETRIEVAL_PREFETCH must be an integer 0-64, got {v!r}")
    return int(v)


class Index:
    """A partitioned, quantized, re-ranked vector index with faiss-like verbs.

    Attributes:
        d: dimension.  config: the `IndexConfig`.  last_points_scored: (nq,) int64 points whose
        codes the last `search` scored per query (a spilled vector seen twice counts twice).
    """

    def __init__(self, d: int, config: IndexConfig = IndexConfig()):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"Index: d must be an int >= 1, got {d!r}")
        if not isinstance(config, IndexConfig):
            raise TypeError(f"Index: config must be an IndexConfig, got {type(config).__name__}")
        if config.prefix_dims > d:
            raise ValueError(f"Index: IndexConfig.prefix_dims={config.prefix_dims} exceeds d={d}")
        self.d = int(d)
        self.config = config
        self.last_points_scored = np.zeros(0, np.int64)
        self.search_defaults: dict | None = None  # set by autotune, saved with the index
        self._centres: np.ndarray | None = None  # (P, m) float32
        self._rotation: np.ndarray | None = None  # (d, d) float32 when pca_rotate
        self._pq: ProductQuantizer | None = None
        self._ids = np.zeros(0, np.int64)  # external id of every slot
        self._data = np.zeros((0, d), self._rerank_np_dtype())  # re-rank copy, one row per slot
        self._norm_bias = np.zeros(0, np.float32)  # -|x|^2/2 per slot, held for l2 only
        self._entry_slot = np.zeros(0, np.int32)
        # codes: (E, nbytes) rows for pq8; for ah4 the flat blocked layout of _kernels.to_blocked
        self._entry_codes = np.zeros((0, 0), np.uint8)
        self._block_width = 32  # points per block of the ah4 layout (chosen in _set_entries)
        self._offsets = np.zeros(1, np.int64)

    # ------------------------------------------------------------------ properties
    @property
    def ntotal(self) -> int:
        return int(len(self._ids))

    @property
    def is_trained(self) -> bool:
        return self._centres is not None

    @property
    def scored_dims(self) -> int:
        """Dimensions used by partitions and codes (prefix_dims or d)."""
        return self.config.prefix_dims or self.d

    def memory_bytes(self, *, include_rerank: bool = True) -> int:
        """Bytes held by the index's arrays (centres, codebooks, codes, ids, re-rank copy)."""
        arrays = [self._ids, self._norm_bias, self._entry_slot, self._entry_codes, self._offsets]
        # (the partition of each entry is implied by _offsets; ip/cosine hold no norm array)
        if include_rerank:
            arrays.append(self._data)
        for a in (self._centres, self._rotation, None if self._pq is None else self._pq.codebooks):
            if a is not None:
                arrays.append(a)
        return int(sum(a.nbytes for a in arrays))

    # ------------------------------------------------------------------ transforms
    def _rerank_np_dtype(self):
        return np.float32 if self.config.rerank_dtype == "f32" else np.uint16

    def _prep(self, x: np.ndarray) -> np.ndarray:
        if self.config.metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return x

    def _project(self, x: np.ndarray) -> np.ndarray:
        """Vectors in the space partitions and codes live in: rotated, then the prefix."""
        if self._rotation is not None:
            x = x @ self._rotation
        return np.ascontiguousarray(x[:, : self.scored_dims], dtype=np.float32)

    def _to_rerank(self, x: np.ndarray) -> np.ndarray:
        kind = self.config.rerank_dtype
        if kind == "f32":
            return x.astype(np.float32)
        if kind == "f16":
            return x.astype(np.float16).view(np.uint16)
        bits = x.astype(np.float32).view(np.uint32)  # bf16: round to nearest even, keep the high half
        bits = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
        return (bits >> np.uint32(16)).astype(np.uint16)

    # ------------------------------------------------------------------ train / add / remove
    def train(self, x) -> None:
        """Learn the partitions (and PCA rotation, and PQ codebooks) from `x` (n, d)."""
        x = self._prep(_as_matrix(x, self.d, "Index.train"))
        cfg = self.config
        if len(x) < cfg.num_partitions:
            raise ValueError(f"Index.train: num_partitions={cfg.num_partitions} needs at least that "
                             f"many training vectors, got {len(x)}; lower IndexConfig.num_partitions")
        rng = np.random.default_rng(cfg.seed)
        if len(x) > cfg.training_sample:
            x = x[np.sort(rng.choice(len(x), cfg.training_sample, replace=False))]
        with _blas_threads():
            if cfg.pca_rotate:
                # uncentred second moment: a rotation keeps inner products; the prefix keeps
                # the directions with the most energy
                w, v = np.linalg.eigh((x.T.astype(np.float64) @ x) / len(x))
                self._rotation = np.ascontiguousarray(v[:, ::-1], dtype=np.float32)
            xs = self._project(x)
            self._centres = train_kmeans(xs, cfg.num_partitions, iters=cfg.kmeans_iters, seed=cfg.seed)
            if cfg.quantizer != "none":
                pq = ProductQuantizer(xs.shape[1], cfg.quantizer,
                                      0.0 if cfg.metric == "l2" else cfg.anisotropic_threshold, cfg.seed)
                sub = xs[rng.choice(len(xs), min(len(xs), 50_000), replace=False)]
                pq.train(sub - self._centres[assign(sub, self._centres)])
                self._pq = pq
        self._offsets = np.zeros(len(self._centres) + 1, np.int64)

    def add(self, x, ids=None) -> None:
        """Add vectors `x` (n, d) with int64 `ids` (default: ntotal, ntotal+1, ...)."""
        if not self.is_trained:
            raise NotFittedError("Index.add: the index is not trained; call Index.train(x) first")
        x = self._prep(_as_matrix(x, self.d, "Index.add"))
        ids = self._check_new_ids(ids, len(x))
        cfg = self.config
        with _blas_threads():
            xs = self._project(x)
            primary = assign(xs, self._centres)
            if cfg.spill and cfg.spill_mode == "soar":
                spill = soar_assign(xs, self._centres, primary, cfg.soar_lambda)
            elif cfg.spill:
                spill = second_nearest(xs, self._centres, primary)
            else:
                spill = np.full(len(x), -1, np.int32)
        slots = np.arange(self.ntotal, self.ntotal + len(x), dtype=np.int32)
        has = spill >= 0
        parts = np.concatenate([primary, spill[has]]).astype(np.int32)
        eslots = np.concatenate([slots, slots[has]])
        src = np.concatenate([np.arange(len(x)), np.flatnonzero(has)])
        if self._pq is not None:
            codes = self._pq.encode(xs[src] - self._centres[parts], xs[src])
        else:
            codes = np.zeros((len(parts), 0), np.uint8)
        self._ids = np.concatenate([self._ids, ids])
        self._data = np.concatenate([self._data, self._to_rerank(x)])
        if cfg.metric == "l2":
            self._norm_bias = np.concatenate([self._norm_bias, -0.5 * np.einsum("ij,ij->i", x, x)]).astype(np.float32)
        old_codes = self._row_codes() if len(self._entry_part) else codes[:0]
        self._set_entries(np.concatenate([self._entry_part, parts]),
                          np.concatenate([self._entry_slot, eslots]),
                          np.concatenate([old_codes, codes]))

    def _check_new_ids(self, ids, n: int) -> np.ndarray:
        if ids is None:
            start = int(self._ids.max()) + 1 if len(self._ids) else 0
            return np.arange(start, start + n, dtype=np.int64)
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Index.add: ids must be integers, got dtype {ids.dtype}")
        if ids.shape != (n,):
            raise ValueError(f"Index.add: ids must have shape ({n},) to match the vectors, got {ids.shape}")
        ids = ids.astype(np.int64)
        if (ids < 0).any():
            raise ValueError(f"Index.add: ids must be >= 0 (-1 marks missing results), got {int(ids.min())}")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"Index.add: duplicate id {int(uniq[counts > 1][0])} in ids; ids must be unique")
        clash = np.intersect1d(ids, self._ids)
        if len(clash):
            raise ValueError(f"Index.add: id {int(clash[0])} is already in the index; remove it first")
        return ids

    def _set_entries(self, parts, slots, codes) -> None:
        """Install entries (partition, slot, row codes), sorted by partition; ah4 codes go to
        the blocked layout (64-point blocks where AVX-512BW shuffles run, else 32)."""
        order = np.argsort(parts, kind="stable")
        self._entry_slot = np.ascontiguousarray(slots[order])
        counts = np.bincount(parts, minlength=len(self._centres))
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = np.ascontiguousarray(codes[order])
        if self.config.quantizer == "ah4":
            self._block_width = 64 if _simd.available_lanes() == 64 else 32
            self._entry_codes = _kernels.to_blocked(rows, self._offsets, self._block_width, _simd.SLACK)
        else:
            self._entry_codes = rows

    def _row_codes(self) -> np.ndarray:
        """Codes of every entry as (E, nbytes) rows (ah4: undoing the blocked layout)."""
        if self.config.quantizer != "ah4" or self._pq is None:
            return self._entry_codes
        nbytes = -(-self._pq.num_blocks // 2)
        return _kernels.to_rows(self._entry_codes, self._offsets, self._block_width, nbytes)

    def remove(self, ids) -> int:
        """Remove the vectors with these ids; every id must be in the index. Returns the count."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Index.remove: ids must be integers, got dtype {ids.dtype}")
        ids = np.unique(ids.astype(np.int64).ravel())
        missing = np.setdiff1d(ids, self._ids)
        if len(missing):
            raise ValueError(f"Index.remove: id {int(missing[0])} is not in the index "
                             f"({len(missing)} unknown ids); nothing was removed")
        keep = ~np.isin(self._ids, ids)
        new_slot = np.cumsum(keep) - 1
        self._ids, self._data = self._ids[keep], self._data[keep]
        if self.config.metric == "l2":
            self._norm_bias = self._norm_bias[keep]
        ekeep = keep[self._entry_slot]
        self._set_entries(self._entry_part[ekeep], new_slot[self._entry_slot[ekeep]].astype(np.int32),
                          self._row_codes()[ekeep])
        return int(len(ids))

    # ------------------------------------------------------------------ search
    def search(self, q, k: int, *, leaves_to_search: int | None = None,
               reorder_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best vectors for every query row.

        Args:
            q: (nq, d) float queries.
            k: results per query. When fewer than k vectors are found, the rest of the row is
                padded with id -1 and distance -inf (ip, cosine) or +inf (l2).
            leaves_to_search: partitions scored per query (default: the config's).
            reorder_k: approximate candidates re-scored exactly (0: no re-rank).
        Returns:
            (D, I): (nq, k) float32 scores (<q, x> for ip/cosine, descending; squared distance
            for l2, ascending) and (nq, k) int64 ids.
        """
        q, k, leaves, reorder = self._check_search(q, k, leaves_to_search, reorder_k)
        cand_s, cand_i, sizes = self._scan(q, k, leaves, reorder)
        nq = len(q)
        cfg = self.config
        exact = reorder > 0 or cfg.quantizer == "none"
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        _kernels.rerank(q, cand_i, sizes, self._kernel_data(), _RERANK.index(cfg.rerank_dtype), self._bias(),
                        k, exact, cand_s, out_s, out_i, _rerank_prefetch())
        found = out_i >= 0
        ids = np.where(found, self._ids[np.maximum(out_i, 0)], -1)
        _order_ties(out_s, ids)
        return self._to_distances(q, out_s, found), ids

    def _to_distances(self, q: np.ndarray, scores: np.ndarray, found: np.ndarray) -> np.ndarray:
        """Internal "larger is better" scores -> returned distances (l2: squared distance)."""
        if self.config.metric != "l2":
            return scores
        dist = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * scores
        return np.where(found, np.maximum(dist, 0.0), np.inf).astype(np.float32)

    def _check_search(self, q, k, leaves_to_search, reorder_k):
        if not self.is_trained:
            raise NotFittedError("Index.search: the index is not trained; call train() and add() first")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"Index.search: k must be an int >= 1, got {k!r}")
        cfg = self.config
        leaves = cfg.leaves_to_search if leaves_to_search is None else leaves_to_search
        reorder = cfg.reorder_k if reorder_k is None else reorder_k
        if isinstance(leaves, bool) or not isinstance(leaves, (int, np.integer)) or leaves < 1:
            raise ValueError(f"Index.search: leaves_to_search must be an int >= 1, got {leaves!r}")
        if isinstance(reorder, bool) or not isinstance(reorder, (int, np.integer)) or reorder < 0:
            raise ValueError(f"Index.search: reorder_k must be an int >= 0, got {reorder!r}")
        q = self._prep(_as_matrix(q, self.d, "Index.search", "queries"))
        return q, int(k), min(int(leaves), len(self._centres)), int(reorder)

    def _scan(self, q: np.ndarray, k: int, leaves: int, reorder: int):
        """Approximate phase: per query a min-heap of the best max(reorder, k) (score, slot)
        entries over the probed partitions (a spilled vector may appear twice)."""
        cfg = self.config
        nq = len(q)
        # without re-ranking, room for both copies of spilled vectors among the k kept
        cap = max(reorder, k * (1 + cfg.spill))
        threads = numba.get_num_threads()
        # one BLAS thread: the (nq, P) centre GEMM is small, and idle BLAS threads spin-wait for
        # work, taking the cores the numba kernels below need (2 threads ran slower than 1)
        with _blas_threads(1):
            qs = self._project(q)
            cscore = qs @ self._centres.T  # (nq, P)
            if cfg.metric == "l2":
                cscore -= 0.5 * np.einsum("ij,ij->i", self._centres, self._centres)
        probes, base = _kernels.top_probes(np.ascontiguousarray(cscore, dtype=np.float32), leaves)
        cand_s = np.full((nq, cap), -np.inf, np.float32)
        cand_i = np.full((nq, cap), -1, np.int32)
        sizes = np.zeros(nq, np.int64)
        scored = np.zeros(nq, np.int64)
        bias_slot = self._bias()
        if cfg.quantizer == "ah4":
            lut8, scale, bias = self._pq.luts_u8(qs)
            base += bias[:, None]
            lanes = _simd.available_lanes()
            if lanes:
                lut = lut8.reshape(nq, -1)  # (nq, 32 * nbytes): block count padded to even
                pbm = (_kernels.part_bias_max(self._offsets, self._entry_slot, bias_slot)
                       if cfg.metric == "l2" else np.zeros(len(self._centres), np.float32))
                kernel = _simd.scan_lut16_avx512 if lanes == 64 else _simd.scan_lut16_avx2
                kernel(probes, base, lut, scale, self._offsets, self._entry_slot, self._entry_codes, pbm,
                       bias_slot, self._block_width, threads, cand_s, cand_i, sizes, scored,
                       _simd.pair_queries())
            else:
                _kernels.scan_lut16(probes, base, lut8, scale, self._offsets, self._entry_slot,
                                    self._entry_codes, bias_slot, self._block_width, threads, cand_s, cand_i,
                                    sizes, scored)
        elif cfg.quantizer == "pq8":
            _kernels.scan_float_lut(probes, base, self._pq.luts(qs), self._offsets, self._entry_slot,
                                    self._entry_codes, bias_slot, 4 * threads, cand_s, cand_i,
                                    sizes, scored)
        else:
            if cfg.prefix_dims:  # exact scores on the projected prefix only
                exact_q, data, kind = qs, self._prefix_data().view(np.uint16), 0
            else:
                exact_q, data, kind = q, self._kernel_data(), _RERANK.index(cfg.rerank_dtype)
            _kernels.scan_exact(probes, exact_q, data, kind, self._offsets, self._entry_slot,
                                bias_slot, 4 * threads, cand_s, cand_i, sizes, scored)
        self.last_points_scored = scored
        return cand_s, cand_i, sizes

    def _bias(self) -> np.ndarray:
        """Per-slot score offset for the kernels: -|x|^2/2 for l2, zeros (not held) otherwise."""
        return self._norm_bias if self.config.metric == "l2" else np.zeros(self.ntotal, np.float32)

    @property
    def _entry_part(self) -> np.ndarray:
        """Partition of every entry, expanded from the CSR offsets (not held)."""
        return np.repeat(np.arange(len(self._offsets) - 1, dtype=np.int32), np.diff(self._offsets))

    def _kernel_data(self) -> np.ndarray:
        """The re-rank copy as the uint16 array the kernels take (f32 rows as (n, 2d) halves)."""
        return self._data.view(np.uint16) if self._data.dtype == np.float32 else self._data

    def _prefix_data(self) -> np.ndarray:
        """Projected f32 copy for exact prefix scoring with quantizer="none" (computed lazily)."""
        if getattr(self, "_prefix_cache", None) is None or len(self._prefix_cache) != self.ntotal:
            self._prefix_cache = self._project(self.reconstruct_all())
        return self._prefix_cache

    def reconstruct_all(self) -> np.ndarray:
        """The stored re-rank copy as (ntotal, d) float32 (after cosine normalisation)."""
        kind = self.config.rerank_dtype
        if kind == "f32":
            return self._data.copy()
        if kind == "f16":
            return self._data.view(np.float16).astype(np.float32)
        return (self._data.astype(np.uint32) << np.uint32(16)).view(np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the index to directory `path` (``arrays.npz`` + ``index.json``), atomically:
        everything goes to a temporary sibling folder that then replaces `path`."""
        if not self.is_trained:
            raise NotFittedError("Index.save: the index is not trained; nothing to save")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            arrays = {"centres": self._centres, "ids": self._ids, "data": self._data,
                      "norm_bias": self._norm_bias, "entry_part": self._entry_part,
                      "entry_slot": self._entry_slot, "entry_codes": self._row_codes()}
            if self._rotation is not None:
                arrays["rotation"] = self._rotation
            if self._pq is not None:
                arrays["codebooks"] = self._pq.codebooks
            with open(tmp / "arrays.npz", "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            meta = {"format": _FORMAT, "kind": "paretoml.retrieval.Index", "d": self.d,
                    "config": dataclasses.asdict(self.config),
                    "npz_bytes": (tmp / "arrays.npz").stat().st_size,
                    "search_defaults": getattr(self, "search_defaults", None)}
            (tmp / "index.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path) -> "Index":
        """Read an index written by `save`; a missing, truncated or inconsistent folder raises
        ValueError naming the problem (never pickle: ``allow_pickle=False``)."""
        path = Path(path)
        where = f"Index.load({str(path)!r})"
        if not (path / "index.json").is_file() or not (path / "arrays.npz").is_file():
            raise ValueError(f"{where}: not an index folder (expected index.json and arrays.npz); "
                             "write one with Index.save or `paretoml index build`")
        try:
            meta = json.loads((path / "index.json").read_text(encoding="utf-8"))
            cfg = IndexConfig(**meta["config"])
            d = int(meta["d"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where}: index.json is corrupted ({e}); rebuild the index") from None
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{where}: format {meta.get('format')!r} is not {_FORMAT}; rebuild the index")
        if (path / "arrays.npz").stat().st_size != meta.get("npz_bytes"):
            raise ValueError(f"{where}: arrays.npz has {(path / 'arrays.npz').stat().st_size} bytes, "
                             f"index.json says {meta.get('npz_bytes')}: truncated or replaced; rebuild")
        try:
            with np.load(path / "arrays.npz", allow_pickle=False) as z:
                arrs = {name: z[name] for name in z.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{where}: arrays.npz is corrupted ({e}); rebuild the index") from None
        index = cls(d, cfg)
        try:
            index._restore(arrs)
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(f"{where}: arrays are inconsistent ({e}); rebuild the index") from None
        index.search_defaults = meta.get("search_defaults")
        if index.search_defaults:
            sd = index.search_defaults
            index.config = dataclasses.replace(cfg, leaves_to_search=int(sd["leaves_to_search"]),
                                               reorder_k=int(sd["reorder_k"]))
        return index

    def _trained_state(self) -> dict:
        """What training learned (centres, rotation, codebooks), for installing elsewhere."""
        state = {"centres": self._centres}
        if self._rotation is not None:
            state["rotation"] = self._rotation
        if self._pq is not None:
            state["codebooks"] = self._pq.codebooks
        return state

    def _restore_trained(self, state: dict) -> None:
        self._centres = state["centres"]
        self._rotation = state.get("rotation")
        if "codebooks" in state:
            cfg = self.config
            self._pq = ProductQuantizer(self.scored_dims, cfg.quantizer,
                                        0.0 if cfg.metric == "l2" else cfg.anisotropic_threshold, cfg.seed)
            self._pq.codebooks = state["codebooks"]
        self._offsets = np.zeros(len(self._centres) + 1, np.int64)

    def _restore(self, a: dict) -> None:
        """Install loaded arrays after checking every shape, dtype and index range the kernels rely on."""
        cfg, m = self.config, self.scored_dims
        c = a["centres"]
        n = len(a["ids"])
        e = len(a["entry_part"])

        def need(ok, what):
            if not ok:
                raise ValueError(what)

        need(c.dtype == np.float32 and c.ndim == 2 and c.shape[1] == m and len(c) >= 1, "centres")
        need(a["ids"].dtype == np.int64 and a["ids"].ndim == 1, "ids")
        need(a["data"].dtype == self._rerank_np_dtype() and a["data"].shape == (n, self.d), "data")
        need(a["norm_bias"].dtype == np.float32
             and a["norm_bias"].shape == ((n,) if cfg.metric == "l2" else (0,)), "norm_bias")
        need(a["entry_part"].dtype == np.int32 and a["entry_slot"].dtype == np.int32
             and a["entry_slot"].shape == (e,), "entries")
        need(e == 0 or (a["entry_part"].min() >= 0 and a["entry_part"].max() < len(c)), "entry_part range")
        need(e == 0 or (a["entry_slot"].min() >= 0 and a["entry_slot"].max() < n), "entry_slot range")
        codes = a["entry_codes"]
        need(codes.dtype == np.uint8 and codes.ndim == 2 and len(codes) == e, "entry_codes")
        if cfg.pca_rotate:
            need(a["rotation"].shape == (self.d, self.d) and a["rotation"].dtype == np.float32, "rotation")
            self._rotation = a["rotation"]
        if cfg.quantizer != "none":
            pq = ProductQuantizer(m, cfg.quantizer, 0.0 if cfg.metric == "l2" else cfg.anisotropic_threshold,
                                  cfg.seed)
            cb = a["codebooks"]
            need(cb.dtype == np.float32 and cb.shape == (pq.num_blocks, pq.num_centres, pq.dpb), "codebooks")
            width = -(-pq.num_blocks // 2) if cfg.quantizer == "ah4" else pq.num_blocks
            need(codes.shape[1] == width, "entry_codes width")
            pq.codebooks = cb
            self._pq = pq
        self._centres = c
        self._ids, self._data, self._norm_bias = a["ids"], a["data"], a["norm_bias"]
        self._set_entries(a["entry_part"], a["entry_slot"], codes)
