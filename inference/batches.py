"""Minibatches for the engine: in-memory data stays whole on the device and is indexed there."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ._checks import as_data_tensor
from .errors import DataError

__all__ = ["as_tensors", "make_batches", "model_dtype", "TensorBatches", "LoaderBatches"]


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
    if hasattr(data, "train") and isinstance(getattr(data, "train"), torch.Tensor):
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


class TensorBatches:
    """Shuffled minibatches of in-memory tensors, indexed directly on their device."""

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        generator: torch.Generator | None,
        shuffle: bool = True,
    ) -> None:
        self.tensors = tensors
        self.n = tensors[0].shape[0]
        self.batch_size = min(batch_size, self.n)
        self.generator = generator
        self.shuffle = shuffle

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).to(self.tensors[0].device)
        else:
            order = torch.arange(self.n, device=self.tensors[0].device)
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


class LoaderBatches:
    """Batches from a user DataLoader or Dataset, moved to the device."""

    def __init__(self, loader: DataLoader, device: torch.device, dtype: torch.dtype) -> None:
        self.loader = loader
        self.device = device
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in self.loader:
            parts = batch if isinstance(batch, (tuple, list)) else (batch,)
            yield tuple(
                p.to(self.device, self.dtype) if p.is_floating_point() else p.to(self.device)
                for p in parts
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
) -> tuple[TensorBatches | LoaderBatches, int]:
    tensors = as_tensors(data, name=name, device=device, dtype=dtype)
    if tensors is not None:
        return TensorBatches(tensors, batch_size, generator, shuffle), tensors[0].shape[0]
    if isinstance(data, DataLoader):
        loader = data
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
    try:
        n = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        n = 0
    if n == 0:
        raise DataError(f"expected a non-empty {name}, got a dataset of length 0")
    return LoaderBatches(loader, device, dtype), n
