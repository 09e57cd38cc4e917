"""Sub-chunks: the rows of a chunk taken a few thousand at a time by the E-step and the statistics.

The E-step of ``m`` rows and their sufficient statistics (:mod:`.statistics`) hold about
``(K + 4) m d`` floats of temporaries: the ``(K, m)`` tables of log-densities and
responsibilities, the ``(m, d)`` product per component, a categorical mixture's ``(K, m, d)``
gather. Taken over a whole chunk of ``n`` rows that is several chunks of memory; taken over
sub-chunks of ``n / (2 (K + 4))`` rows it stays below half a chunk, and since the statistics are
sums, the result changes only by the order of the floating-point additions.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["MIN_SUB_CHUNK_ROWS", "check_rows", "sub_chunk_rows", "sub_chunks"]

#: Chunks of at most this many rows are not split (each sub-chunk costs a Python round trip).
MIN_SUB_CHUNK_ROWS = 2048


def sub_chunk_rows(n_rows: int, n_components: int) -> int:
    """Rows per sub-chunk of a chunk of ``n_rows`` rows for a K-component model (module docstring):
    ``n_rows // (2 (K + 4))``, at least :data:`MIN_SUB_CHUNK_ROWS`."""
    return max(MIN_SUB_CHUNK_ROWS, n_rows // (2 * (n_components + 4)))


def check_rows(n_rows: int) -> int:
    """Rows per block when a chunk of ``n_rows`` rows is converted and checked (finite values, its
    dtype): a 16th of it, at least :data:`MIN_SUB_CHUNK_ROWS`, so that the checks' temporaries (a
    copy, ``isfinite``) are a block's, not a chunk's."""
    return max(MIN_SUB_CHUNK_ROWS, n_rows // 16)


def sub_chunks(n_rows: int, n_components: int, rows: int | None = None) -> Iterator[slice]:
    """Consecutive slices covering ``range(n_rows)``, of ``rows`` rows each (default
    :func:`sub_chunk_rows`; the last may be shorter).

    Example:
        >>> [(s.start, s.stop) for s in sub_chunks(5000, 8, rows=2048)]
        [(0, 2048), (2048, 4096), (4096, 5000)]
    """
    step = sub_chunk_rows(n_rows, n_components) if rows is None else rows
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))
