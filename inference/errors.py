"""The package's error and warning types, defined in :mod:`vi_models.errors` below every layer.

Kept so that ``from inference.errors import DataError`` (0.1) still works; the types are the
same objects as ``vi_models.errors.DataError`` and ``inference.DataError``.
"""

from vi_models.errors import *  # noqa: F403
from vi_models.errors import __all__  # noqa: F401
