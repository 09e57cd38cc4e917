"""Model families known to the command line: how to build, fit, evaluate and sample each.

A :class:`Family` (:mod:`.base`) turns the options of ``vi-models fit NAME`` into a model/guide
pair, fits it with the package's engine, and answers ``evaluate`` and ``sample`` for a run
directory, so every family writes the same ``metrics.json``. Each module below registers one
family with :func:`register` when it is imported; importing this package registers them all.
"""

from . import ddpm, flow, gan, gmm, kde, made, vae  # noqa: F401  (each registers its family)
from .base import FAMILIES, Family, get_family, metrics_from_log_likelihood, register, save_fitted

__all__ = ["Family", "register", "get_family", "FAMILIES", "metrics_from_log_likelihood", "save_fitted"]
