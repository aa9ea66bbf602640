"""Offline data loaders: data shipped with the package or its dependencies, and readers
for the larger corpora that benchmarks pass by path. Nothing here downloads.

    >>> text = load_tinyshakespeare()                 # 1,115,394 characters, package data
    >>> tok = CharTokenizer.from_text(text)
    >>> train, val = lm_splits(tok.encode(text))      # int64 tensors, 90% / 10%
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

__all__ = ["load_tinyshakespeare", "CharTokenizer", "lm_splits", "sample_batch"]


def load_tinyshakespeare() -> str:
    """The tinyshakespeare corpus (public domain) that ships as package data."""
    return resources.files("paretoml").joinpath("data/tinyshakespeare.txt").read_text(encoding="utf-8")


@dataclass(frozen=True)
class CharTokenizer:
    """Character-level vocabulary: id = position of the character in `chars`."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        table = {c: i for i, c in enumerate(self.chars)}
        try:
            return torch.tensor([table[c] for c in text], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"CharTokenizer.encode: character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def lm_splits(ids: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous train / validation split of a token stream (validation = the tail)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"lm_splits: val_fraction must be in (0, 1), got {val_fraction}")
    n = int(len(ids) * (1 - val_fraction))
    return ids[:n], ids[n:]


def sample_batch(ids: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None,
                 device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of a token stream: inputs (B, T) and next-token targets (B, T)."""
    if len(ids) <= block_size:
        raise ValueError(f"sample_batch: stream of {len(ids)} tokens is not longer than block_size {block_size}")
    ix = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    offs = torch.arange(block_size)
    x = ids[ix[:, None] + offs]
    y = ids[ix[:, None] + offs + 1]
    return (x.to(device), y.to(device)) if device is not None else (x, y)


def read_lines(path: str | Path, limit: int | None = None) -> list[str]:
    """Lines of a UTF-8 text file, gzip-compressed or not (for corpora given by path)."""
    import gzip

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    out = []
    with opener(p, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(line.rstrip("\n"))
            if limit is not None and len(out) >= limit:
                break
    return out
