"""Data parallelism on PyTorch's own engine: ``torch.distributed`` under ``torchrun``.

``torchrun --nproc_per_node=W script.py`` starts W processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` reads them and joins the
process group (``gloo`` on CPU, ``nccl`` on GPUs), once, and leaves it when the script exits.
:func:`inference.fit`,
:func:`inference.fit_em` and :func:`inference.fit_diffusion` call it themselves, so a script
launched by ``torchrun`` is data-parallel with no change. In one process (no ``torchrun``, or
``WORLD_SIZE=1``) every helper here is the identity and nothing is imported from
``torch.distributed``'s process-group machinery.

What is exchanged, and how (no home-made collective: every exchange is one of
``torch.distributed``'s):

- parameters: broadcast from rank 0 at the start of a fit and after a resume (:func:`broadcast_tensors`);
- gradients: summed across ranks after each step, flattened into buckets of about
  ``bucket_mb`` megabytes, one ``all_reduce`` per bucket (:func:`all_reduce_gradients`);
- figures (losses, counts, sufficient statistics): :func:`all_reduce_sum`;
- decisions that must agree (a non-finite loss on any rank): :func:`any_rank`;
- small Python objects (an error message, RNG states): :func:`all_gather_objects`, :func:`broadcast_object`.

The rules of a data-parallel :func:`inference.fit`, in short (in full:
:mod:`inference.engine.data_parallel`): ``batch_size`` is per rank; each rank takes a disjoint
shard of every global batch of the epoch's common permutation; gradients are summed, weighted
by ``b_r / g`` when the model takes ``full_size``, so that they equal the one-process gradient of
the global batch; rank r's random streams are seeded with ``seed + r``; figures and decisions are
reduced so every rank stops at the same epoch; rank 0 alone writes; a checkpoint of W ranks
resumes on W ranks only.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from vi_models._validation import resolve_device
from vi_models.errors import ConfigError

__all__ = [
    "DEFAULT_BUCKET_MB",
    "all_gather_objects",
    "all_reduce_gradients",
    "all_reduce_sum",
    "any_rank",
    "barrier",
    "broadcast_object",
    "broadcast_tensors",
    "init",
    "is_distributed",
    "is_main_process",
    "local_rank",
    "rank",
    "rank_device",
    "requested_world_size",
    "shard_sizes",
    "world_size",
]

#: Size of one gradient bucket (PyTorch's DistributedDataParallel uses 25 MB too).
DEFAULT_BUCKET_MB = 25.0


def requested_world_size() -> int:
    """``WORLD_SIZE`` as ``torchrun`` set it (1 outside ``torchrun``), before any process group exists."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"expected WORLD_SIZE to be a whole number (torchrun sets it), got "
                          f"{os.environ['WORLD_SIZE']!r}") from None


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in one process)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 in one process)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 in one process)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() or requested_world_size() > 1 else 0


def is_main_process() -> bool:
    """Whether this process writes files (rank 0)."""
    return rank() == 0


def rank_device(device: torch.device | str | None) -> torch.device:
    """The device of this rank: ``cuda`` means ``cuda:LOCAL_RANK`` under ``torchrun``.

    Raises
    ------
    ConfigError
        A CUDA device on a machine without CUDA, or fewer GPUs than local ranks.
    """
    dev = resolve_device(device)  # an unknown spec, or CUDA on a machine without it: ConfigError
    if dev.type != "cuda":
        return dev
    if requested_world_size() > 1 and dev.index is None:
        index = local_rank()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"expected a GPU per local rank, but rank {index} finds only "
                              f"{torch.cuda.device_count()} GPU(s); start fewer processes per node")
        dev = torch.device("cuda", index)
    return dev


