"""Exceptions and warnings raised by vi-models.

Every user-facing error says what was expected, what was given, and how to fix it.
The classes subclass the built-in exception a Python user would catch for that
situation (``ValueError`` for bad input, ``FloatingPointError`` for a non-finite loss),
so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "VIModelsError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "RunDirectoryError",
    "NonFiniteLossError",
    "ConvergenceWarning",
    "DegenerateFitWarning",
]


class VIModelsError(Exception):
    """Base class of every error raised on purpose by vi-models."""


class DataError(VIModelsError, ValueError):
    """Data of the wrong shape, dtype or values (NaN/inf, empty, unknown name)."""


class ConfigError(VIModelsError, ValueError):
    """An argument outside its allowed values (unknown loss name, batch size < 1, ...)."""


class CheckpointError(VIModelsError, RuntimeError):
    """A checkpoint that cannot be loaded safely or does not belong to this model."""


class RunDirectoryError(VIModelsError, FileNotFoundError):
    """A path given as a run directory that is not one."""


class NonFiniteLossError(VIModelsError, FloatingPointError):
    """The training loss or a gradient became NaN or infinite."""


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped before meeting its convergence criterion."""


class DegenerateFitWarning(UserWarning):
    """A fit reached a degenerate state (identical components, a collapsing variance, ...)."""
