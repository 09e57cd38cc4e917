"""Where :func:`~inference.em.loop.fit_em` reads its rows: one tensor, a memory-mapped file, or chunks.

A :class:`RowSource` hands out the ``(N, D)`` data as consecutive chunks in the model's dtype
and on its device, so that EM's E-step and sufficient statistics hold one chunk at a time
(:mod:`.statistics`). :func:`as_source` accepts

- a tensor, an in-memory array or a :class:`~inference.data.DataBundle` (its ``train``): one
  chunk (``chunk_size=None``, fit_em's in-memory path) or views of ``chunk_size`` rows;
- a memory-mapped ``.npy`` (``np.load(path, mmap_mode="r")``) or another array read lazily by
  row slices (anything but a tensor, ndarray, list or tuple that has a 2-D ``shape`` and
  ``[a:b]``, e.g. an ``h5py`` or ``zarr`` dataset): ``chunk_size`` rows at a time (default
  :data:`DEFAULT_CHUNK_SIZE`), each converted as it is read; the whole array is never loaded;
- a list or tuple of ``(n_i, D)`` chunks, a re-iterable object (each ``iter()`` starts over) or a
  callable returning an iterable of chunks: the chunks as given, split to at most
  ``chunk_size`` rows. Their row counts come from their shapes (a list or tuple) or from one
  counting pass (any other iterable). A one-shot iterator or generator is refused: EM reads the
  data once per iteration.

Rows are numbered ``0..N-1`` in reading order. :meth:`RowSource.shard` is one rank's
contiguous block of them (sizes by :func:`inference.engine.distributed.shard_sizes`), and
:meth:`RowSource.rows` reads given rows (the initialisation sample) in one pass. Every chunk is
checked as it is converted: two dimensions, the model's width, finite values.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from inference.engine.batches import model_dtype
from inference.engine.distributed import shard_sizes
from vi_models._validation import as_data_tensor
from vi_models.errors import ConfigError, DataError
from vi_models.mixtures.chunks import check_rows

__all__ = ["DEFAULT_CHUNK_SIZE", "SAMPLE_BLOCK", "RowSource", "as_model_data", "as_source", "is_streamed",
           "model_device", "sample_rows"]

#: Rows per chunk of a memory-mapped array when ``chunk_size`` is not given.
DEFAULT_CHUNK_SIZE = 100_000
#: Rows per block of the initialisation sample's draw (:func:`sample_rows`).
SAMPLE_BLOCK = 65_536
#: ``label(a, b)``: how messages name the data's rows ``[a, b)`` of a piece.
Label = Callable[[int, int], str]


def model_device(model: Any) -> torch.device:
    """Device of the model's first parameter (CPU if it has none)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def as_model_data(data: Any, model: Any, name: str = "data", device: torch.device | None = None,
                  dtype: torch.dtype | None = None) -> Tensor:
    """In-memory data as a validated ``(N, n_features)`` tensor in the model's dtype, on its device."""
    if hasattr(data, "train") and isinstance(data.train, Tensor):
        data = data.train
    x = as_data_tensor(data, name=name, dtype=dtype or model_dtype(model), device=device or model_device(model))
    n_features = getattr(model, "n_features", None)
    if n_features is not None and (x.dim() != 2 or x.shape[1] != n_features):
        fix = (f"reshape it with {name}.reshape(-1, {n_features})" if x.numel() % n_features == 0
               else "build the model with n_features equal to the data's number of columns")
        raise DataError(f"expected {name} of shape (n_samples, {n_features}), got {tuple(x.shape)}; {fix}")
    return x


def _is_lazy_array(data: Any) -> bool:
    if isinstance(data, np.memmap):
        return True
    if isinstance(data, (Tensor, np.ndarray, list, tuple, str, bytes)):
        return False
    shape = getattr(data, "shape", None)
    return isinstance(shape, tuple) and len(shape) == 2 and hasattr(data, "__getitem__")


def _is_chunk_list(data: Any) -> bool:
    return isinstance(data, (list, tuple)) and len(data) > 0 and np.ndim(data[0]) == 2


