"""The ``vi-models`` command: ``fit``, ``evaluate``, ``sample``, ``diagnose``, ``compare``.

- :mod:`.commands`: the argument parser and the commands; :mod:`.runs`: run directories;
- :mod:`.families`: one adapter per model family (how ``vi-models fit NAME`` builds and trains it).

Run it as ``vi-models ...`` or ``python -m inference.cli ...``.
"""

from .commands import build_parser, main

__all__ = ["main", "build_parser"]
