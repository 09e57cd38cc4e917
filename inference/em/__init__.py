"""Expectation-maximisation whose E-step is Pyro's discrete enumeration (Dempster et al. 1977).

- :mod:`.loop`: :func:`fit_em` (closed-form or generalised M-step); :mod:`.result`:
  :class:`EMResult`, :func:`assignment_probs`; :mod:`.steps`: the E-step and the generalised M-step;
- :mod:`.streaming`: EM by sufficient statistics, summed over chunks and all-reduced across
  ``torchrun`` ranks; :mod:`.sources`: the rows it reads (a tensor, a memory-mapped ``.npy``, an
  iterable of chunks); :mod:`.degenerate`: the identical, empty and collapsed components of a fit;
- :mod:`.average`: :func:`fit_em_average`, the average of several EM fits;
- :mod:`.bases`: mixture parts of other families fitted by EM (:func:`select_mixture`,
  :func:`fit_mixture_denoiser`, :func:`initialize_flow`).
"""

from .average import fit_em_average
from .bases import fit_mixture_denoiser, initialize_flow, select_mixture
from .loop import fit_em
from .result import EMResult, assignment_probs

__all__ = [
    "fit_em",
    "EMResult",
    "assignment_probs",
    "fit_em_average",
    "select_mixture",
    "fit_mixture_denoiser",
    "initialize_flow",
]
