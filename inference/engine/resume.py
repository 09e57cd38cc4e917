"""Resuming :func:`inference.fit`: the loop state a training checkpoint holds.

A checkpoint written by ``fit`` holds everything the loop needs to continue exactly where it
stopped, so that N epochs then M resumed ones give the N + M epochs of one run (bit for bit on
CPU with a seed):

- the model's and guide's weights and the free ``pyro.param`` tensors;
- the optimizer's and the LR scheduler's states;
- the history, the epoch reached, the best monitored loss so far, the epochs without
  improvement and (with early stopping) the best epoch's weights;
- the global RNG states and the shuffling generator's;
- the fingerprints of the model and guide, checked before anything is loaded.

:func:`training_state` builds that dictionary (for :func:`~.checkpoint.save_checkpoint`);
:func:`restore_training_state` loads it back into the modules and optimizer and returns the
loop's counters as a :class:`LoopProgress`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from pyro.infer import ELBO
from torch import nn

from .checkpoint import capture_rng_state, load_modules, restore_rng_state

__all__ = ["LoopProgress", "module_state", "restore_training_state", "training_state"]


class LoopProgress(NamedTuple):
    """Where a resumed loop stands: its counters, as :func:`restore_training_state` read them."""

    history: dict[str, list[float]]
    epoch: int
    best: tuple[float, int | None]  # (monitored loss, 1-based epoch)
    bad_epochs: int
    best_states: tuple[dict, dict] | None  # (model, guide) weights of the best epoch


def module_state(module: Any) -> dict[str, torch.Tensor]:
    """A detached copy of ``module``'s state dict (``{}`` for a function, which has none)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()} if isinstance(module, nn.Module) else {}


def training_state(
    epoch: int,
    *,
    model: Any,
    guide: Any,
    free: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    history: dict[str, list[float]],
    best: tuple[float, int | None],
    bad_epochs: int,
    best_states: tuple[dict, dict] | None,
    shuffle_rng: torch.Generator,
    fingerprints: dict[str, Any],
    loss: str | ELBO,
) -> dict[str, Any]:
    """The checkpoint of a loop that has completed ``epoch`` epochs (weights-only-loadable values)."""
    return {
        "epoch": epoch,
        "model": module_state(model),
        "guide": module_state(guide),
        "free_params": {k: v.detach().clone() for k, v in free.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None and hasattr(scheduler, "state_dict") else None,
        "history": history,
        "best_loss": best[0],
        "best_epoch": best[1],
        "bad_epochs": bad_epochs,
        "best_model": best_states[0] if best_states else None,
        "best_guide": best_states[1] if best_states else None,
        "rng": capture_rng_state(),
        "shuffle_rng": shuffle_rng.get_state(),
        "fingerprint": fingerprints,
        "config": {"loss": loss if isinstance(loss, str) else type(loss).__name__},
    }


def restore_training_state(
    path: Path,
    *,
    model: Any,
    guide: Any,
    free: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    shuffle_rng: torch.Generator,
    map_location: Any,
) -> LoopProgress:
    """Load the checkpoint at ``path`` into the modules, free parameters, optimizer, scheduler and RNGs.

    Raises
    ------
    CheckpointError
        The checkpoint is unsafe, damaged, or belongs to another model or guide.
    """
    state = load_modules(path, model, guide, map_location=map_location)
    for pname, value in state.get("free_params", {}).items():
        if pname in free:
            with torch.no_grad():
                free[pname].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    best_states = (state["best_model"], state["best_guide"]) if state.get("best_model") is not None else None
    restore_rng_state(state["rng"])
    shuffle_rng.set_state(state["shuffle_rng"])
    return LoopProgress(
        history={k: list(v) for k, v in state["history"].items()},
        epoch=int(state["epoch"]),
        best=(float(state["best_loss"]), state["best_epoch"]),
        bad_epochs=int(state["bad_epochs"]),
        best_states=best_states,
    )
