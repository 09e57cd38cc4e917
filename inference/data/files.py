"""Readers for user data files: .npy, .npz, .csv and MNIST-format IDX (optionally gzipped)."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from vi_models.errors import DataError

__all__ = ["read_idx", "read_npy", "read_npz", "read_csv"]

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (MNIST format), optionally gzip-compressed.

    Parameters
    ----------
    path : str or os.PathLike
        The file: magic bytes ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, data.

    Returns
    -------
    np.ndarray
        Shape ``(d_1, ..., d_ndim)`` in native byte order (uint8 for images and labels).

    Raises
    ------
    DataError
        The file cannot be read, has a bad magic number, or its size disagrees with its header.
    """
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"could not read the IDX file {str(path)!r}: expected a readable (optionally gzipped) file, got "
            f"{type(exc).__name__}: {exc}; check that it is complete (download or copy it again)"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"expected an IDX file starting with the magic bytes 0x00 0x00 <type> <ndim>, type one of "
            f"{', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)} and ndim >= 1, got "
            f"{raw[:4].hex(' ') or 'an empty file'} in {str(path)!r}; is it really an MNIST-format file?"
        )
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) < header or len(raw) - header != expected:
        raise DataError(
            f"expected {expected if dims else '?'} bytes of data after the IDX header of {str(path)!r} "
            f"(shape {dims or '?'}, {dtype.name}), got {max(len(raw) - header, 0)}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


def _magic(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise DataError(
            f"could not read {path.name}: expected a readable file, got {type(exc).__name__}: {exc}"
        ) from None


def read_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file (numeric; object arrays are refused, never unpickled)."""
    start = _magic(path, len(_NPY_MAGIC))
    if start != _NPY_MAGIC:
        raise DataError(
            f"could not read {path.name}: expected a .npy file, which starts with the bytes \\x93NUMPY, got "
            f"{start[:8]!r}; save the array with np.save(path, array)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, MemoryError) as exc:
        raise DataError(
            f"could not read {path.name}: expected a complete .npy file of numbers, got {type(exc).__name__}: "
            f"{exc}; save the array again with np.save(path, array) (numbers, not objects)"
        ) from None


def read_npz(path: Path, key: str | None) -> dict[str, np.ndarray]:
    """{'data': array} or {'train': ..., 'test': ...} from an .npz archive."""
    start = _magic(path, 4)
    if start not in _ZIP_MAGICS:
        raise DataError(
            f"could not read {path.name}: expected an .npz archive (a zip file, starting with PK), got "
            f"{start!r}; save the arrays with np.savez(path, x=array)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"could not read {path.name}: expected a complete .npz archive of numeric arrays, got "
            f"{type(exc).__name__}: {exc}; save the arrays again with np.savez(path, x=array)"
        ) from None
    if not arrays:
        raise DataError(f"expected at least one array in {path.name}, got an empty archive")
    if key is not None:
        if key not in arrays:
            raise DataError(f"expected key={key!r} among the arrays of {path.name}, got keys {sorted(arrays)}")
        return {"data": arrays[key]}
    if "train" in arrays and "test" in arrays:
        return {"train": arrays["train"], "test": arrays["test"]}
    if len(arrays) == 1:
        return {"data": next(iter(arrays.values()))}
    for candidate in ("x", "X", "data"):
        if candidate in arrays:
            return {"data": arrays[candidate]}
    raise DataError(
        f"expected {path.name} to hold one array, 'train' and 'test', or one of 'x', 'X', 'data', got keys "
        f"{sorted(arrays)}; choose one with load_dataset(path, key=...)"
    )


def read_csv(path: Path) -> np.ndarray:
    """Numeric CSV (comma-separated, or whitespace when the first line has no comma); one header row allowed."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"could not read {path.name}: expected a UTF-8 text CSV file, got {type(exc).__name__}: {exc}; "
            "export it as CSV (UTF-8) or save the array with np.save"
        ) from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"expected rows of numbers in {path.name}, got an empty file")
    delimiter = "," if "," in lines[0] else None
    try:
        [float(v) for v in lines[0].split(delimiter)]
        header = 0
    except ValueError:
        header = 1
    if len(lines) == header:
        raise DataError(f"expected rows of numbers in {path.name} below its header, got only the header {lines[0]!r}")
    try:
        return np.loadtxt(io.StringIO("\n".join(lines[header:])), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise DataError(
            f"expected only numbers in {path.name} (after an optional header row), got: {exc}; "
            "drop non-numeric columns or encode them as numbers"
        ) from None
