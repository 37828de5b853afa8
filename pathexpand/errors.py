"""One root error for everything pathexpand refuses, so callers catch one thing.

Every subclass is also a ``ValueError`` (bad input), like einops' ``EinopsError``.
Messages say what was passed and what would have been valid.
"""

from __future__ import annotations

__all__ = [
    "check_int",
    "check_number",
    "PathexpandError",
    "UnknownHeadError",
    "ShapeError",
    "UnsupportedArchitecture",
    "WeightsFileError",
    "MissingDependencyError",
]


class PathexpandError(ValueError):
    """Root of every error pathexpand raises on bad input."""


class UnknownHeadError(PathexpandError, KeyError):
    """A head, MLP or node name that is not in this model: ``'L7H0' is not in ...``."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ShapeError(PathexpandError):
    """An array whose shape is not the one the conventions require (says expected vs got)."""


class UnsupportedArchitecture(PathexpandError):
    """A model feature pathexpand cannot expand (rotary, GQA, parallel attention, ...)."""


class WeightsFileError(PathexpandError):
    """A file that is not weights, is truncated, or is a pickle (refused, never unpickled)."""


class MissingDependencyError(PathexpandError, ImportError):
    """An optional package is missing; the message names the extra to install."""


def check_int(name: str, value, low: int = 0) -> int:
    """``value`` if it is an int (numpy ints too, bools not) ``>= low``, else a clear error."""
    from numbers import Integral

    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        kind = " (a positive int)" if low == 1 else ""
        raise PathexpandError(f"{name} must be an int >= {low}{kind}, got {value!r}")
    return int(value)


def check_number(name: str, value, *, positive: bool = True):
    """``value`` as a float if it is a finite real number (``> 0`` when ``positive``), bools
    refused; else a ``PathexpandError`` saying what was expected."""
    from numbers import Real
    import math

    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        want = "a finite number > 0" if positive else "a finite number"
        raise PathexpandError(f"{name} must be {want}, got {value!r}")
    return float(value)


def require(module: str, extra: str, feature: str):
    """Import an optional module or raise ``MissingDependencyError`` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in tests
        raise MissingDependencyError(
            f"{feature} needs the '{module}' package: pip install 'pathexpand[{extra}]'"
        ) from exc
