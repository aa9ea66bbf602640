"""Content-type detection from bytes: a small byte model we train ourselves, Magika-style.

    >>> from paretoml.filetype import Detector
    >>> Detector().identify_path("setup.py").label        # doctest: +SKIP
    'python'

`Detector` (rules + a numpy-only byte model shipped as package data), `FileTypeResult`
(one per input, with a status), `DetectorConfig`; training lives in
`paretoml.filetype.corpus` (build a labelled corpus offline) and `paretoml.filetype.train`.
Names are imported on first use so that ``paretoml.filetype.cli`` (the CLI) stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["Detector", "DetectorConfig", "FileTypeResult", "FeatureConfig", "ContentTypeInfo", "MODES", "MODELS"]

_WHERE = {"Detector": "detector", "DetectorConfig": "detector", "FileTypeResult": "detector", "MODES": "detector",
          "MODELS": "detector",
          "FeatureConfig": "features", "ContentTypeInfo": "labels"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"paretoml.filetype.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'paretoml.filetype' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
