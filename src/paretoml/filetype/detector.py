"""`Detector`: identify a file's content type from its bytes (rules + the byte model).

    >>> from paretoml.filetype import Detector
    >>> d = Detector()
    >>> d.identify_bytes(b"#!/usr/bin/env python3\\nimport sys\\nprint(sys.argv)\\n").label
    'python'

Rules decide without the model: missing/unreadable paths and non-regular files (a status,
never an exception), directories, symlinks (with ``no_dereference``), empty files, ZIP-based
files by their member names (`containers`), eight binary formats outside the model's labels by
their signatures (`signatures`), and content with fewer than 8 non-whitespace bytes (``txt`` if
it decodes as UTF-8, else ``unknown``). Everything else goes through the model; a prediction scoring below its
label's threshold (``high-confidence``) or below 0.5 (``medium-confidence``) falls back to
``txt`` (text-like labels) or ``unknown``; ``best-guess`` keeps the model's label.

Paths are checked with ``os.stat`` before anything is opened and opened non-blocking, so
FIFOs and devices never block; only the bytes the features need are read, so a multi-GB
file costs two small reads.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from paretoml.filetype.containers import zip_label
from paretoml.filetype.features import FeatureConfig, Features, features_from_bytes, features_from_ends, read_ends
from paretoml.filetype.labels import info
from paretoml.filetype.model import ByteModel, load_model
from paretoml.filetype.signatures import signature_label

__all__ = ["Detector", "DetectorConfig", "FileTypeResult", "MODES", "MODELS"]

MODES = ("high-confidence", "medium-confidence", "best-guess")
# shipped weights: "default" reads 512 bytes from each end; "wide" (session 8) 1,024, at about half
# the files/s and, within noise, the same accuracy (docs/filetype.md, session 8)
_HERE = os.path.dirname(__file__)  # os.path, not pathlib: a shorter cold start
MODELS = {"default": os.path.join(_HERE, "data"), "wide": os.path.join(_HERE, "data_wide")}


@dataclass(frozen=True)
class DetectorConfig:
    """Detector settings.

    Attributes:
        mode: ``high-confidence`` (per-label thresholds, default), ``medium-confidence``
            (score ≥ 0.5) or ``best-guess`` (always the model's label).
        no_dereference: report symlinks as ``symlink`` instead of following them.
        batch_size: files per model call in `Detector.identify_paths`.
        model: which shipped weights: ``default`` (512-byte windows) or ``wide`` (1,024-byte
            windows, about half the files/s, the same accuracy within noise).
    """

    mode: str = "high-confidence"
    no_dereference: bool = False
    batch_size: int = 8
    model: str = "default"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"DetectorConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.model not in MODELS:
            raise ValueError(f"DetectorConfig.model must be one of {tuple(MODELS)}, got {self.model!r}")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 65536):
            raise ValueError(f"DetectorConfig.batch_size must be an int in [1, 65536], got {self.batch_size!r}")


@dataclass(frozen=True)
class FileTypeResult:
    """The answer for one input.

    Attributes:
        path: the path asked about ("-" for bytes/stdin).
        status: ``ok``, or why no type could be given: ``not_found``, ``permission_denied``,
            ``not_regular_file`` (FIFO, socket, device), ``error``.
        label, mime_type, group, description, extensions, is_text: the output type (empty
            strings when status is not ``ok``).
        score: the model's probability for its label (1.0 when a rule decided).
        decided_by: ``rule`` or ``model``.
        model_label: the model's own top label ("" when a rule decided).
        overwrite_reason: ``low_confidence`` when the model's label was replaced by txt/unknown.
        message: details for a non-ok status.
    """

    path: str
    status: str
    label: str = ""
    mime_type: str = ""
    group: str = ""
    description: str = ""
    extensions: tuple[str, ...] = ()
    is_text: bool = False
    score: float = 0.0
    decided_by: str = ""
    model_label: str = ""
    overwrite_reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def asdict(self) -> dict:
        d = asdict(self)
        d["extensions"] = list(self.extensions)
        return d


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _zip_rule(read_at, size: int) -> str | None:
    """`zip_label`, with a damaged archive (a record cut short) left to the model."""
    try:
        return zip_label(read_at, size)
    except (struct.error, ValueError):
        return None


def _typed(path: str, label: str, score: float, decided_by: str, model_label: str = "",
           overwrite_reason: str = "") -> FileTypeResult:
    i = info(label)
    return FileTypeResult(path, "ok", label, i.mime_type, i.group, i.description, i.extensions, i.is_text,
                          float(score), decided_by, model_label, overwrite_reason)


class Detector:
    """Content-type detector over file paths or bytes.

    Args:
        mode: see `DetectorConfig.mode` (a string, for convenience).
        config: full settings; `mode` overrides its mode when both are given.
        model_dir: a folder with ``model.safetensors`` + ``model.json`` (default: the shipped weights
            that ``config.model`` names).
    """

    def __init__(self, mode: str | None = None, *, config: DetectorConfig | None = None,
                 model_dir: str | os.PathLike | None = None):
        cfg = config or DetectorConfig()
        if mode is not None:
            if not isinstance(mode, str):
                raise TypeError(f"Detector: mode must be a str, one of {MODES}; got {type(mode).__name__}")
            cfg = DetectorConfig(mode=mode, no_dereference=cfg.no_dereference, batch_size=cfg.batch_size,
                                 model=cfg.model)
        self.config = cfg
        folder = os.fspath(model_dir) if model_dir is not None else MODELS[cfg.model]
        if not os.path.exists(os.path.join(folder, "model.json")):
            raise FileNotFoundError(f"Detector: no model.json in {folder} — pass the folder that "
                                    "`paretoml filetype train --out` wrote")
        self.model: ByteModel
        self.model, meta = load_model(folder)
        self.labels: list[str] = list(meta["labels"])
        self.thresholds = np.array([meta["thresholds"].get(lab, 0.5) for lab in self.labels], dtype=np.float32)
        self.feature_config = FeatureConfig(**meta["feature_config"])

    # -- public API ------------------------------------------------------------------

    def identify_bytes(self, data: bytes | bytearray | memoryview) -> FileTypeResult:
        """The content type of an in-memory content."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Detector.identify_bytes: expected bytes, bytearray or memoryview, "
                            f"got {type(data).__name__}")
        data = bytes(data)
        if not data:
            return _typed("-", "empty", 1.0, "rule")
        if data[:4] in _ZIP_MAGIC:
            label = _zip_rule(lambda off, n: data[off:off + n], len(data))
            if label is not None:
                return _typed("-", label, 1.0, "rule")
        label = signature_label(data[:64])
        if label is not None:
            return _typed("-", label, 1.0, "rule")
        f = features_from_bytes(data, self.feature_config)
        return self._decide_one("-", f)

    def identify_path(self, path: str | os.PathLike) -> FileTypeResult:
        """The content type of one file (a status instead of an exception for bad paths)."""
        return self.identify_paths([path])[0]

    def identify_paths(self, paths: Iterable[str | os.PathLike]) -> list[FileTypeResult]:
        """Content types of many files, batched through the model; one result per path, in order."""
        out: list[FileTypeResult | None] = []
        pending: list[tuple[int, str, Features]] = []  # (slot in `out`, path, features) of model inputs
        for p in paths:
            r = self._prepare(p)
            if isinstance(r, Features):
                pending.append((len(out), os.fspath(p), r))
                out.append(None)
            else:
                out.append(r)
        bs = self.config.batch_size
        for b in range(0, len(pending), bs):
            chunk = pending[b:b + bs]
            probs = self.model.probs(np.stack([feats.tokens for _, _, feats in chunk]))
            for (slot, path, _), pr in zip(chunk, probs):
                out[slot] = self._from_probs(path, pr)
        return out  # type: ignore[return-value]

    def model_labels(self) -> list[str]:
        """The labels the model can output (before fallbacks)."""
        return list(self.labels)

    # -- internals -------------------------------------------------------------------

    def _prepare(self, p: str | os.PathLike) -> FileTypeResult | Features:
        """A rule's result, or the features the model needs. Never raises for file problems."""
        path = os.fspath(p)
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if self.config.no_dereference:
                    return _typed(path, "symlink", 1.0, "rule")
                st = os.stat(path)  # follows; a loop or a dangling link raises OSError below
            if stat.S_ISDIR(st.st_mode):
                return _typed(path, "directory", 1.0, "rule")
            if not stat.S_ISREG(st.st_mode):  # FIFO, socket, device: never opened, never blocks
                return FileTypeResult(path, "not_regular_file", message=f"{path}: not a regular file "
                                      f"(mode {stat.filemode(st.st_mode)}); not opened")
            # O_NONBLOCK: if the path was swapped for a FIFO after stat, open still returns at once
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return FileTypeResult(path, "not_regular_file", message=f"{path}: not a regular file")
                head, tail = read_ends(fd, st.st_size, self.feature_config.block_size)
                if head[:4] in _ZIP_MAGIC:
                    label = _zip_rule(lambda off, n: os.pread(fd, n, off), st.st_size)
                    if label is not None:
                        return _typed(path, label, 1.0, "rule")
            finally:
                os.close(fd)
        except FileNotFoundError as e:
            return FileTypeResult(path, "not_found", message=f"{path}: {e.strerror or 'not found'}")
        except PermissionError as e:
            return FileTypeResult(path, "permission_denied", message=f"{path}: {e.strerror or 'permission denied'}")
        except OSError as e:  # symlink loop, I/O error, name too long, ...
            return FileTypeResult(path, "error", message=f"{path}: {e.strerror or e}")
        if not head and not tail:
            return _typed(path, "empty", 1.0, "rule")
        label = signature_label(head[:64])
        if label is not None:
            return _typed(path, label, 1.0, "rule")
        f = features_from_ends(head, tail, self.feature_config)
        rule = self._small_rule(path, f)
        return rule if rule is not None else f

    def _small_rule(self, path: str, f: Features) -> FileTypeResult | None:
        if f.stripped_size >= self.feature_config.min_size_for_model:
            return None
        if f.stripped_size == 0 and not f.head.strip():
            label = "txt"  # whitespace only
        else:
            try:
                f.head.decode("utf-8")
                label = "txt"
            except UnicodeDecodeError:
                label = "unknown"
        return _typed(path, label, 1.0, "rule")

    def _decide_one(self, path: str, f: Features) -> FileTypeResult:
        rule = self._small_rule(path, f)
        if rule is not None:
            return rule
        return self._from_probs(path, self.model.probs(f.tokens[None])[0])

    def _from_probs(self, path: str, pr: np.ndarray) -> FileTypeResult:
        i = int(pr.argmax())
        lab, score = self.labels[i], float(pr[i])
        mode = self.config.mode
        keep = (mode == "best-guess" or (mode == "medium-confidence" and score >= 0.5)
                or (mode == "high-confidence" and score >= self.thresholds[i]))
        if keep or lab in ("txt", "unknown"):
            return _typed(path, lab, score, "model", lab)
        fallback = "txt" if info(lab).is_text else "unknown"
        return _typed(path, fallback, score, "model", lab, "low_confidence")

