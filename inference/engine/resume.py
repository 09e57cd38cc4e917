"""Resuming :func:`inference.fit`: the loop state a training checkpoint holds.

A checkpoint written by ``fit`` holds everything the loop needs to continue exactly where it
stopped, so that N epochs then M resumed ones give the N + M epochs of one run (bit for bit on
CPU with a seed):

- the model's and guide's weights and the free ``pyro.param`` tensors;
- the optimizer's and the LR scheduler's states;
- the history, the epoch reached, the best monitored loss so far, the epochs without
  improvement and (with early stopping) the best epoch's weights;
- the global RNG states and the shuffling generator's; under ``torchrun`` the number of ranks
  and every rank's RNG states (gathered by rank 0, which alone writes);
- the fingerprints of the model and guide, checked before anything is loaded.

A checkpoint written by W ranks resumes on W ranks only: another number of ranks would change
the global batch (``W * batch_size``) and the ranks' random streams, so it is refused with a
:class:`~vi_models.errors.ConfigError` that says how to restart.

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

from vi_models.errors import ConfigError

from .checkpoint import capture_rng_state, load_checkpoint, restore_modules, restore_rng_state

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
    rng_states: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The checkpoint of a loop that has completed ``epoch`` epochs (weights-only-loadable values).

    ``rng_states`` holds every rank's :func:`~.checkpoint.capture_rng_state`, in rank order
    (default: this process's alone, a run on one process).
    """
    rng_states = rng_states if rng_states is not None else [capture_rng_state()]
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
        "rng": rng_states[0],
        "world_size": len(rng_states),
        **({"rng_ranks": rng_states} if len(rng_states) > 1 else {}),
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
    rank: int = 0,
    world_size: int = 1,
) -> LoopProgress:
    """Load the checkpoint at ``path`` into the modules, free parameters, optimizer, scheduler and RNGs.

    ``rank`` restores its own RNG states, of a checkpoint written by ``world_size`` ranks.

    Raises
    ------
    CheckpointError
        The checkpoint is unsafe, damaged, or belongs to another model or guide.
    ConfigError
        The checkpoint was written by another number of ranks than ``world_size``.
    """
    state = load_checkpoint(path, map_location=map_location)
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        raise ConfigError(
            f"expected a checkpoint of a run on {world_size} rank(s), got one in {str(path)!r} written by {saved}: "
            f"restart it with torchrun --nproc_per_node={saved} (another number changes the global batch and the "
            "random streams), or start a fresh run without resume=True"
        )
    restore_modules(state, model, guide, path)
    for pname, value in state.get("free_params", {}).items():
        if pname in free:
            with torch.no_grad():
                free[pname].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    best_states = (state["best_model"], state["best_guide"]) if state.get("best_model") is not None else None
    restore_rng_state(state["rng_ranks"][rank] if world_size > 1 else state["rng"])
    shuffle_rng.set_state(state["shuffle_rng"])
    return LoopProgress(
        history={k: list(v) for k, v in state["history"].items()},
        epoch=int(state["epoch"]),
        best=(float(state["best_loss"]), state["best_epoch"]),
        bad_epochs=int(state["bad_epochs"]),
        best_states=best_states,
    )