def is_streamed(data: Any) -> bool:
    """Whether ``data`` is read chunk by chunk whatever ``chunk_size`` (a memmap, chunks, an iterable)."""
    if hasattr(data, "train") and isinstance(data.train, Tensor):
        return False
    if isinstance(data, (Tensor, np.ndarray)) and not isinstance(data, np.memmap):
        return False
    return _is_lazy_array(data) or _is_chunk_list(data) or callable(data) or (
        isinstance(data, Iterable) and not isinstance(data, (list, tuple, str, bytes, dict)))


def sample_rows(n_rows: int, size: int, seed: int | None) -> np.ndarray:
    """``size`` distinct rows of ``range(n_rows)``, sorted: a uniform sample without replacement, in
    ``O(size)`` memory.

    How many rows fall in each block of :data:`SAMPLE_BLOCK` rows is drawn from the multivariate
    hypergeometric distribution, then each block's rows uniformly without replacement; together,
    every ``size``-subset is equally likely. (``choice(N, size, replace=False)`` holds a permutation
    of all N rows; for ``N <= SAMPLE_BLOCK`` this is ``sort(default_rng(seed).choice(N, size,
    replace=False))`` itself.) The blocks do not depend on how the data are chunked.
    """
    rng = np.random.default_rng(seed)
    starts = np.arange(0, n_rows, SAMPLE_BLOCK)
    sizes = np.minimum(SAMPLE_BLOCK, n_rows - starts)
    counts = rng.multivariate_hypergeometric(sizes, size)
    return np.concatenate([a + np.sort(rng.choice(n, c, replace=False)) for a, n, c in zip(starts, sizes, counts)])


class RowSource:
    """Rows ``[start, stop)`` of an ``(N, D)`` dataset, read in chunks of at most ``chunk_size`` rows.

    Attributes:
        n_rows: N, the rows of the whole dataset (not only of this shard).
        n_features: D.
        streamed: whether the rows are read chunk by chunk (not one tensor in memory).
        start, stop: this shard's rows.
    """

    def __init__(self, n_rows: int, n_features: int, chunk_size: int, *, streamed: bool,
                 convert: Callable[[Any, str], Tensor] | None) -> None:
        self.n_rows, self.n_features, self.chunk_size, self.streamed = n_rows, n_features, chunk_size, streamed
        self.start, self.stop = 0, n_rows
        self._convert = convert  # None: the rows are a converted tensor already

    def _read(self, offset: int, raw: Any, label: Label) -> Tensor:
        """Rows ``raw`` (the data's rows from ``offset`` on) converted and checked, a block of
        :func:`~vi_models.mixtures.chunks.check_rows` rows at a time, into one tensor."""
        if self._convert is None:
            return raw
        n = int(np.shape(raw)[0])
        step = check_rows(n)
        if n <= step:
            return self._convert(raw, label(offset, offset + n))
        out: Tensor | None = None
        for a in range(0, n, step):
            b = min(a + step, n)
            part = self._convert(raw[a:b], label(offset + a, offset + b))
            if out is None:
                out = part.new_empty((n, part.shape[1]))
            out[a:b] = part
        return out

    def shard(self, rank: int, world: int) -> RowSource:
        """This rank's contiguous block of rows (``shard_sizes(N, world)``), as a new source."""
        sizes = shard_sizes(self.n_rows, world)
        out = copy.copy(self)
        out.start = sum(sizes[:rank])
        out.stop = out.start + sizes[rank]
        return out

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[int, Any, Label]]:  # pragma: no cover - abstract
        """``(first row, raw rows, label)`` covering ``[start, stop)`` in order, each at most
        ``chunk_size``; ``label(a, b)`` names the data's rows ``[a, b)`` of the piece in messages."""
        raise NotImplementedError

    def chunks(self) -> Iterator[tuple[int, Tensor]]:
        """``(first row, chunk (n_i, D))`` over this shard's rows, in order, converted and checked."""
        for offset, raw, label in self._pieces(self.start, self.stop):
            yield offset, self._read(offset, raw, label)

    def head(self, n: int) -> Tensor:
        """The first ``n`` rows of the dataset ``(n, D)``."""
        return torch.cat([self._read(*piece) for piece in self._pieces(0, min(n, self.n_rows))])

    def all_rows(self) -> Tensor:
        """Every row of the dataset ``(N, D)`` in memory (the tensor itself when it is one)."""
        return torch.cat([self._read(*piece) for piece in self._pieces(0, self.n_rows)])

    def sample(self, size: int | None, seed: int | None) -> Tensor:
        """A uniform sample without replacement of ``size`` rows of the dataset, in row order.

        All rows, in order, when ``size`` is None or at least N (no random draw); otherwise the
        rows :func:`sample_rows` ``(N, size, seed)``.
        """
        if size is None or self.n_rows <= size:
            return self.all_rows()
        return self.rows(sample_rows(self.n_rows, size, seed))

    def rows(self, indices: np.ndarray) -> Tensor:
        """Rows ``indices`` (sorted, of the whole dataset) ``(m, D)``, read in one pass over the chunks
        into one tensor (no list of parts to concatenate: the sample is in memory once)."""
        out: Tensor | None = None
        for offset, raw, label in self._pieces(0, self.n_rows):
            a, b = np.searchsorted(indices, [offset, offset + len(raw)])
            step = check_rows(len(raw))
            for start in range(a, b, step):  # convert (and check) the picked rows only, a block at a time
                picked = indices[start : min(start + step, b)] - offset
                rows = raw[torch.as_tensor(picked)] if isinstance(raw, Tensor) else np.asarray(raw)[picked]
                name = f"the {len(picked)} rows sampled from {label(offset, offset + len(raw))}"
                part = rows if self._convert is None else self._convert(rows, name)
                if out is None:
                    out = part.new_empty((len(indices), part.shape[1]))
                out[start : start + len(picked)] = part
        if out is None:  # pragma: no cover - indices are rows of the dataset
            raise DataError(f"expected row indices below {self.n_rows}, got {indices[:5].tolist()}")
        return out


