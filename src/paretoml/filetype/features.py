"""Byte features of a file: its first and last bytes, whitespace stripped, in fixed windows.

The scheme follows Magika's (read at most `block_size` bytes from each end, strip leading
whitespace from the head and trailing whitespace from the tail, keep `window` bytes of each,
pad with token 256), with a smaller default window. Only the bytes needed are ever read,
so a multi-GB file costs two small reads.

    >>> f = features_from_bytes(b"#!/bin/sh\\necho hi\\n", FeatureConfig(window=8))
    >>> f.tokens.shape
    (16,)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureConfig", "Features", "features_from_bytes", "read_ends", "PAD"]

PAD = 256  # padding token: the model's vocabulary is 256 byte values + PAD
_WS = b" \t\n\r\x0b\x0c"


@dataclass(frozen=True)
class FeatureConfig:
    """How many bytes the model sees.

    Attributes:
        window: bytes kept from each end after stripping (the model input is 2 * window tokens).
        block_size: bytes read from each end before stripping (≥ window).
        min_size_for_model: stripped content shorter than this is decided by a rule.
    """

    window: int = 512
    block_size: int = 4096
    min_size_for_model: int = 8

    def __post_init__(self):
        if not (isinstance(self.window, int) and 8 <= self.window <= 8192):
            raise ValueError(f"FeatureConfig.window must be an int in [8, 8192], got {self.window!r}")
        if not (isinstance(self.block_size, int) and self.window <= self.block_size <= 1 << 20):
            raise ValueError(f"FeatureConfig.block_size must be an int in [window={self.window}, 1048576], "
                             f"got {self.block_size!r}")
        if not (isinstance(self.min_size_for_model, int) and 1 <= self.min_size_for_model <= 1024):
            raise ValueError(f"FeatureConfig.min_size_for_model must be an int in [1, 1024], "
                             f"got {self.min_size_for_model!r}")


@dataclass(frozen=True)
class Features:
    """Model input for one file.

    Attributes:
        tokens: int16 array of shape (2 * window,): head window (padded at its end) then
            tail window (padded at its start).
        stripped_size: length of the whitespace-stripped content seen (≤ 2 * block_size).
        head: the first bytes read (unstripped, at most 64), for rules such as UTF-8 checks.
    """

    tokens: np.ndarray
    stripped_size: int
    head: bytes


def read_ends(fd: int, size: int, block_size: int) -> tuple[bytes, bytes]:
    """Read at most `block_size` bytes from each end of an open file descriptor.

    Returns (head, tail); for files of at most 2 * block_size bytes, head is the whole
    content and tail is b"". Never reads more than 2 * block_size bytes.
    """
    if size <= 2 * block_size:
        chunks, got = [], 0
        while got < size:  # a short read can happen on some file systems; stop at EOF
            b = os.pread(fd, size - got, got)
            if not b:
                break
            chunks.append(b)
            got += len(b)
        return b"".join(chunks), b""
    head = os.pread(fd, block_size, 0)
    tail = os.pread(fd, block_size, size - block_size)
    return head, tail


def features_from_ends(head: bytes, tail: bytes, cfg: FeatureConfig) -> Features:
    """Features from the bytes `read_ends` returned (tail == b"" means head is the whole file)."""
    if not tail:  # whole content in hand: strip both sides of the same buffer
        content = head.strip(_WS)
        beg, end, n = content, content, len(content)
    else:
        beg, end = head.lstrip(_WS), tail.rstrip(_WS)
        n = len(beg) + len(end)
    w = cfg.window
    tokens = np.full(2 * w, PAD, dtype=np.int16)
    b = beg[:w]
    e = end[-w:] if end else b""
    tokens[: len(b)] = np.frombuffer(b, dtype=np.uint8)
    if e:
        tokens[2 * w - len(e):] = np.frombuffer(e, dtype=np.uint8)
    return Features(tokens, n, head[:64])


def features_from_bytes(data: bytes, cfg: FeatureConfig = FeatureConfig()) -> Features:
    """Features of an in-memory content (only its two ends are looked at)."""
    bs = cfg.block_size
    if len(data) <= 2 * bs:
        return features_from_ends(bytes(data), b"", cfg)
    return features_from_ends(bytes(data[:bs]), bytes(data[-bs:]), cfg)
