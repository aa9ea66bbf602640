"""The byte model, numpy-only inference (no torch import: a short cold start).

Architecture (`ModelConfig`), applied to the head and the tail window alike with shared weights::

    tokens (B, 2, W)  --embed 257→E-->  (B, 2, W, E)  --group `chunk` bytes-->  (B, 2, P, chunk·E)
      --conv over chunks, kernel k, ReLU-->  (B, 2, P', H)  --conv H→H2, kernel k2 (1 = pointwise), ReLU-->
      (B, 2, P'', H2)  --max over positions (head, tail) + the head's first position
      [+ mean over positions (head, tail) when mean_pool]-->  (B, 3·H2 or 5·H2)
      --LayerNorm, Linear-->  logits (B, n_labels)

Grouping `chunk` bytes before the convolution (as Magika groups 4 embedded bytes) makes each
layer one matrix product: the receptive fields are strided windows of the previous layer's
rows, copied contiguous (im2col), so a file costs a few million multiply-adds in two BLAS
calls (computing every tap's output and summing shifted slices instead was 3× slower for
the larger models: more memory traffic). The head's first position keeps offset-0 information (magic numbers) that
max pooling alone would lose.

Weights are stored as safetensors (tensors) + JSON (labels, thresholds, config). The
safetensors reader here is a few lines over the documented format (8-byte header length,
JSON header, raw little-endian data) so that inference needs numpy only: the library's numpy
loader would add ~17 ms to the CLI's ~130 ms cold start. The tests check it against the
``safetensors`` library.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
import os

import numpy as np

from paretoml._validate import check_ints

__all__ = ["ModelConfig", "ByteModel", "read_safetensors"]

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16, "U8": np.uint8}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the byte model.

    Attributes:
        window: bytes per end (input is 2 * window tokens).
        embed_dim: byte embedding width E.
        chunk: bytes grouped per position before the convolution (window % chunk == 0).
        kernel: convolution width, in chunks.
        hidden: convolution channels H.
        hidden2: second-layer channels H2 (pooled features are 3 * H2, or 5 * H2 with mean_pool).
        kernel2: second-layer convolution width in positions (1: pointwise).
        mean_pool: also average each window's second-layer features over positions (a
            frequency signal that max pooling lacks; padding positions count too).
    """

    window: int = 512
    embed_dim: int = 8
    chunk: int = 4
    kernel: int = 2
    hidden: int = 64
    hidden2: int = 128
    kernel2: int = 1
    mean_pool: bool = False

    def __post_init__(self):
        for name, lo, hi in (("window", 16, 4096), ("embed_dim", 1, 256), ("chunk", 1, 64), ("kernel", 1, 16),
                             ("hidden", 1, 4096), ("hidden2", 1, 4096), ("kernel2", 1, 16)):
            check_ints(self, (name,), lo, hi)
        if not isinstance(self.mean_pool, bool):
            raise ValueError(f"ModelConfig.mean_pool must be a bool, got {self.mean_pool!r}")
        if self.window % self.chunk:
            raise ValueError(f"ModelConfig.window ({self.window}) must be a multiple of chunk ({self.chunk})")
        if self.window // self.chunk < self.kernel + self.kernel2 - 1:
            raise ValueError(f"ModelConfig.kernel + kernel2 - 1 ({self.kernel + self.kernel2 - 1}) must be ≤ "
                             f"window/chunk ({self.window // self.chunk})")

    @property
    def n_pooled(self) -> int:
        """Width of the pooled feature vector."""
        return (5 if self.mean_pool else 3) * self.hidden2


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file as numpy arrays (numpy only; no pickle)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (only {len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: safetensors header says {n} bytes, file has {len(raw) - 8}")
    header = json.loads(raw[8:8 + n])
    out = {}
    base = 8 + n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dt = _DTYPES.get(meta["dtype"])
        if dt is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {meta['dtype']}")
        a, b = meta["data_offsets"]
        size = int(np.prod(meta["shape"])) * np.dtype(dt).itemsize
        if not (0 <= a <= b <= len(raw) - base and b - a == size):
            raise ValueError(f"{path}: tensor {name!r} has data offsets {a}..{b} that do not fit its shape "
                             f"{meta['shape']} or the file ({len(raw) - base} data bytes): truncated or corrupt")
        out[name] = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<"), count=(b - a) // np.dtype(dt).itemsize,
                                  offset=base + a).reshape(meta["shape"])
    return out


class ByteModel:
    """Numpy forward pass of the byte model.

    Args:
        weights: arrays named as the torch module's state dict (see train.py).
        cfg: the `ModelConfig` the weights were trained with.
    """

    def __init__(self, weights: dict[str, np.ndarray], cfg: ModelConfig):
        self.cfg = cfg
        f32 = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.emb = f32["emb.weight"]                                   # (257, E)
        w = f32["conv.weight"]                                          # (H, chunk·E, k) torch Conv1d layout
        self.conv_w = np.ascontiguousarray(w.transpose(2, 1, 0).reshape(-1, w.shape[0]))  # (k·chunk·E, H)
        self.conv_b = f32["conv.bias"]
        w2 = f32["pw.weight"]                                           # (H2, H, k2)
        self.pw_w = np.ascontiguousarray(w2.transpose(2, 1, 0).reshape(-1, w2.shape[0]))  # (k2·H, H2)
        self.pw_b = f32["pw.bias"]
        self.ln_w, self.ln_b = f32["norm.weight"], f32["norm.bias"]
        self.head_w = np.ascontiguousarray(f32["head.weight"].T)        # (3·H2, n_labels)
        self.head_b = f32["head.bias"]

    @property
    def n_params(self) -> int:
        return sum(a.size for a in (self.emb, self.conv_w, self.conv_b, self.pw_w, self.pw_b, self.ln_w,
                                    self.ln_b, self.head_w, self.head_b))

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits (B, n_labels) for int tokens of shape (B, 2 * window), values in [0, 256]."""
        c = self.cfg
        B = tokens.shape[0]
        ce = c.chunk * c.embed_dim
        x = self.emb[tokens].reshape(B * 2, c.window * c.embed_dim)     # (B·2, W·E): chunk j = x[:, j·ce:(j+1)·ce]
        h = _relu_linear(_windows(x, c.kernel * ce, ce), self.conv_w, self.conv_b)  # (B·2, Q, H)
        z = _relu_linear(_windows(h.reshape(B * 2, -1), c.kernel2 * h.shape[2], h.shape[2]), self.pw_w, self.pw_b)
        z = z.reshape(B, 2, -1, z.shape[2])                              # (B, 2, Q2, H2)
        parts = [z.max(axis=2).reshape(B, -1), z[:, 0, 0]]
        if c.mean_pool:
            parts.append(z.mean(axis=2).reshape(B, -1))
        feat = np.concatenate(parts, axis=1)                             # (B, 3·H2 or 5·H2)
        mu = feat.mean(axis=1, keepdims=True)
        var = feat.var(axis=1, keepdims=True)
        feat = (feat - mu) / np.sqrt(var + 1e-5) * self.ln_w + self.ln_b
        return feat @ self.head_w + self.head_b

    def probs(self, tokens: np.ndarray) -> np.ndarray:
        """Softmax probabilities (B, n_labels)."""
        z = self.logits(tokens)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def _windows(x: np.ndarray, size: int, step: int) -> np.ndarray:
    """Rows (R, L) → (R, n, size): every window of `size` values starting at multiples of `step`
    (a convolution's receptive fields, copied contiguous so that one BLAS product follows)."""
    n = (x.shape[1] - size) // step + 1
    r, s = x.strides
    return np.ascontiguousarray(np.lib.stride_tricks.as_strided(x, (x.shape[0], n, size), (r, step * s, s),
                                                                 writeable=False))


def _relu_linear(win: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ReLU(win @ w + b) over (R, n, K) windows → (R, n, H), in place after the product."""
    y = win.reshape(-1, win.shape[2]) @ w
    y += b
    np.maximum(y, 0.0, out=y)
    return y.reshape(win.shape[0], win.shape[1], -1)


def load_model(folder: str | os.PathLike) -> tuple[ByteModel, dict]:
    """The model and its metadata (labels, thresholds, feature and model config) from `folder`."""
    with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
        meta = json.load(f)
    cfg = ModelConfig(**meta["model_config"])
    return ByteModel(read_safetensors(os.path.join(folder, "model.safetensors")), cfg), meta


def config_dict(cfg: ModelConfig) -> dict:
    return asdict(cfg)
