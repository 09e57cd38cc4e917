"""Plain numpy groups -> ArviZ containers, behind one version switch.

:func:`inference.to_inference_data` computes its draws as numpy arrays in a small
:class:`Group` per ArviZ group (``posterior``, ``posterior_predictive``, ``log_likelihood``,
``observed_data``, ``sample_stats``), every variable with its dimension names spelled out.
:func:`to_arviz` turns them into xarray datasets and wraps them in the container of the
installed ArviZ:

- ArviZ 0.x (0.23 is tested here): :class:`arviz.InferenceData`;
- ArviZ 1.x (``arviz_base``): an :class:`xarray.DataTree` with one child per group.

The datasets are built with xarray directly, so neither path depends on ArviZ's converters
(``az.from_dict`` shares one ``dims`` mapping between groups, which cannot describe ``x`` as
``(data, x_dim_0)`` in ``observed_data`` and ``(chain, draw, data)`` in ``log_likelihood``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import numpy as np

from vi_models.errors import ConfigError

__all__ = ["ARVIZ_MAJOR", "GROUPS", "SAMPLE_DIMS", "Group", "to_arviz", "group_dataset", "import_arviz"]

#: The order ArviZ lists its groups in.
GROUPS = ("posterior", "posterior_predictive", "log_likelihood", "sample_stats", "observed_data")
#: Leading dims of every sampled group (not of ``observed_data``).
SAMPLE_DIMS = ("chain", "draw")

Backend = Literal["auto", "inference_data", "datatree"]


def _arviz_major() -> int:
    try:
        return int(version("arviz").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


#: Major version of the installed ArviZ (0 when absent): the one switch between the two APIs.
ARVIZ_MAJOR: int = _arviz_major()


def import_arviz() -> Any:
    """``import arviz`` without its refactor announcement (a FutureWarning on every import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


@dataclass
class Group:
    """One ArviZ group as numpy: ``data[name]`` with dimension names ``dims[name]``.

    Sampled groups have ``data[name]`` of shape ``(chain, draw, *shape)`` and ``dims[name]``
    naming ``shape`` only (``chain`` and ``draw`` are added); ``observed_data`` has no sample
    dims (``sampled=False``).
    """

    data: dict[str, np.ndarray] = field(default_factory=dict)
    dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    sampled: bool = True

    def add(self, name: str, value: Any, dims: Sequence[str]) -> None:
        value = np.asarray(value)
        lead = len(SAMPLE_DIMS) if self.sampled else 0
        if value.ndim != lead + len(dims):
            raise ConfigError(
                f"expected {name!r} with {lead} sample dims and dims {tuple(dims)}, got shape {value.shape}"
            )
        self.data[name] = value
        self.dims[name] = tuple(dims)


def group_dataset(group: Group, coords: Mapping[str, Any] | None = None) -> Any:
    """An :class:`xarray.Dataset` of ``group`` (integer coordinates unless given in ``coords``)."""
    import xarray as xr

    lead = SAMPLE_DIMS if group.sampled else ()
    variables = {}
    used: dict[str, int] = {}
    for name, value in group.data.items():
        dims = lead + group.dims[name]
        for d, n in zip(dims, value.shape):
            if used.setdefault(d, n) != n:
                raise ConfigError(f"dimension {d!r} has sizes {used[d]} and {n}; give the variables distinct dims")
        variables[name] = (dims, value)
    coord_values = {}
    for d, n in used.items():
        given = None if coords is None else coords.get(d)
        if given is not None and len(given) != n:
            raise ConfigError(f"expected {n} coordinates for dim {d!r}, got {len(given)}")
        coord_values[d] = np.asarray(given) if given is not None else np.arange(n)
    return xr.Dataset(variables, coords=coord_values, attrs=dict(group.attrs))


def to_arviz(groups: Mapping[str, Group], coords: Mapping[str, Any] | None = None, *,
             backend: Backend = "auto") -> Any:
    """Wrap numpy groups in ArviZ's container.

    Args:
        groups: group name -> :class:`Group` (names from :data:`GROUPS`; empty groups dropped).
        coords: coordinate values per dim name (integers by default).
        backend: ``"inference_data"`` (ArviZ 0.x), ``"datatree"`` (ArviZ 1.x, plain
            :class:`xarray.DataTree`), or ``"auto"``: the one of the installed ArviZ.

    Returns:
        :class:`arviz.InferenceData` or :class:`xarray.DataTree`.
    """
    if backend not in ("auto", "inference_data", "datatree"):
        raise ConfigError(f"expected backend 'auto', 'inference_data' or 'datatree', got {backend!r}")
    datasets = {name: group_dataset(g, coords) for name, g in groups.items() if g.data}
    if backend == "auto":
        backend = "datatree" if ARVIZ_MAJOR >= 1 else "inference_data"
    if backend == "datatree":
        import xarray as xr

        return xr.DataTree.from_dict({f"/{name}": ds for name, ds in datasets.items()})
    az = import_arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "observed_data has no chain dim" and the like
        return az.InferenceData(**datasets)
