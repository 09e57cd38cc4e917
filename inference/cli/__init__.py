"""The ``vi-models`` command: ``fit``, ``evaluate``, ``sample``, ``diagnose``, ``compare``.

- :mod:`.parser`: the argument parser; :mod:`.commands`: the commands and :func:`main`;
- :mod:`.runs`: run directories;
- :mod:`.families`: one adapter per model family (how ``vi-models fit NAME`` builds and trains it).

Run it as ``vi-models ...`` or ``python -m inference.cli ...``.
"""

from .commands import main
from .parser import build_parser

__all__ = ["main", "build_parser"]
