"""Kernel density estimation p(x) = (1/N) sum_i K_h(x - x_i), as scikit-learn's ``KernelDensity``.

- :mod:`.kde`: :class:`KernelDensity` (bandwidth by rule or cross-validation);
- :mod:`.kernels`: the kernels and their normalising constants.
"""

from .kde import KernelDensity
from .kernels import KERNELS, log_kernel_normalizer

__all__ = ["KernelDensity", "KERNELS", "log_kernel_normalizer"]
