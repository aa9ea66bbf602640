"""k-means partitioning and (SOAR) assignment for the index.

The heavy step of every function here is one matrix product (``X @ C.T``), which numpy hands
to a multi-threaded BLAS; the caller limits BLAS threads to numba's thread count.

SOAR (Sun et al. 2023, arXiv 2404.00774): a vector x with primary centre c1 and residual
r = x - c1 is also stored under the centre c minimising ``||x - c||^2 + lam * <x - c, r/||r||>^2``
(orthogonality-amplified residuals). If that argmin is c1 itself there is no second copy.
Because ``<x - c, rhat> = <x, rhat> - <c, rhat>`` the whole search is one more GEMM.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

_CHUNK = 8192  # rows per GEMM block: bounds the (chunk, num_centres) score matrix


def assign(x: np.ndarray, centres: np.ndarray, *, metric: str = "ip") -> np.ndarray:
    """Nearest centre of every row (L2 nearest; for ip/cosine data on the sphere this is the
    same as the largest <x, c> - |c|^2/2). Returns (n,) int32."""
    half_norm = 0.5 * np.einsum("ij,ij->i", centres, centres)
    out = np.empty(len(x), np.int32)
    for s in range(0, len(x), _CHUNK):
        scores = x[s:s + _CHUNK] @ centres.T - half_norm
        out[s:s + _CHUNK] = np.argmax(scores, axis=1)
    return out


def second_nearest(x: np.ndarray, centres: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Naive spill: the nearest centre other than the primary one. Returns (n,) int32."""
    half_norm = 0.5 * np.einsum("ij,ij->i", centres, centres)
    out = np.empty(len(x), np.int32)
    for s in range(0, len(x), _CHUNK):
        scores = x[s:s + _CHUNK] @ centres.T - half_norm
        scores[np.arange(len(scores)), primary[s:s + _CHUNK]] = -np.inf
        out[s:s + _CHUNK] = np.argmax(scores, axis=1)
    return out


def soar_assign(x: np.ndarray, centres: np.ndarray, primary: np.ndarray, lam: float) -> np.ndarray:
    """SOAR spill assignment: argmin_c ||x-c||^2 + lam*<x-c, rhat>^2 over all centres.

    Returns (n,) int32 spilled centre per row, or -1 where the argmin is the primary centre
    (no second copy is stored then).
    """
    cnorm = np.einsum("ij,ij->i", centres, centres)
    out = np.empty(len(x), np.int32)
    for s in range(0, len(x), _CHUNK):
        xb = x[s:s + _CHUNK]
        pb = primary[s:s + _CHUNK]
        r = xb - centres[pb]
        rn = np.linalg.norm(r, axis=1, keepdims=True)
        rhat = r / np.maximum(rn, 1e-30)
        xr = np.einsum("ij,ij->i", xb, rhat)[:, None]  # (b, 1)
        proj = xr - rhat @ centres.T  # <x - c, rhat> for every c: (b, C)
        # ||x - c||^2 without the per-row constant ||x||^2 (it does not move the argmin)
        loss = cnorm[None, :] - 2.0 * (xb @ centres.T) + lam * proj * proj
        best = np.argmin(loss, axis=1).astype(np.int32)
        best[best == pb] = -1
        out[s:s + _CHUNK] = best
    return out


def train_kmeans(x: np.ndarray, k: int, *, iters: int = 10, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means with k-means++-style seeding on a subsample. Returns (k, d) float32.

    Seeding: k-means++ (D^2 sampling) run on at most 20*k rows keeps the init O(k^2 d)-cheap
    while spreading the centres; Lloyd iterations then use all of `x`. Empty clusters are
    re-seeded on the rows farthest from their centres.
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    sub = x[rng.choice(n, size=min(n, 20 * k), replace=False)]
    centres = np.empty((k, x.shape[1]), np.float32)
    centres[0] = sub[rng.integers(len(sub))]
    sub_sq = np.einsum("ij,ij->i", sub, sub)
    closest = sub_sq - 2.0 * (sub @ centres[0]) + centres[0] @ centres[0]
    for j in range(1, k):
        prob = np.maximum(closest, 0.0)
        total = prob.sum()
        idx = rng.choice(len(sub), p=prob / total) if total > 0 else rng.integers(len(sub))
        centres[j] = sub[idx]
        dist = sub_sq - 2.0 * (sub @ centres[j]) + centres[j] @ centres[j]
        np.minimum(closest, dist, out=closest)
    for _ in range(iters):
        lab = assign(x, centres)
        onehot = sparse.csr_matrix((np.ones(n, np.float32), (lab, np.arange(n))), shape=(k, n))
        sums = onehot @ x  # (k, d) per-cluster sums
        cnt = np.bincount(lab, minlength=k)
        empty = np.flatnonzero(cnt == 0)
        nonempty = cnt > 0
        centres[nonempty] = (sums[nonempty] / cnt[nonempty, None]).astype(np.float32)
        if len(empty):
            err = np.einsum("ij,ij->i", x - centres[lab], x - centres[lab])
            centres[empty] = x[np.argsort(-err)[: len(empty)]]
    return centres
