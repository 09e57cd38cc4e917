"""``python -m inference.cli ...`` runs the ``vi-models`` command (as ``torchrun -m`` needs)."""

import sys

from .commands import main

sys.exit(main())