class _ArraySource(RowSource):
    """A tensor (already converted) or a lazily read array: ``data[a:b]`` per chunk."""

    def __init__(self, data: Any, chunk_size: int, *, streamed: bool,
                 convert: Callable[[Any, str], Tensor] | None) -> None:
        super().__init__(int(data.shape[0]), int(data.shape[1]), chunk_size, streamed=streamed, convert=convert)
        self._data = data

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[int, Any, Label]]:
        for a in range(start, stop, self.chunk_size):
            yield a, self._data[a : min(a + self.chunk_size, stop)], _rows_label

    def all_rows(self) -> Tensor:
        return self._data if isinstance(self._data, Tensor) else super().all_rows()

    def rows(self, indices: np.ndarray) -> Tensor:
        if isinstance(self._data, Tensor):
            return self._data[torch.as_tensor(indices, device=self._data.device)]
        return super().rows(indices)


class _ChunkSource(RowSource):
    """Chunks from a list, a re-iterable or a callable, split to at most ``chunk_size`` rows."""

    def __init__(self, opener: Callable[[], Iterable[Any]], sizes: list[int] | None, width: int | None,
                 chunk_size: int | None, convert: Callable[[Any, str], Tensor]) -> None:
        self._open = opener
        if sizes is None or width is None:  # one counting pass (shapes only)
            sizes = []
            for i, raw in enumerate(opener()):
                width = _check_chunk(raw, f"chunk {i}", width)
                sizes.append(int(np.shape(raw)[0]))
        if not sizes or sum(sizes) == 0:
            raise DataError("expected at least one row of data, got no chunks or only empty ones; check the "
                            "source (the file list, the reader) that produced them")
        self._sizes = sizes
        super().__init__(sum(sizes), int(width), chunk_size or max(sizes), streamed=True, convert=convert)

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[int, Any, Label]]:
        offset, seen = 0, 0
        for i, raw in enumerate(self._open()):
            n = int(np.shape(raw)[0])
            if i >= len(self._sizes) or n != self._sizes[i]:
                raise DataError(f"expected the same chunks on every pass over the data, got chunk {i} with {n} rows "
                                f"where the first pass had {self._sizes[i] if i < len(self._sizes) else 'none'}; "
                                "pass a list of chunks or a re-iterable that yields the same rows each time")
            seen += 1
            lo, hi = max(start, offset), min(stop, offset + n)
            for a in range(lo, hi, self.chunk_size):
                b = min(a + self.chunk_size, hi)
                yield a, raw[a - offset : b - offset], functools.partial(_chunk_label, i)
            offset += n
            if offset >= stop:
                return
        if seen != len(self._sizes):
            raise DataError(f"expected {len(self._sizes)} chunks on every pass over the data, got {seen}; pass a "
                            "list of chunks or a re-iterable that yields the same rows each time")


