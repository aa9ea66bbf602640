"""Validation shared by the frozen config dataclasses (DESIGN §3: errors name the field)."""

from __future__ import annotations

from typing import Any, Iterable


def check_ints(obj: Any, names: Iterable[str], lo: int = 1, hi: int | None = None) -> None:
    """Raise `ValueError` naming ``Class.field`` unless each field is an int in [lo, hi].

    bool is rejected although it is an int subclass: ``depth=True`` is a mistake, not 1.
    """
    owner = type(obj).__name__
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ValueError(f"{owner}.{name} must be an int {allowed}, got {v!r}")
