"""Sample-site and plate names shared by every model and guide of a data plate.

A model and its guide must name their sites alike; these names are defined once, here,
below every family (STYLE rule 3).
"""

from __future__ import annotations

from typing import Final

__all__ = ["DATA_PLATE", "LATENT", "OBSERVED"]

#: Name of the observation plate (dim -1), shared by the model and its guides.
DATA_PLATE: Final = "data"
#: Name of the latent sample site ``z``.
LATENT: Final = "z"
#: Name of the observed sample site ``x`` (the level ``k`` for the categorical likelihood).
OBSERVED: Final = "x"
