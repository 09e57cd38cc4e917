"""Data: the bundled sets, users' files, and the 2-D toy densities with exact log-densities.

- :mod:`.datasets`: :func:`load_dataset`, :class:`DataBundle` (splits, dequantisation, bits/dim);
- :mod:`.files`: readers of ``.npy``, ``.npz``, ``.csv`` and MNIST-format IDX files;
- :mod:`.toy2d` (with :mod:`.toy2d_base`): moons, circles, eight Gaussians, ... as densities.
"""

from .datasets import DataBundle, available_datasets, load_dataset
from .files import read_csv, read_idx, read_npy, read_npz
from .toy2d import TOY_DENSITIES, ToyDensity, get_toy_density

__all__ = [
    "load_dataset",
    "DataBundle",
    "available_datasets",
    "read_npy",
    "read_npz",
    "read_csv",
    "read_idx",
    "get_toy_density",
    "ToyDensity",
    "TOY_DENSITIES",
]
