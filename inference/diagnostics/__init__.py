"""Judging a fit: ArviZ InferenceData, PSIS k-hat, PSIS-LOO, model comparison, plots.

- :mod:`.inference_data`: :func:`to_inference_data` for any fit; :mod:`.family_groups` and
  :mod:`.posterior_draws`: its groups per model family; :mod:`.arviz_io`: the ArviZ boundary;
- :mod:`.psis`: :func:`pareto_smooth`, :func:`psis_khat`; :mod:`.loo`: :func:`loo`, :func:`vi_loo`,
  :func:`compare`;
- :mod:`.plots`: loss curves, samples, reconstructions, k-hat, mixture ellipses, trajectories.
"""

from .arviz_io import import_arviz
from .inference_data import inference_data_groups, to_inference_data
from .loo import LooResult, compare, loo, vi_loo
from .plots import (
    image_grid,
    plot_diffusion_trajectories,
    plot_elbo_terms,
    plot_history,
    plot_khat,
    plot_latent_scatter,
    plot_mixture_ellipses,
    plot_reconstructions,
    plot_samples,
    plot_vlb_terms,
)
from .psis import PsisReport, pareto_smooth, psis_khat

__all__ = [
    "to_inference_data",
    "inference_data_groups",
    "import_arviz",
    "psis_khat",
    "PsisReport",
    "pareto_smooth",
    "loo",
    "vi_loo",
    "LooResult",
    "compare",
    "plot_history",
    "image_grid",
    "plot_samples",
    "plot_reconstructions",
    "plot_khat",
    "plot_elbo_terms",
    "plot_vlb_terms",
    "plot_mixture_ellipses",
    "plot_latent_scatter",
    "plot_diffusion_trajectories",
]
