"""Datasets: the bundled ones (scikit-learn, FFJORD's 2-D toys) and user files, as a :class:`DataBundle`.

Conventions, shared by every source:

* **split**: ``train_test_split(rows, test_size=0.2, random_state=0)`` unless the file
  carries its own ``train``/``test`` arrays; the 2-D toys draw a fresh test set instead.
* **dequantization** of integer levels k in {0, ..., L-1}: x = (k + u) / L with
  u ~ U(0, 1)^D, so x lies in [0, 1)^D and ``floor(L * x) == k`` exactly (also in the
  data's floating dtype); the levels are kept (``train_levels``/``test_levels``).
  Digits have L = 17 (pixel values 0..16), 8-bit IDX images L = 256.
* **bits/dim** with D = prod(data_shape) and LL the mean log-likelihood in nats per example:
  a continuous density on dequantized data gives -(LL - D log L) / (D log 2) (the
  dequantization bound, Theis et al. 2016, Sec. 3.1); a discrete model of the levels, and
  any model of continuous or binary data, gives -LL / (D log 2).
* Integer-valued ``.npy``/``.npz``/``.csv`` files are kept as continuous floats: only IDX
  unsigned-byte files are known to hold quantized levels.

Everything is created with the requested ``device`` and ``dtype``; small datasets live
there whole.

Example
-------
>>> bundle = load_dataset("digits")
>>> bundle.train.shape, bundle.kind, bundle.num_levels
(torch.Size([1437, 64]), 'dequantized', 17)
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

from inference.engine.likelihood import bits_per_dim as _bits_per_dim
from vi_models._validation import as_data_tensor, check_choice, check_positive_int, resolve_device
from vi_models.errors import ConfigError, DataError

from .toy2d import TOY_DENSITIES, ToyDensity, get_toy_density, normalize_toy_name
from .toy2d_base import float_dtype

__all__ = ["DataBundle", "load_dataset", "available_datasets", "read_idx"]

Kind = Literal["continuous", "dequantized", "binary"]
_KINDS: tuple[str, ...] = ("continuous", "dequantized", "binary")
_SKLEARN = ("digits", "digits-binary", "iris", "wine", "breast_cancer")
_FILE_TYPES = ".npy, .npz, .csv or IDX (*-ubyte, *.idx, *.idx1-ubyte, *.idx3-ubyte, optionally .gz)"
# IDX type codes (http://yann.lecun.com/exdb/mnist/): data are big-endian.


from .files import read_csv, read_idx, read_npy, read_npz


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A dataset split into train and test tensors, with what a model needs to know about it.

    Attributes
    ----------
    name : str
        "digits", "moons", "my.npy", ...
    train, test : torch.Tensor
        Float ``(N_train, *data_shape)`` and ``(N_test, *data_shape)`` (``test`` may be None).
    data_shape : tuple of int
        Per-observation shape, e.g. ``(64,)`` or ``(2,)``.
    kind : {"continuous", "dequantized", "binary"}
        How the values arose (see the module docstring).
    num_levels : int, optional
        L for dequantized data (17 for digits).
    image_shape : tuple of int, optional
        ``(rows, cols)`` of image data stored flat (``(8, 8)`` for digits).
    density : ToyDensity, optional
        The exact density of a 2-D toy.
    train_levels, test_levels : torch.LongTensor, optional
        Integer levels k of dequantized data, shaped like ``train``/``test``.
    train_targets, test_targets : torch.LongTensor, optional
        Class labels of the scikit-learn datasets, ``(N_train,)``/``(N_test,)``.
    transform_mean, transform_std : torch.Tensor, optional
        ``(*data_shape)``: standardized data are (raw - mean) / std; raw = x * std + mean.
    source : str
        Where the data came from.
    split : dict
        How the split was made (``test_size``/``random_state``, or the toys' sizes and seed).
    """

    name: str
    train: torch.Tensor = field(repr=False)
    test: torch.Tensor | None = field(repr=False)
    data_shape: tuple[int, ...]
    kind: Kind
    num_levels: int | None = None
    image_shape: tuple[int, int] | None = None
    density: ToyDensity | None = None
    train_levels: torch.Tensor | None = field(default=None, repr=False)
    test_levels: torch.Tensor | None = field(default=None, repr=False)
    train_targets: torch.Tensor | None = field(default=None, repr=False)
    test_targets: torch.Tensor | None = field(default=None, repr=False)
    transform_mean: torch.Tensor | None = field(default=None, repr=False)
    transform_std: torch.Tensor | None = field(default=None, repr=False)
    source: str = ""
    split: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice(self.kind, "kind", _KINDS)
        if self.kind == "dequantized" and (self.num_levels is None or self.num_levels < 2):
            raise ConfigError(f"expected num_levels >= 2 for dequantized data, got {self.num_levels!r}")
        for part in ("train", "test"):
            tensor = getattr(self, part)
            if tensor is not None and tuple(tensor.shape[1:]) != tuple(self.data_shape):
                raise DataError(
                    f"expected {part} of shape (N, {', '.join(map(str, self.data_shape))}), "
                    f"got {tuple(tensor.shape)}; data_shape must match the tensors"
                )

    @property
    def num_dims(self) -> int:
        """D = prod(data_shape), the dimension bits/dim divides by."""
        return math.prod(self.data_shape)

    def dequantize(self, levels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh dequantization noise: (k + u) / num_levels, u ~ U(0, 1).

        Parameters
        ----------
        levels : torch.Tensor
            Integer levels k in ``0..num_levels-1``, any shape (e.g. ``train_levels``).
        generator : torch.Generator, optional
            Source of the noise (drawn on its device); default: torch's global generator.

        Returns
        -------
        torch.Tensor
            Shape of ``levels``, the dtype of ``train``, on ``levels``' device; ``floor(L x) == k``.

        Raises
        ------
        ConfigError
            The bundle does not hold dequantized data.
        DataError
            ``levels`` is not integer or lies outside ``0..num_levels-1``.
        """
        if self.kind != "dequantized" or self.num_levels is None:
            raise ConfigError(
                f"expected a bundle of dequantized data (digits, 8-bit IDX images), got kind "
                f"{self.kind!r} for {self.name!r}; only quantized data can be dequantized"
            )
        if levels.is_floating_point() or levels.is_complex() or levels.dtype == torch.bool:
            raise DataError(f"expected integer levels (e.g. bundle.train_levels), got dtype {levels.dtype}")
        if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= self.num_levels):
            raise DataError(
                f"expected levels in 0..{self.num_levels - 1}, got values in "
                f"{int(levels.min())}..{int(levels.max())}; pass bundle.train_levels or bundle.test_levels"
            )
        noise_device = generator.device if generator is not None else levels.device
        noise = torch.rand(levels.shape, generator=generator, dtype=torch.float64, device=noise_device)
        return _dequantize(levels, noise.to(levels.device), self.num_levels, self.train.dtype)

    def bits_per_dim(self, log_likelihood: float | torch.Tensor, *, discrete: bool) -> float:
        """Bits per dimension from a log-likelihood in nats per example.

        Parameters
        ----------
        log_likelihood : float or torch.Tensor
            Mean log-likelihood per example, LL (a tensor of per-example values is averaged).
        discrete : bool
            True for a model of the integer levels (exact log P(k)), False for a density on x.

        Returns
        -------
        float
            -(LL - D log L) / (D log 2) for a continuous model of dequantized data,
            -LL / (D log 2) otherwise; D = :attr:`num_dims`.
        """
        levels = self.num_levels if self.kind == "dequantized" else None
        return _bits_per_dim(log_likelihood, self.num_dims, num_levels=levels, discrete=discrete)


def available_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts besides file paths."""
    return [*_SKLEARN, *TOY_DENSITIES]


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    test_size: float = 0.2,
    random_state: int = 0,
    n_samples: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    dequantize_seed: int = 0,
    key: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DataBundle:
    """Load a bundled dataset or a file as a :class:`DataBundle`.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A name of :func:`available_datasets` ("digits", "digits-binary", "iris", "wine",
        "breast_cancer", or a 2-D toy such as "moons"; case, '-', '_' and spaces are ignored),
        or a path to a .npy, .npz, .csv or IDX file (names win over files; pass a
        ``pathlib.Path`` or "./moons" for a file named like a dataset).
    test_size : float
        Fraction of rows held out, in (0, 1).
    random_state : int
        Seed of the split.
    n_samples, n_test : int, optional
        2-D toys only: train and test sizes (default 10 000 and 100 000).
    seed : int
        2-D toys only: seed of the draws (train and test from independent streams).
    dequantize_seed : int
        Seed of the dequantization noise (digits, 8-bit IDX).
    key : str, optional
        .npz only: which array to load.
    device : torch.device or str, optional
        Where the tensors live (default CPU).
    dtype : torch.dtype, optional
        Floating dtype of the data (default ``torch.get_default_dtype()``).

    Returns
    -------
    DataBundle

    Raises
    ------
    DataError
        Unknown name, missing/unreadable/empty file, 1-D data, NaN/inf, ambiguous .npz.
    ConfigError
        An argument outside its allowed values, or one that does not apply to this source.
    """
    if isinstance(test_size, bool) or not isinstance(test_size, (float, int)) or not 0 < test_size < 1:
        raise ConfigError(
            f"expected test_size to be a fraction in (0, 1), got {test_size!r}; "
            "e.g. test_size=0.2 holds out 20% of the rows"
        )
    for value, label in ((random_state, "random_state"), (seed, "seed"), (dequantize_seed, "dequantize_seed")):
        check_positive_int(value, label, minimum=0)
    dtype, device = float_dtype(dtype), resolve_device(device)
    options = {"test_size": test_size, "random_state": random_state, "device": device, "dtype": dtype}

    canonical = _canonical_name(name_or_path) if isinstance(name_or_path, str) else None
    toy = canonical in TOY_DENSITIES
    if not toy:
        for value, label in ((n_samples, "n_samples"), (n_test, "n_test")):
            if value is not None:
                raise ConfigError(
                    f"{label} applies to the 2-D toy datasets only, got {label}={value} for {name_or_path!r}"
                )
    if key is not None and (canonical is not None or not str(name_or_path).lower().endswith(".npz")):
        raise ConfigError(f"key selects an array of an .npz file, got key={key!r} for {name_or_path!r}")
    if toy:
        return _load_toy(canonical, n_samples, n_test, seed, device, dtype)
    if canonical is not None:
        return _load_sklearn(canonical, dequantize_seed=dequantize_seed, **options)
    path = Path(name_or_path)
    if not path.exists():
        text = str(name_or_path)
        looks_like_path = bool(path.suffix) or "/" in text or os.sep in text or text.lower().endswith("ubyte")
        if isinstance(name_or_path, str) and not looks_like_path:
            raise DataError(
                f"expected a dataset name, one of {', '.join(available_datasets())}, got "
                f"{name_or_path!r}; a path to a data file ({_FILE_TYPES}) also works"
            )
        raise DataError(
            f"expected an existing data file, got {str(path)!r} (resolved to {path.resolve()}), which does not "
            "exist; check the path and the working directory"
        )
    return _load_file(path, key=key, dequantize_seed=dequantize_seed, **options)


def _canonical_name(name: str) -> str | None:
    key = "".join(ch for ch in name.lower() if ch not in "-_ ")
    named = {"digitsbinary": "digits-binary", "breastcancer": "breast_cancer"}
    named.update({n: n for n in ("digits", "iris", "wine")})
    return named.get(key) or normalize_toy_name(name)


def _split_seeds(seed: int) -> tuple[int, int]:
    """Two independent seeds (train, test) from one, via numpy's SeedSequence."""
    train, test = np.random.SeedSequence(seed).spawn(2)
    return int(train.generate_state(1, np.uint64)[0]), int(test.generate_state(1, np.uint64)[0])


def _dequantize(levels: torch.Tensor, noise: torch.Tensor, num_levels: int, dtype: torch.dtype) -> torch.Tensor:
    """(k + u) / L in ``dtype``, nudged by one ulp where rounding broke floor(L x) == k or x < 1."""
    x = ((levels.to(torch.float64) + noise) / num_levels).to(dtype)
    for _ in range(8):
        # floor in the data's dtype, and exactly (a float32 times L is exact in float64)
        floors = torch.stack([torch.floor(x * num_levels).double(), torch.floor(x.double() * num_levels)])
        low, high = (floors < levels).any(0), (floors > levels).any(0)
        if not bool((low | high).any()):
            return x
        x = torch.where(high, torch.nextafter(x, torch.zeros_like(x)), x)
        x = torch.where(low, torch.nextafter(x, torch.ones_like(x)), x)
    raise DataError(f"dtype {dtype} is too coarse to hold {num_levels} dequantization levels; use float32 or float64")


def _dequantized_bundle(
    train_levels: torch.Tensor, test_levels: torch.Tensor, *, num_levels: int, seed: int,
    device: torch.device, dtype: torch.dtype, **fields: Any,
) -> DataBundle:
    """A dequantized bundle from flat integer levels, train and test noise from independent streams."""
    parts = []
    for levels, stream in zip((train_levels, test_levels), _split_seeds(seed)):
        noise = torch.rand(levels.shape, generator=torch.Generator().manual_seed(stream), dtype=torch.float64)
        parts.append(_dequantize(levels, noise, num_levels, dtype).to(device))
    return DataBundle(
        train=parts[0], test=parts[1], data_shape=tuple(parts[0].shape[1:]), kind="dequantized",
        num_levels=num_levels, train_levels=train_levels.to(device), test_levels=test_levels.to(device), **fields,
    )


def _load_toy(
    name: str, n_samples: int | None, n_test: int | None, seed: int, device: torch.device, dtype: torch.dtype
) -> DataBundle:
    n_train = check_positive_int(10_000 if n_samples is None else n_samples, "n_samples")
    n_test = check_positive_int(100_000 if n_test is None else n_test, "n_test")
    density = get_toy_density(name)
    train_seed, test_seed = _split_seeds(seed)
    train, test = (
        density.sample(n, generator=torch.Generator().manual_seed(s), dtype=dtype, device=device)
        for n, s in ((n_train, train_seed), (n_test, test_seed))
    )
    return DataBundle(
        name=name, train=train, test=test, data_shape=(2,), kind="continuous", density=density,
        source=f"inference.data.toy2d.{type(density).__name__} (FFJORD toy density)",
        split={"n_samples": n_train, "n_test": n_test, "seed": seed},
    )


def _load_sklearn(
    name: str, *, test_size: float, random_state: int, dequantize_seed: int, device: torch.device, dtype: torch.dtype
) -> DataBundle:
    loader = {"digits-binary": "load_digits", "breast_cancer": "load_breast_cancer"}.get(name, f"load_{name}")
    bunch = getattr(sk_datasets, loader)()
    X, y = np.asarray(bunch.data), np.asarray(bunch.target)
    train_rows, test_rows = train_test_split(np.arange(len(X)), test_size=test_size, random_state=random_state)
    common: dict[str, Any] = {
        "name": name,
        "source": f"sklearn.datasets.{loader}",
        "split": {"test_size": test_size, "random_state": random_state},
        "train_targets": torch.as_tensor(y[train_rows], dtype=torch.long, device=device),
        "test_targets": torch.as_tensor(y[test_rows], dtype=torch.long, device=device),
    }
    if name == "digits":
        levels = torch.as_tensor(X.astype(np.int64))  # pixel counts 0..16
        return _dequantized_bundle(
            levels[train_rows], levels[test_rows], num_levels=17, seed=dequantize_seed, device=device, dtype=dtype,
            image_shape=(8, 8), **common,
        )
    if name == "digits-binary":
        binary = torch.as_tensor(X > 8, dtype=dtype, device=device)
        return DataBundle(
            train=binary[train_rows], test=binary[test_rows], data_shape=(64,), kind="binary", image_shape=(8, 8),
            **common,
        )
    # standardized with the training split's statistics (population std, as StandardScaler)
    mean, std = X[train_rows].mean(0), X[train_rows].std(0)
    std = np.where(std > 0, std, 1.0)
    scaled = torch.as_tensor((X - mean) / std, dtype=dtype, device=device)
    return DataBundle(
        train=scaled[train_rows], test=scaled[test_rows], data_shape=(X.shape[1],), kind="continuous",
        transform_mean=torch.as_tensor(mean, dtype=dtype, device=device),
        transform_std=torch.as_tensor(std, dtype=dtype, device=device), **common,
    )


def _load_file(
    path: Path, *, key: str | None, test_size: float, random_state: int, dequantize_seed: int,
    device: torch.device, dtype: torch.dtype,
) -> DataBundle:
    name = path.name.lower()
    base = name.removesuffix(".gz")
    is_idx = base.endswith("ubyte") or re.search(r"\.idx\d?$", base) is not None
    if is_idx:
        arrays = {"data": read_idx(path)}
    elif name.endswith(".npy"):
        arrays = {"data": read_npy(path)}
    elif name.endswith(".npz"):
        arrays = read_npz(path, key)
    elif name.endswith(".csv"):
        arrays = {"data": read_csv(path)}
    else:
        raise DataError(
            f"expected a data file of type {_FILE_TYPES}, got {path.name!r}; convert it, e.g. with np.save"
        )
    for label, array in arrays.items():
        if array.ndim < 2:
            hint = " (an IDX labels file? load the images file; read labels with inference.data.read_idx)"
            raise DataError(
                f"expected {label} in {path.name} with shape (n_samples, n_features, ...), got shape "
                f"{array.shape}{hint if is_idx else ''}; reshape it with x.reshape(-1, 1) for scalar observations "
                "or x.reshape(1, -1) for a single observation"
            )
        if 0 in array.shape[1:]:
            raise DataError(f"expected {label} in {path.name} with at least one value per row, got shape "
                            f"{array.shape}; drop the empty dimension or fix the export")
    split: dict[str, Any] = {"test_size": test_size, "random_state": random_state}
    if "train" in arrays:
        train_np, test_np, split = arrays["train"], arrays["test"], {"from_file": "train/test arrays"}
        if train_np.shape[1:] != test_np.shape[1:]:
            raise DataError(
                f"expected the 'train' and 'test' arrays of {path.name} to share their per-row shape, "
                f"got {train_np.shape} and {test_np.shape}"
            )
    else:
        data = arrays["data"]
        if len(data) < 2:
            raise DataError(f"expected at least 2 rows in {path.name} to split into train and test, got {len(data)}")
        train_rows, test_rows = train_test_split(np.arange(len(data)), test_size=test_size, random_state=random_state)
        train_np, test_np = data[train_rows], data[test_rows]
    source = str(path.resolve())
    if is_idx and train_np.dtype == np.uint8:  # 8-bit levels: dequantize, store flat
        train_levels, test_levels = (
            torch.as_tensor(a.reshape(len(a), -1).astype(np.int64)) for a in (train_np, test_np)
        )
        return _dequantized_bundle(
            train_levels, test_levels, num_levels=256, seed=dequantize_seed, device=device, dtype=dtype,
            name=path.name, image_shape=tuple(train_np.shape[1:]) if train_np.ndim == 3 else None,
            source=source, split=split,
        )
    image_shape = tuple(train_np.shape[1:]) if is_idx and train_np.ndim == 3 else None
    if image_shape is not None:
        train_np, test_np = train_np.reshape(len(train_np), -1), test_np.reshape(len(test_np), -1)
    train, test = (
        as_data_tensor(a, name=f"the {part} rows of {path.name}", dtype=dtype, device=device, min_dim=2)
        for a, part in ((train_np, "training"), (test_np, "test"))
    )
    return DataBundle(
        name=path.name, train=train, test=test, data_shape=tuple(train.shape[1:]), kind="continuous",
        image_shape=image_shape, source=source, split=split,
    )