def _rows_label(a: int, b: int) -> str:
    return f"data rows {a} to {b - 1}"


def _chunk_label(i: int, a: int, b: int) -> str:
    return f"chunk {i} (data rows {a} to {b - 1})"


def _check_chunk(raw: Any, name: str, width: int | None) -> int:
    """The chunk's width, checking that it is 2-D and as wide as the others (``width``, if known)."""
    shape = np.shape(raw)
    if len(shape) != 2:
        raise DataError(f"expected every chunk of shape (n_i, n_features), got {name} of shape {tuple(shape)}; "
                        "reshape it with chunk.reshape(len(chunk), -1)")
    if width is not None and shape[1] != width:
        raise DataError(f"expected every chunk to have {width} columns (as the first chunk or the model), got "
                        f"{name} with {shape[1]}; the chunks must be rows of one table")
    return int(shape[1])


def _opener(data: Any) -> Callable[[], Iterable[Any]]:
    if isinstance(data, (list, tuple)):
        return lambda: data
    if callable(data):
        def call() -> Iterable[Any]:
            out = data()
            if not isinstance(out, Iterable):
                raise ConfigError(f"expected the data callable to return an iterable of chunks, got "
                                  f"{type(out).__name__}")
            return out
        return call
    if iter(data) is data:
        raise ConfigError(
            f"expected data that can be read several times (EM reads it once per iteration), got a one-shot "
            f"{type(data).__name__}; pass a list of chunks, a re-iterable object, or a callable that returns a "
            "fresh iterator of chunks, e.g. lambda: (chunk for chunk in ...)"
        )
    return lambda: data


def as_source(data: Any, model: Any, *, chunk_size: int | None, dtype: torch.dtype,
              device: torch.device) -> RowSource:
    """The rows of ``data`` for ``model`` (module docstring), in ``dtype`` on ``device``.

    Raises:
        ConfigError: a one-shot iterator.
        DataError: no rows, a chunk that is not 2-D, chunks of different widths, a width other than
            ``model.n_features``, non-finite values (when the chunk is read).
    """
    width = getattr(model, "n_features", None)

    def convert(raw: Any, name: str) -> Tensor:
        if not isinstance(raw, Tensor):
            raw = np.asarray(raw)
        x = as_data_tensor(raw, name=name, dtype=dtype, device=device, min_dim=2)
        if x.dim() != 2 or (width is not None and x.shape[1] != width):
            fix = "build the model with n_features equal to the data's number of columns"
            raise DataError(f"expected {name} of shape (n_samples, {width if width is not None else 'D'}), got "
                            f"{tuple(x.shape)}; {fix}")
        return x

    if hasattr(data, "train") and isinstance(data.train, Tensor):
        data = data.train
    if _is_lazy_array(data):
        if math.prod(data.shape) == 0:
            raise DataError(f"expected a non-empty array of data, got shape {tuple(data.shape)}")
        _check_chunk(data, "the array", width)
        return _ArraySource(data, chunk_size or DEFAULT_CHUNK_SIZE, streamed=True, convert=convert)
    if not is_streamed(data):
        x = as_model_data(data, model, device=device, dtype=dtype)
        return _ArraySource(x, chunk_size or x.shape[0], streamed=chunk_size is not None, convert=None)
    sizes = None
    if isinstance(data, (list, tuple)):
        for i, raw in enumerate(data):
            width = _check_chunk(raw, f"chunk {i}", width)
        sizes = [int(np.shape(raw)[0]) for raw in data]
    return _ChunkSource(_opener(data), sizes, width, chunk_size, convert)
