"""Exceptions raised at paretoml's public boundary.

Wrong kinds raise `TypeError` and wrong values `ValueError` (both built in); the two classes
here cover what those do not.
"""


class ParetomlError(RuntimeError):
    """The environment cannot do what was asked: a missing optional dependency, no GPU, an
    unreadable file. The message names the fix (for example the ``pip install`` to run)."""


class NotFittedError(ParetomlError, ValueError):
    """A learned object was used before it learned anything (search before train)."""


def require(module: str, extra: str, feature: str):
    """Import an optional dependency or raise a `ParetomlError` naming the extra to install.

    Args:
        module: import name, e.g. ``"faiss"``.
        extra: the paretoml extra that provides it, e.g. ``"peers"``.
        feature: what needs it, for the message.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ParetomlError(
            f"{feature} needs the optional dependency '{module}', which is not installed "
            f"({e}). Install it with: pip install 'paretoml[{extra}]'"
        ) from e
