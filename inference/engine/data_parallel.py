"""One step of :func:`inference.fit`, on one process or on the W ranks ``torchrun`` starts.

``fit`` is the same loop on every rank; this module holds what makes W copies of it one
data-parallel fit (the exchanges themselves are :mod:`inference.engine.distributed`'s). With W
ranks, ``r`` this rank, ``B`` the ``batch_size`` (per rank, as in PyTorch's DDP), ``b_r`` the
rows of rank r's shard in a step and ``g = sum_r b_r`` the global batch:

- **Batches**: every rank draws the same permutation of the N examples each epoch (the shuffle
  generator is seeded by ``seed``; with ``seed=None`` rank 0 draws one and broadcasts it), cuts
  it into global batches of ``W * B`` positions and takes its part of each
  (:func:`~inference.engine.batches.epoch_shards`): each example is seen once per epoch, by one
  rank; the last global batch is split in parts that differ by at most one row. Every rank takes
  the same number of steps; a rank whose part is empty joins the collectives with loss 0 and
  zero gradients. Fewer examples than ranks is a :class:`~vi_models.errors.ConfigError`.
- **Gradients** are summed over ranks in buckets (one ``all_reduce`` per bucket; the step's
  figures ride in the first, so a small model's step costs one collective) after the backward
  pass and before clipping and the optimizer step, so every rank takes the same step
  and the parameters stay identical. A model that accepts ``full_size`` scales its data plate by
  ``N / b_r``; each rank's gradient is then weighted by ``b_r / g``, and the sum is the gradient
  of the one-process loss of the global batch (global latents get the same gradient in
  expectation; exactly with a deterministic guide). A model without ``full_size`` sums its
  batch: gradients are summed unweighted, which is exact when it has no global latent site (a
  global latent's terms would be counted once per rank: such a model should accept
  ``full_size``). A parameter that no rank's batch reaches keeps no gradient, as in one process.
- **Parameters** (and floating buffers) are broadcast from rank 0 after they are created and
  after a checkpoint is restored.
- **Random streams**: rank r runs ``pyro.set_rng_seed(seed + r)`` (its own, reproducible noise);
  the shuffle generator keeps ``seed``.
- **Figures** (each step's loss and observations, the epoch's totals, the validation loss, whose
  batches are sharded the same way) are summed over ranks, so every rank holds the same history
  (but for ``"time"``, its own clock) and takes the same decisions: early stopping, the best
  epoch, the scheduler's steps, a callback's stop (any rank's), the convergence verdict.
- **Errors**: after each step the ranks agree on whether any saw a non-finite loss; if one did,
  every rank raises :class:`~vi_models.errors.NonFiniteLossError` naming the epoch, the step,
  the rank(s) and their non-finite sites, so no rank is left waiting in a collective.
- **Files**: rank 0 alone writes checkpoints (atomically, with the number of ranks and every
  rank's RNG states) and shows the progress bar; every rank reads the checkpoint at a resume, so
  ``checkpoint_dir`` must be the same directory, seen by every rank. A checkpoint of W ranks
  resumes on W ranks only (see :mod:`inference.engine.resume`).

In one process every exchange is skipped and the step is the plain one, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import ELBO
from torch import Tensor, nn

from vi_models._validation import resolve_device
from vi_models.errors import ConfigError, NonFiniteLossError

from . import distributed
from ._params import nonfinite_sites
from .full_size import evaluate_loss, loss_totals

__all__ = ["Ranks", "SVIStep", "broadcast_state", "checkpoint_found", "join", "validation_loss"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world`` processes, computing on ``device``."""

    rank: int
    world: int
    device: torch.device

    @property
    def parallel(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1

    def check_examples(self, n: int) -> None:
        """Refuse fewer training examples than ranks (some rank would never see one)."""
        if n < self.world:
            raise ConfigError(
                f"expected at least one training example per rank, got {n} for {self.world} ranks; "
                f"start at most {n} process(es) (torchrun --nproc_per_node={n}) or give more data"
            )


def join(device: torch.device | str | None, seed: int | None) -> tuple[Ranks, int]:
    """Join ``torchrun``'s process group (if any), seed this rank's RNGs; ``(ranks, shuffle seed)``.

    ``device="cuda"`` means ``cuda:LOCAL_RANK`` under ``torchrun``.
    """
    dev = resolve_device(device)
    if distributed.init(dev):
        dev = distributed.rank_device(dev)
    ranks = Ranks(distributed.rank(), distributed.world_size(), dev)
    if seed is None and ranks.parallel:  # rank 0's draw; NumPy takes seeds below 2**32
        seed = distributed.broadcast_object(int(torch.randint(0, 2**32 - ranks.world, ()).item()))
    if seed is not None:
        pyro.set_rng_seed(seed + ranks.rank)
    return ranks, seed if seed is not None else int(torch.randint(0, 2**62, ()).item())


def broadcast_state(params: Sequence[Tensor], modules: Iterable[Any]) -> None:
    """Rank 0's parameters and floating buffers on every rank (nothing in one process)."""
    if not distributed.is_distributed():
        return
    buffers = [b for m in modules if isinstance(m, nn.Module) for b in m.buffers() if b.is_floating_point()]
    distributed.broadcast_tensors([*params, *buffers])


def checkpoint_found(path: Path, ranks: Ranks) -> bool:
    """Whether the checkpoint at ``path`` exists, agreed by every rank."""
    found = path.exists()
    if ranks.parallel and distributed.any_rank(found) and distributed.any_rank(not found):
        raise ConfigError(
            f"expected the checkpoint {str(path)!r} on every rank, but only some ranks find it; "
            "give every rank the same checkpoint_dir on a filesystem they all see"
        )
    return found


def validation_loss(elbo: ELBO, model: Callable, guide: Callable, batches: Iterable, *,
                    full_size: int | None, ranks: Ranks) -> float:
    """Mean -ELBO per observation of the validation batches, summed over every rank's shards."""
    if not ranks.parallel:
        return evaluate_loss(elbo, model, guide, batches, full_size=full_size)
    totals = torch.tensor(loss_totals(elbo, model, guide, batches, full_size=full_size),
                          dtype=torch.float64, device=ranks.device)
    distributed.all_reduce_sum(totals)
    return float(totals[0] / totals[1])


class SVIStep:
    """One optimisation step of ``fit``: this rank's loss and gradients, the ranks' agreement, the step.

    Parameters
    ----------
    elbo, optimizer, params
        The loss, the optimizer and every trainable tensor (the gradients summed over ranks).
    ranks
        This process's :class:`Ranks`.
    full_size
        N when the model takes ``full_size`` (its loss is N / b times its batch's), else ``None``.
    clip_norm, batch_transform
        As :func:`inference.fit`'s.
    checkpoint
        The checkpoint path (named in errors when it exists), or ``None``.
    """

    def __init__(self, elbo: ELBO, optimizer: torch.optim.Optimizer, params: Sequence[Tensor], *, ranks: Ranks,
                 full_size: int | None, clip_norm: float | None, batch_transform: Callable | None,
                 checkpoint: Path | None) -> None:
        self.elbo, self.optimizer, self.params = elbo, optimizer, list(params)
        self.ranks, self.full, self.clip_norm = ranks, full_size, clip_norm
        self.batch_transform, self.checkpoint = batch_transform, checkpoint

    def __call__(self, model: Callable, guide: Callable, batch: tuple[Tensor, ...] | None,
                 epoch: int, step: int) -> tuple[float, float, int]:
        """Take the step of ``batch`` (``None``: an empty shard); ``(step loss, epoch-total part, observations)``.

        The three figures are the global batch's, the same on every rank: the -ELBO per
        observation, its part of the epoch's sum (rescaled to the batch when the model is scaled
        by ``full_size``) and the number of observations.
        """
        if batch is not None and self.batch_transform is not None:
            batch = (self.batch_transform(batch[0]), *batch[1:])
        n = batch[0].shape[0] if batch is not None else 0
        value, cause = 0.0, None
        if batch is not None:
            try:
                value = self.elbo.loss_and_grads(model, guide, *batch)
            except ValueError as exc:  # distribution validation caught a NaN parameter first
                if "invalid values" not in str(exc):
                    raise
                value, cause = float("nan"), exc
        # A full-size-scaled loss is (N / b) times the batch's sum: rescale to the batch.
        part = value if self.full is None else value * n / self.full
        if not self.ranks.parallel:
            if not math.isfinite(value):
                self._raise_nonfinite([(0, value, self._sites(model, guide, batch))], epoch, step, cause)
            self._clip_and_step(epoch, step)
            return value / (self.full if self.full is not None else n), part, n
        # The step's figures travel with the first gradient bucket: one collective for both. A
        # full-size model's gradient is weighted by b_r / g: times b_r before the sum, / g after.
        first = self.params[0]
        figures = torch.tensor([part, n, not math.isfinite(value), *(p.grad is not None for p in self.params)],
                               dtype=first.dtype, device=first.device)
        distributed.all_reduce_gradients(self.params, scale=n if self.full is not None else 1.0, extra=figures)
        total, count = float(figures[0]), round(float(figures[1]))
        if figures[2] > 0:
            bad = None if math.isfinite(value) else (self.ranks.rank, value, self._sites(model, guide, batch))
            reports = [r for r in distributed.all_gather_objects(bad) if r is not None]
            self._raise_nonfinite(reports, epoch, step, cause)
        if self.full is not None:
            torch._foreach_div_([p.grad for p in self.params], count)
        for p, reached in zip(self.params, figures[3:].tolist()):
            if not reached:  # no rank's batch reaches it: no gradient, as in one process
                p.grad = None
        self._clip_and_step(epoch, step)
        return total / count, total, count

    @staticmethod
    def _sites(model: Callable, guide: Callable, batch: tuple[Tensor, ...] | None) -> list[str]:
        with pyro.validation_enabled(False):
            return nonfinite_sites(model, guide, batch)

    def _raise_nonfinite(self, reports: list[tuple[int, float, list[str]]], epoch: int, step: int,
                         cause: Exception | None) -> None:
        """Raise the error of a non-finite loss; ``reports`` are ``(rank, loss, sites)`` of the ranks that saw one."""
        def sites(names: list[str]) -> str:
            return ", ".join(names) or "none found on a fresh trace"

        if self.ranks.parallel:
            value = ", ".join(f"{v} on rank {r}" for r, v, _ in reports)
            where = "; ".join(f"rank {r}: {sites(s)}" for r, _, s in reports)
        else:
            value, where = str(reports[0][1]), sites(reports[0][2])
        intact = self.checkpoint is not None and self.checkpoint.exists()
        raise NonFiniteLossError(
            f"the loss became {value} at epoch {epoch + 1}, step {step + 1}; non-finite log-densities at: "
            f"{where}. Lower lr, set clip_norm=..., or check the data for extreme values"
            + (f"; the checkpoint of epoch {epoch} in {str(self.checkpoint.parent)!r} is intact" if intact else "")
        ) from cause

    def _clip_and_step(self, epoch: int, step: int) -> None:
        if self.clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            if not bool(torch.isfinite(norm)):
                raise NonFiniteLossError(
                    f"the gradient norm became {float(norm)} at epoch {epoch + 1}, step {step + 1}; "
                    "lower lr or check the model's parameterisation"
                )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
