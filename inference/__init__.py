"""vi-models inference: one engine for every model (how we fit and judge).

Subpackages, each importing only those listed after it and :mod:`guides` / :mod:`vi_models`:
``cli`` (the command) -> ``em``, ``diagnostics``, ``divergences``, ``data`` -> ``engine``.

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

from vi_models.diffusion.objectives import DiffusionObjective  # noqa: E402
from vi_models.errors import (  # noqa: E402
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
from .diagnostics import (  # noqa: E402
    LooResult,
    PsisReport,
    compare,
    inference_data_groups,
    loo,
    pareto_smooth,
    psis_khat,
    to_inference_data,
    vi_loo,
)
from .divergences import (  # noqa: E402
    F_DIVERGENCES,
    AdversarialResult,
    donsker_varadhan_bound,
    f_divergence,
    f_dual_bound,
    fit_adversarial,
    js_divergence,
    js_dual_bound,
    kl_divergence,
    mmd,
    optimal_discriminator,
    reverse_kl,
    sliced_wasserstein,
    wasserstein_1d,
)
from .em import (  # noqa: E402
    EMResult,
    assignment_probs,
    fit_em,
    fit_em_average,
    fit_mixture_denoiser,
    initialize_flow,
    select_mixture,
)
from .engine import (  # noqa: E402
    LOSS_NAMES,
    DiffusionELBO,
    RecordedELBO,
    ElboTerms,
    FitResult,
    GaussianNoise,
    bits_per_dim,
    elbo_from_terms,
    elbo_terms,
    fit,
    fit_diffusion,
    linear_annealing,
    log_importance_weights,
    log_likelihood,
    logmeanexp,
    make_elbo,
)

__all__ = [
    "fit",
    "FitResult",
    "GaussianNoise",
    "fit_em",
    "fit_em_average",
    "select_mixture",
    "fit_mixture_denoiser",
    "initialize_flow",
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
    "RecordedELBO",
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

