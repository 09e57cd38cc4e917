"""The package's error and warning types (defined in :mod:`vi_models.errors`, below every layer)."""

from vi_models.errors import (
    CheckpointError,
    ConfigError,
    ConvergenceWarning,
    DataError,
    DegenerateFitWarning,
    NonFiniteLossError,
    RunDirectoryError,
    VIModelsError,
)

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
