"""Product quantization of partition residuals, score-aware (anisotropic) as in ScaNN.

``ah4``: 2 dimensions per block, 16 centres per block, 4-bit codes (two per byte), scanned
with per-query uint8 lookup tables ("LUT16"). ``pq8``: 4 dimensions per block, 256 centres,
one byte per block, float LUTs.

Anisotropic loss (Guo et al., ICML 2020, arXiv 1908.10396): for threshold T and datapoint
norm ||x||, the error parallel to x is weighted eta = (d-1) * (T^2/||x||^2) / (1 - T^2/||x||^2)
times the orthogonal error; eta = 1 (T = 0 or nan) is plain PQ. Codebooks are trained with
per-block k-means; encoding minimises the anisotropic loss by coordinate descent.
"""

from __future__ import annotations

import math

import numpy as np

from paretoml.retrieval import _kernels

__all__ = ["ProductQuantizer", "anisotropic_eta"]


def anisotropic_eta(norms: np.ndarray, d: int, threshold: float) -> np.ndarray:
    """Per-vector parallel/orthogonal error weight; 1 where the loss is isotropic."""
    if not threshold or math.isnan(threshold):
        return np.ones(len(norms), np.float32)
    t2 = threshold**2 / np.maximum(norms.astype(np.float64) ** 2, 1e-30)
    t2 = np.minimum(t2, 0.999)  # tiny vectors: cap instead of dividing by ~0
    return ((d - 1) * t2 / (1.0 - t2)).astype(np.float32)


class ProductQuantizer:
    """Block codebooks over dimension `d` (padded to a multiple of the block size)."""

    def __init__(self, d: int, kind: str = "ah4", threshold: float = 0.2, seed: int = 0):
        self.d = d
        self.kind = kind
        self.dpb = 2 if kind == "ah4" else 4
        self.num_centres = 16 if kind == "ah4" else 256
        self.num_blocks = -(-d // self.dpb)
        self.threshold = threshold
        self.seed = seed
        self.codebooks: np.ndarray | None = None  # (B, K, dpb) float32

    def _blocks(self, v: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, B, dpb) float32, zero-padded."""
        pad = self.num_blocks * self.dpb - self.d
        v = np.asarray(v, np.float32)
        if pad:
            v = np.pad(v, ((0, 0), (0, pad)))
        return np.ascontiguousarray(v).reshape(len(v), self.num_blocks, self.dpb)

    def train(self, residuals: np.ndarray, iters: int = 12) -> None:
        if len(residuals) < self.num_centres:
            raise ValueError(
                f"ProductQuantizer.train: needs at least {self.num_centres} training residuals, "
                f"got {len(residuals)}; add more training vectors")
        self.codebooks = _kernels.train_codebooks(self._blocks(residuals), self.num_centres, iters, self.seed)

    def encode(self, residuals: np.ndarray, x: np.ndarray, passes: int = 4) -> np.ndarray:
        """Codes of `residuals` (n, d) whose datapoints are `x` (n, d): (n, B) uint8, or
        (n, B/2) packed nibbles for ah4."""
        norms = np.linalg.norm(x, axis=1)
        eta = anisotropic_eta(norms, self.d, self.threshold)
        xdir = x / np.maximum(norms, 1e-30)[:, None]
        codes = _kernels.encode(self._blocks(residuals), self._blocks(xdir), eta, self.codebooks, passes)
        if self.kind == "ah4":
            if codes.shape[1] % 2:
                codes = np.pad(codes, ((0, 0), (0, 1)))
            codes = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
        return np.ascontiguousarray(codes)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstructed residuals (n, d) float32 (for tests and diagnostics)."""
        if self.kind == "ah4":
            full = np.empty((len(codes), codes.shape[1] * 2), np.uint8)
            full[:, 0::2] = codes & 15
            full[:, 1::2] = codes >> 4
            codes = full[:, : self.num_blocks]
        rec = self.codebooks[np.arange(self.num_blocks)[None, :], codes]  # (n, B, dpb)
        return rec.reshape(len(codes), -1)[:, : self.d]

    def luts(self, q: np.ndarray) -> np.ndarray:
        """Float LUTs <q_b, centre_bj>: (nq, B, K) float32."""
        return np.einsum("qbt,bjt->qbj", self._blocks(q), self.codebooks, optimize=True)

    def luts_u8(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8-quantized LUTs for LUT16 scanning.

        Returns (lut8 (nq, B', 16) uint8, scale (nq,) float32, bias (nq,) float32) such that
        sum_b lut[q, b, code_b] ~= bias[q] + scale[q] * sum_b lut8[q, b, code_b]; B' = B rounded
        up to even (zero tables pad). Entries are at most 127, so the SIMD scan adds the bytes of
        two subspaces without a carry, and at most 65535 / B, so the uint16 sum over all blocks
        cannot overflow (127 levels cost no recall after re-ranking: docs/retrieval.md).
        """
        levels = np.float32(min(127, 65535 // self.num_blocks))
        cbt = np.ascontiguousarray(self.codebooks.transpose(2, 1, 0))  # (dpb, 16, B)
        return _kernels.build_lut16(self._blocks(q), cbt, levels)
