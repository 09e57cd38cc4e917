"""Validation of user input at the public boundary (shared by every module)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError, DataError


def as_data_tensor(
    data: Any,
    *,
    name: str = "data",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    min_dim: int = 1,
    allow_integer: bool = False,
) -> torch.Tensor:
    """Convert array-like ``data`` to a finite, non-empty tensor without touching the caller's copy.

    Args:
        data: a tensor, numpy array or nested sequence, shape ``(N, *event_shape)``.
        name: how the error messages call the argument.
        dtype: target floating dtype; default ``torch.get_default_dtype()``.
        device: target device; default: where ``data`` already is (CPU for arrays).
        min_dim: the least number of dimensions accepted (1: a batch of scalars).
        allow_integer: keep integer dtypes (category levels) instead of converting to float.

    Returns:
        A tensor of shape ``(N, *event_shape)`` on ``device``.

    Raises:
        DataError: the data is empty, non-numeric, has NaN/inf, values too large for ``dtype``
            (1e300 in float32) or too few dimensions.
    """
    if isinstance(data, torch.Tensor):
        tensor = data.detach()
    else:
        try:
            array = np.asarray(data)
        except Exception as exc:  # ragged lists and other oddities
            raise DataError(
                f"expected {name} as an array-like of numbers, got {type(data).__name__} "
                f"that numpy cannot convert ({exc}); pass a numpy array or torch tensor"
            ) from None
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.number) or array.dtype == bool
        ):
            raise DataError(
                f"expected {name} with a numeric dtype, got dtype {array.dtype}; "
                "convert it with np.asarray(data, dtype=float)"
            )
        if array.dtype.kind in "fc" and array.dtype.itemsize > (8 if array.dtype.kind == "f" else 16):
            array = array.astype(np.float64 if array.dtype.kind == "f" else np.complex128)  # long double: not in torch
        tensor = torch.from_numpy(np.array(array, copy=True))
    if tensor.is_complex():
        raise DataError(
            f"expected {name} to be real-valued, got complex dtype {tensor.dtype}; "
            "pass its real part or its modulus"
        )
    if tensor.dim() < min_dim:
        raise DataError(
            f"expected {name} with at least {min_dim} dimension(s) (observations first), "
            f"got shape {tuple(tensor.shape)}; reshape it to (n_samples, n_features)"
        )
    if tensor.numel() == 0 or tensor.shape[0] == 0:
        raise DataError(
            f"expected {name} to be non-empty, got shape {tuple(tensor.shape)}; "
            "check the file or the filtering that produced it"
        )
    if tensor.is_floating_point():
        _check_finite(tensor, name, "NaN/inf entries", "drop or impute those rows first")
    integer = not (tensor.is_floating_point() or tensor.dtype == torch.bool)
    if tensor.dtype == torch.bool or not (integer and allow_integer):
        target = dtype or torch.get_default_dtype()
        if tensor.dtype != target:
            tensor = tensor.to(target)
            # finite before the cast, so an inf now is an overflow (1e300 in float32)
            _check_finite(
                tensor, name, f"entries beyond the range of {target} (|x| > {torch.finfo(target).max:.3g})",
                "rescale the data (e.g. standardise each column) or work in torch.float64",
            )
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def _check_finite(tensor: Tensor, name: str, what: str, fix: str) -> None:
    """Raise :class:`DataError` naming the rows of the floating ``tensor`` that hold NaN or inf."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(tensor.shape[0], -1).any(-1)).flatten()
        shown = ", ".join(str(int(r)) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
        raise DataError(
            f"expected finite values in {name}, got {int(bad.sum())} {what} "
            f"in {len(rows)} row(s) (rows {shown}); {fix}"
        )


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise :class:`ConfigError` if it is not an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"expected {name} to be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise :class:`ConfigError`."""
    if value not in choices:
        raise ConfigError(
            f"expected {name} to be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    return value


def resolve_device(device: torch.device | str | None) -> torch.device:
    """Turn a device spec into a :class:`torch.device`, with a clear error for unknown ones."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"expected a device such as 'cpu' or 'cuda', got {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} was requested but CUDA is not available here; use device='cpu'"
        )
    return dev


def sample_tensor(x: Any, name: str, *, min_dim: int = 1, like: Tensor | None = None) -> Tensor:
    """A finite, non-empty floating tensor; tensors keep their autograd graph (never modified)."""
    if isinstance(x, Tensor) and x.is_floating_point():
        if x.dim() < min_dim or x.shape[0] == 0 or x.numel() == 0:
            raise DataError(
                f"expected {name} with at least {min_dim} dimension(s) and samples first, "
                f"got shape {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            as_data_tensor(x, name=name)  # raises, naming the bad rows
        out = x
    else:
        out = as_data_tensor(x, name=name, min_dim=min_dim, device=None if like is None else like.device)
    if like is not None:
        if out.device != like.device:
            raise DataError(
                f"expected {name} on {like.device} like the first argument, got {out.device}; "
                f"move it with .to({str(like.device)!r})"
            )
        out = out.to(torch.promote_types(out.dtype, like.dtype))
    return out
