"""The registry of command-line model families and the base class each one subclasses.

A :class:`Family` turns the options of ``vi-models fit NAME`` into a model/guide pair,
fits it with the package's engine, and answers ``evaluate`` and ``sample`` for a run
directory, so every family writes the same ``metrics.json``. New families register
themselves with :func:`register`.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from vi_models.errors import ConfigError

__all__ = ["Family", "register", "get_family", "FAMILIES", "metrics_from_log_likelihood", "save_fitted"]

FAMILIES: dict[str, "Family"] = {}


class Family:
    """Base class of a command-line model family.

    Subclasses set ``name`` and ``help`` and implement :meth:`build`, :meth:`train`,
    :meth:`log_likelihood` and :meth:`sample`; the rest has sensible defaults.
    """

    name: str = ""
    help: str = ""
    #: The estimator written to metrics.json ("iwae", "exact", "vlb", "ode", ...).
    estimator: str = "exact"
    #: Whether ``torchrun`` may fit it on several processes (its training goes through the
    #: data-parallel engine); if not, ``distributed_reason`` says why.
    distributed: bool = True
    distributed_reason: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Family-specific options of ``vi-models fit NAME``."""

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        """The JSON-able model configuration stored in config.json."""
        return {}

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        """A fresh (model, guide) for ``config`` and the data ``bundle``."""
        raise NotImplementedError

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        """Fit the pair on ``bundle.train``; returns the history of per-epoch losses."""
        raise NotImplementedError

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int) -> torch.Tensor:
        """Per-observation log p(x) (nats), shape ``(N,)``."""
        raise NotImplementedError

    def is_discrete(self, model: Any) -> bool:
        """Whether the model's likelihood is over the discrete levels (exact bits/dim)."""
        return bool(getattr(model, "is_discrete", False))

    def extra_metrics(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                      *, num_samples: int) -> dict[str, Any]:
        """Additional held-out figures (an ELBO, a gap, ...)."""
        return {}

    def sample(self, model: Any, guide: Any, n: int, config: dict[str, Any], **options: Any) -> torch.Tensor:
        """``n`` samples ``(n, *data_shape)`` on the data's scale."""
        raise NotImplementedError

    def figures(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any]) -> dict[str, Any]:
        """Extra figures for the run directory (name -> matplotlib Figure)."""
        return {}

    def load_state(self, model: Any, guide: Any, path: Any, device: torch.device) -> None:
        """Load a run's checkpoint into freshly built modules (shapes must match)."""
        from inference.engine.checkpoint import load_modules

        load_modules(path, model, guide, map_location=device)


def save_fitted(run: Any, model: Any, guide: Any = None, *, history: dict[str, list[float]] | None = None) -> None:
    """Checkpoint of a family fitted in closed form (EM, KDE): the modules and their fingerprints.

    It has the layout of :func:`inference.fit`'s checkpoints, so ``evaluate`` and ``sample``
    read both alike.
    """
    from inference.engine.checkpoint import fingerprint, save_checkpoint

    if not getattr(run, "writable", True):
        return  # under torchrun rank 0 writes; the fit is the same on every rank

    def state(module: Any) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()} if hasattr(module, "state_dict") else {}

    save_checkpoint(
        run.checkpoint_path,
        {
            "epoch": len((history or {}).get("loss", [])),
            "model": state(model),
            "guide": state(guide),
            "history": history or {},
            "fingerprint": {"model": fingerprint(model), "guide": fingerprint(guide)},
        },
    )


def register(family: Family) -> Family:
    """Add ``family`` to the registry under ``family.name``."""
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family called ``name``.

    Raises:
        ConfigError: no such family (the message lists the known ones).
    """
    if name not in FAMILIES:
        raise ConfigError(f"expected a model name among {', '.join(sorted(FAMILIES))}, got {name!r}")
    return FAMILIES[name]


def metrics_from_log_likelihood(ll: torch.Tensor, bundle: Any, *, discrete: bool, estimator: str,
                                num_samples: int | None) -> dict[str, Any]:
    """The common metrics.json fields from per-observation log-likelihoods (nats)."""
    mean = float(ll.mean())
    sem = float(ll.std() / len(ll) ** 0.5) if len(ll) > 1 else 0.0
    return {
        "test_log_likelihood": mean,
        "test_log_likelihood_sem": sem,
        "test_nll": -mean,
        "test_bits_per_dim": float(bundle.bits_per_dim(mean, discrete=discrete)),
        "estimator": estimator,
        "num_samples": num_samples,
        "num_test": int(ll.shape[0]),
    }