def init(device: torch.device | str | None = None, *, backend: str | None = None) -> bool:
    """Join the process group ``torchrun`` describes in the environment, once; ``True`` when distributed.

    Parameters
    ----------
    device
        The device this rank computes on: ``nccl`` is the default backend for CUDA, ``gloo`` otherwise.
    backend
        Override the backend.

    Returns
    -------
    bool
        Whether more than one process takes part (``False`` outside ``torchrun``).

    Examples
    --------
    >>> init()  # one process: nothing to join
    False
    """
    if is_distributed():
        return True
    if requested_world_size() <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} unset: start the "
                          "processes with torchrun (torchrun --nproc_per_node=2 script.py), which sets them all")
    dev = rank_device(device)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    torch.distributed.init_process_group(backend=backend)
    atexit.register(_leave_process_group)
    return True


#: Seconds the main thread lets go of the GIL at exit (see :func:`_leave_process_group`).
_EXIT_GRACE_S = 0.1


def _leave_process_group() -> None:
    """At exit, while the interpreter is still alive: let gloo's worker threads finish, leave the group.

    A gloo worker thread releases a finished collective's tensors after the caller has moved on,
    and needs the GIL to do so; if the interpreter is already finalising, that thread is stopped
    and the process aborts ("terminate called without an active exception", pytorch/pytorch
    #190489; about one run in three of a short script here). Sleeping hands the GIL over.
    """
    if torch.distributed.is_initialized():
        time.sleep(_EXIT_GRACE_S)
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        torch.distributed.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks, in place, and return it (unchanged in one process)."""
    if is_distributed():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, *, device: torch.device | None = None) -> bool:
    """Whether ``flag`` is true on any rank: one collective every rank must reach."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device or _collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def _collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def _buckets(tensors: Sequence[Tensor], bucket_mb: float) -> Iterable[list[Tensor]]:
    """Consecutive groups of tensors of one dtype and device, each at most ``bucket_mb`` (one tensor may exceed it)."""
    limit = bucket_mb * 2**20
    bucket: list[Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (size + t.numel() * t.element_size() > limit or t.dtype != bucket[0].dtype
                       or t.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def all_reduce_gradients(params: Sequence[Tensor], *, bucket_mb: float = DEFAULT_BUCKET_MB,
                         scale: float = 1.0, extra: Tensor | None = None) -> None:
    """Sum the gradients of ``params`` over ranks, in buckets: one ``all_reduce`` per bucket.

    A parameter without a gradient on this rank (``grad is None``: its batch was empty, or the
    parameter took no part) contributes zeros, so every rank issues the same collectives.
    ``scale`` multiplies this rank's gradients before the sum (its shard's weight, see
    :mod:`inference.engine.data_parallel`). ``extra``, a 1-D tensor of figures (a loss, a count),
    is summed in place in the same collective as the first bucket of its dtype and device (in
    one of its own if there is none): a step's figures cost no collective of their own.
    """
    if not is_distributed():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in params], bucket_mb):
        carry = extra is not None and extra.dtype == bucket[0].dtype and extra.device == bucket[0].device
        flat = torch.cat([g.reshape(-1) for g in bucket] + ([extra] if carry else []))
        size = flat.numel() - (extra.numel() if carry else 0)
        if scale != 1.0:
            flat[:size].mul_(scale)
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
        if carry:
            extra.copy_(flat[size:])
            extra = None
    if extra is not None:
        all_reduce_sum(extra)


def broadcast_tensors(tensors: Sequence[Tensor], *, src: int = 0, bucket_mb: float = DEFAULT_BUCKET_MB) -> None:
    """Overwrite ``tensors`` on every rank with rank ``src``'s values, in buckets."""
    if not is_distributed():
        return
    with torch.no_grad():
        for bucket in _buckets(list(tensors), bucket_mb):
            flat = torch.cat([t.detach().reshape(-1) for t in bucket])
            torch.distributed.broadcast(flat, src=src)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset: offset + t.numel()].view_as(t))
                offset += t.numel()


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable; small)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def shard_sizes(n: int, parts: int) -> list[int]:
    """Sizes of ``parts`` consecutive shards of ``n`` items, as equal as possible (larger first).

    Examples
    --------
    >>> shard_sizes(7, 3)
    [3, 2, 2]
    """
    base, extra = divmod(n, parts)
    return [base + (1 if r < extra else 0) for r in range(parts)]
