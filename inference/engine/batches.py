"""Minibatches for the engine: in-memory data stays whole on the device and is indexed there.

Under ``torchrun`` each rank takes its shard of every global batch (:func:`epoch_shards`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler, TensorDataset

from vi_models._validation import as_data_tensor
from vi_models.errors import ConfigError, DataError

__all__ = [
    "GaussianNoise",
    "LoaderBatches",
    "ShardedLoaderBatches",
    "TensorBatches",
    "as_tensors",
    "epoch_shards",
    "make_batches",
    "model_dtype",
]


def model_dtype(*modules: Any) -> torch.dtype:
    """Floating dtype of the first parameter found in ``modules`` (default dtype if none)."""
    for module in modules:
        if isinstance(module, nn.Module):
            for p in module.parameters():
                if p.is_floating_point():
                    return p.dtype
    return torch.get_default_dtype()


def as_tensors(
    data: Any, *, name: str, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...] | None:
    """Tensors of an in-memory dataset (validated, on ``device``); None for other datasets.

    Accepts a tensor or array ``(N, ...)``, a tuple/list of them (same N), a
    :class:`~torch.utils.data.TensorDataset`, or an object with a ``train`` tensor
    (a :class:`inference.data.DataBundle`).
    """
    if hasattr(data, "train") and isinstance(data.train, torch.Tensor):
        data = data.train
    if isinstance(data, TensorDataset):
        data = tuple(data.tensors)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return (as_data_tensor(data, name=name, dtype=dtype, device=device),)
    if isinstance(data, (tuple, list)) and data and all(
        isinstance(d, (torch.Tensor, np.ndarray)) for d in data
    ):
        tensors = tuple(
            as_data_tensor(d, name=f"{name}[{i}]", dtype=dtype, device=device, allow_integer=i > 0)
            for i, d in enumerate(data)
        )
        sizes = {t.shape[0] for t in tensors}
        if len(sizes) != 1:
            raise DataError(
                f"expected every tensor of {name} to have the same number of rows, got "
                f"{[t.shape[0] for t in tensors]}; align the inputs before fitting"
            )
        return tensors
    if isinstance(data, (tuple, list)):
        return (as_data_tensor(data, name=name, dtype=dtype, device=device),)
    if isinstance(data, (DataLoader, Dataset)):
        return None
    raise DataError(
        f"expected {name} as a tensor, numpy array, tuple of them, torch Dataset or DataLoader, "
        f"got {type(data).__name__}"
    )


class GaussianNoise:
    r"""Batch transform ``x -> x + std * eps``, eps ~ N(0, I) fresh for every batch: noise regularisation.

    Fitting a density to noisy copies of the training points fits ``p_hat * N(0, std^2 I)``,
    the empirical distribution smoothed by a Gaussian kernel, in place of ``p_hat`` itself
    (Rothfuss et al. 2019; Bishop 1995 for its equivalence to a smoothness penalty). A flexible
    density (a normalizing flow, MADE) fitted by maximum likelihood to ~10^4 points otherwise
    puts spikes on them: training log-likelihood climbs above the truth while held-out
    log-likelihood falls. The price is a bias of order ``std^2`` (the model's density is the
    smoothed one), so ``std`` should sit well below the data's own scale of detail; the
    cross-validated bandwidth of a kernel density estimate on the same data is a good upper bound.

    Pass it as ``inference.fit(..., batch_transform=GaussianNoise(std))``; ``std`` is in the
    data's units and may be a scalar or a tensor broadcasting over a batch row (one per
    coordinate). Validation and held-out data are left clean.

    Parameters
    ----------
    std
        Noise standard deviation, finite and ``>= 0`` (0 leaves the batch unchanged).

    Raises
    ------
    ConfigError
        ``std`` negative or not finite.

    Examples
    --------
    >>> jitter = GaussianNoise(0.05)
    >>> jitter(torch.zeros(3, 2)).shape
    torch.Size([3, 2])

    References
    ----------
    J. Rothfuss, F. Ferreira, S. Boehm, S. Walther, M. Ulrich, T. Asfour and A. Krause,
    "Noise Regularization for Conditional Density Estimation", arXiv:1907.08982 (2019).
    """

    def __init__(self, std: float | torch.Tensor) -> None:
        value = torch.as_tensor(std, dtype=torch.float64)
        if value.numel() == 0 or not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ConfigError(
                f"expected the noise std to be finite and >= 0, got {std!r}; "
                "0 turns the noise off, and a few hundredths of the data's scale is typical"
            )
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        if not bool((std > 0).any()):
            return x
        return x + std * torch.randn_like(x)

    def __repr__(self) -> str:
        return f"GaussianNoise({self.std!r})"


def epoch_shards(order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
    """This rank's indices of each step of an epoch whose (shuffled) order is ``order``.

    ``order`` is cut into global batches of ``g = world * batch_size`` consecutive positions
    (clipped to the data size); rank ``r`` takes the ``r``-th of ``world`` nearly equal parts of
    each (:func:`torch.tensor_split`, larger parts first), so every example of the epoch is seen
    once, by one rank, and the last, partial global batch is split with sizes that differ by at
    most one (a part may be empty). In one process this is ``order`` cut into batches.

    Examples
    --------
    >>> [s.tolist() for s in epoch_shards(torch.arange(7), 2, rank=1, world=2)]
    [[2, 3], [6]]
    """
    n = order.shape[0]
    step = min(world * batch_size, n)
    for start in range(0, n, step):
        chunk = order[start : start + step]
        yield chunk if world == 1 else torch.tensor_split(chunk, world)[rank]


def _steps(n: int, batch_size: int, world: int) -> int:
    return math.ceil(n / min(world * batch_size, n))


class TensorBatches:
    """Shuffled minibatches of in-memory tensors, indexed directly on their device.

    Under ``world > 1`` ranks, ``batch_size`` is per rank and each step yields this rank's shard
    of the global batch (:func:`epoch_shards`), or ``None`` when that shard is empty; every rank
    draws the same order from ``generator`` and takes the same number of steps.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        generator: torch.Generator | None,
        shuffle: bool = True,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.tensors = tensors
        self.n = tensors[0].shape[0]
        self.batch_size = min(batch_size, self.n)
        self.generator = generator
        self.shuffle = shuffle
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return _steps(self.n, self.batch_size, self.world)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...] | None]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).to(self.tensors[0].device)
        else:
            order = torch.arange(self.n, device=self.tensors[0].device)
        for idx in epoch_shards(order, self.batch_size, self.rank, self.world):
            yield tuple(t[idx] for t in self.tensors) if idx.numel() else None


