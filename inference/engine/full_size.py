"""The ``full_size`` keyword: models and guides that scale their observation plate to the data.

A model or guide that accepts a ``full_size`` keyword receives the number of training
observations N, so that its plate ``pyro.plate("data", size=full_size, subsample=...)`` scales a
minibatch of B observations by N / B and gives unbiased minibatch gradients when the model also
has global latent variables. An :class:`~pyro.infer.autoguide.AutoGuide` takes the keyword too
(it passes its arguments on to the model it was built from).

Such a model's loss is N / B times the batch's: :func:`evaluate_loss` (the validation -ELBO of
:func:`inference.fit`) rescales it back to a mean per observation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from pyro.infer import ELBO
from pyro.infer.autoguide import AutoGuide
from torch import nn

__all__ = ["accepts_full_size", "bind_full_size", "evaluate_loss", "guide_accepts_full_size", "loss_totals"]


def accepts_full_size(fn: Any) -> bool:
    """Whether ``fn`` (or an ``nn.Module``'s ``forward``) has a ``full_size`` parameter."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "full_size" in params


def guide_accepts_full_size(guide: Any) -> bool:
    """:func:`accepts_full_size` for a guide: an autoguide always passes the keyword on."""
    return accepts_full_size(guide) or isinstance(guide, AutoGuide)


def bind_full_size(fn: Callable | None, full_size: int | None) -> Callable | None:
    """``fn`` called with ``full_size=full_size`` (``fn`` itself when either is None)."""
    if fn is None or full_size is None:
        return fn

    def bound(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, full_size=full_size, **kwargs)

    return bound


def loss_totals(
    elbo: ELBO, model: Callable, guide: Callable, batches: Iterable, *, full_size: int | None = None
) -> tuple[float, int]:
    """Summed -ELBO (rescaled to the batches' own observations) and the number of observations.

    ``None`` batches (an empty shard of a rank, see :func:`inference.engine.batches.epoch_shards`)
    count nothing.
    """
    eval_model = bind_full_size(model, full_size)
    eval_guide = bind_full_size(guide, full_size if guide_accepts_full_size(guide) else None)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            if batch is None:
                continue
            value = elbo.loss(eval_model, eval_guide, *batch)
            n = batch[0].shape[0]
            total += value * (n / full_size if full_size else 1.0)
            count += n
    return total, count


def evaluate_loss(
    elbo: ELBO, model: Callable, guide: Callable, batches: Iterable, *, full_size: int | None = None
) -> float:
    """Mean -ELBO per observation over ``batches`` (no gradients, beta = 1)."""
    total, count = loss_totals(elbo, model, guide, batches, full_size=full_size)
    return total / count
