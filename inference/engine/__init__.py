"""The engine: one SVI loop for every model/guide pair, its losses, batches, checkpoints and bounds.

- :mod:`.fit`: :func:`fit` (SVI with checkpoints, resume, early stopping) and :class:`FitResult`;
  :mod:`.resume`: the loop state its checkpoints hold; :mod:`.full_size`: plates scaled to N;
  :mod:`.data_parallel`: its step on the ranks ``torchrun`` starts; :mod:`.distributed`: the exchanges;
- :mod:`.losses`: the named ELBOs (:func:`make_elbo`), KL annealing; :mod:`.diffusion_elbo`:
  :class:`DiffusionELBO` and :func:`fit_diffusion`; :mod:`.traced_loss`: the recorded loss;
- :mod:`.batches`: minibatches on the data's device, :class:`GaussianNoise`;
- :mod:`.checkpoint`: atomic, weights-only checkpoints; :mod:`.convergence`: the loss-history verdict;
- :mod:`.likelihood`: per-observation log p(x) (IWAE, enumeration), bits/dim;
  :mod:`.elbo_terms`: the ELBO's reconstruction and KL terms.
"""

from .batches import GaussianNoise
from .convergence import ConvergenceReport, elbo_converged
from .diffusion_elbo import DiffusionELBO, fit_diffusion
from .elbo_terms import ElboTerms, elbo_from_terms, elbo_terms
from .fit import FitResult, fit
from .likelihood import bits_per_dim, log_importance_weights, log_likelihood, logmeanexp
from .losses import LOSS_NAMES, linear_annealing, make_elbo
from .recorded import RecordedELBO

__all__ = [
    "fit",
    "FitResult",
    "GaussianNoise",
    "make_elbo",
    "RecordedELBO",
    "LOSS_NAMES",
    "linear_annealing",
    "DiffusionELBO",
    "fit_diffusion",
    "log_likelihood",
    "log_importance_weights",
    "bits_per_dim",
    "logmeanexp",
    "elbo_terms",
    "elbo_from_terms",
    "ElboTerms",
    "ConvergenceReport",
    "elbo_converged",
]