class LoaderBatches:
    """Batches from a user DataLoader or Dataset, moved to the device."""

    def __init__(self, loader: DataLoader, device: torch.device, dtype: torch.dtype) -> None:
        self.loader = loader
        self.device = device
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...] | None]:
        for batch in self.loader:
            yield self._to_device(batch)

    def _to_device(self, batch: Any) -> tuple[torch.Tensor, ...]:
        parts = batch if isinstance(batch, (tuple, list)) else (batch,)
        return tuple(p.to(self.device, self.dtype) if p.is_floating_point() else p.to(self.device) for p in parts)


class _FixedBatchSampler(Sampler[list[int]]):
    """The index lists of one epoch, set before the loader is iterated."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ShardedLoaderBatches(LoaderBatches):
    """A Dataset's batches on ``world > 1`` ranks: this rank's shard of each global batch.

    The order is drawn from ``generator`` (the same on every rank) and cut by
    :func:`epoch_shards`; the dataset is read through a DataLoader with the given ``collate_fn``,
    ``num_workers`` and ``pin_memory``, and a step whose shard is empty yields ``None``.
    """

    def __init__(self, dataset: Dataset, n: int, *, batch_size: int, shuffle: bool, generator: torch.Generator,
                 rank: int, world: int, device: torch.device, dtype: torch.dtype, **loader_kwargs: Any) -> None:
        self.sampler = _FixedBatchSampler()
        super().__init__(DataLoader(dataset, batch_sampler=self.sampler, **loader_kwargs), device, dtype)
        self.n, self.batch_size, self.shuffle, self.generator = n, min(batch_size, n), shuffle, generator
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return _steps(self.n, self.batch_size, self.world)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...] | None]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        shards = [idx.tolist() for idx in epoch_shards(order, self.batch_size, self.rank, self.world)]
        self.sampler.batches = [s for s in shards if s]
        loaded = iter(self.loader)
        for shard in shards:
            yield self._to_device(next(loaded)) if shard else None


def _sharded_loader(data: Any, n: int, *, name: str, batch_size: int, shuffle: bool, **kwargs: Any) -> ShardedLoaderBatches:
    """A Dataset or a plain DataLoader re-read by :class:`ShardedLoaderBatches` (``world > 1``)."""
    if not isinstance(data, DataLoader):
        return ShardedLoaderBatches(data, n, batch_size=batch_size, shuffle=shuffle, **kwargs)
    if data.batch_size is None or not isinstance(data.sampler, (RandomSampler, SequentialSampler)):
        raise ConfigError(
            f"expected {name} as a DataLoader with batch_size and shuffle=True/False under torchrun (fit shards "
            f"it across ranks), got one with sampler {type(data.sampler).__name__} and batch_sampler "
            f"{type(data.batch_sampler).__name__}; pass its Dataset and batch_size=... to fit instead"
        )
    return ShardedLoaderBatches(
        data.dataset, n, batch_size=data.batch_size, shuffle=isinstance(data.sampler, RandomSampler),
        collate_fn=data.collate_fn, num_workers=data.num_workers, pin_memory=data.pin_memory, **kwargs,
    )


def make_batches(
    data: Any,
    *,
    name: str,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator,
    shuffle: bool,
    rank: int = 0,
    world: int = 1,
) -> tuple[TensorBatches | LoaderBatches, int]:
    """The batches of ``data`` and its size N; on ``world > 1`` ranks, this rank's shards (see :func:`epoch_shards`)."""
    tensors = as_tensors(data, name=name, device=device, dtype=dtype)
    if tensors is not None:
        return TensorBatches(tensors, batch_size, generator, shuffle, rank=rank, world=world), tensors[0].shape[0]
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        n = 0
    if n == 0:
        raise DataError(f"expected a non-empty {name}, got a dataset of length 0")
    if world > 1:
        return _sharded_loader(data, n, name=name, batch_size=batch_size, shuffle=shuffle, generator=generator,
                               rank=rank, world=world, device=device, dtype=dtype), n
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    return LoaderBatches(loader, device, dtype), n
