"""vi-models inference: one engine for every model.

- :func:`fit`: stochastic variational inference (Trace_ELBO, analytic-KL, enumeration, IWAE)
  for any Pyro model/guide pair, with checkpoints, resume, early stopping and progress bars.
- :func:`log_likelihood`: per-observation log p(x) by importance weighting or enumeration;
  :func:`bits_per_dim` turns it into the figure papers report.
- :func:`load_dataset`: bundled data (digits, 2-D toy densities with exact log-densities)
  and user files.
"""

import pyro as _pyro

# Every PyroModule owns its parameters (state_dict, .to(device), two models side by side in one
# notebook) instead of sharing them by name through Pyro's global param store.
_pyro.settings.set(module_local_params=True)

from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    ConvergenceWarning,
    DataError,
    DegenerateFitWarning,
    NonFiniteLossError,
    RunDirectoryError,
    VIModelsError,
)
from .data import DataBundle, available_datasets, load_dataset  # noqa: E402
from .em import EMResult, assignment_probs, fit_em  # noqa: E402
from .em_average import fit_em_average  # noqa: E402
from .fit import FitResult, fit  # noqa: E402
from .batches import GaussianNoise  # noqa: E402
from .diffusion_losses import DiffusionELBO, DiffusionObjective, fit_diffusion  # noqa: E402
from .elbo_terms import ElboTerms, elbo_from_terms, elbo_terms  # noqa: E402
from .adversarial import AdversarialResult, fit_adversarial, optimal_discriminator  # noqa: E402
from .diagnostics import inference_data_groups, to_inference_data  # noqa: E402
from .divergences import (  # noqa: E402
    F_DIVERGENCES,
    donsker_varadhan_bound,
    f_divergence,
    f_dual_bound,
    js_divergence,
    js_dual_bound,
    kl_divergence,
    mmd,
    reverse_kl,
    sliced_wasserstein,
    wasserstein_1d,
)
from .likelihood import bits_per_dim, log_importance_weights, log_likelihood, logmeanexp  # noqa: E402
from .losses import LOSS_NAMES, linear_annealing, make_elbo  # noqa: E402
from .psis import LooResult, PsisReport, compare, loo, pareto_smooth, psis_khat, vi_loo  # noqa: E402

__all__ = [
    "fit",
    "FitResult",
    "GaussianNoise",
    "fit_em",
    "fit_em_average",
    "EMResult",
    "assignment_probs",
    "load_dataset",
    "DataBundle",
    "available_datasets",
    "log_likelihood",
    "log_importance_weights",
    "elbo_terms",
    "DiffusionELBO",
    "DiffusionObjective",
    "fit_diffusion",
    "elbo_from_terms",
    "ElboTerms",
    "bits_per_dim",
    "logmeanexp",
    "make_elbo",
    "to_inference_data",
    "inference_data_groups",
    "psis_khat",
    "PsisReport",
    "pareto_smooth",
    "loo",
    "vi_loo",
    "LooResult",
    "compare",
    "fit_adversarial",
    "AdversarialResult",
    "optimal_discriminator",
    "kl_divergence",
    "reverse_kl",
    "js_divergence",
    "f_divergence",
    "f_dual_bound",
    "donsker_varadhan_bound",
    "js_dual_bound",
    "wasserstein_1d",
    "sliced_wasserstein",
    "mmd",
    "F_DIVERGENCES",
    "linear_annealing",
    "LOSS_NAMES",
    "VIModelsError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "RunDirectoryError",
    "NonFiniteLossError",
    "ConvergenceWarning",
    "DegenerateFitWarning",
]

