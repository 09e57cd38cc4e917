"""Figures for fitted models: loss and ELBO-term curves, DDPM bound terms, sample grids,
reconstructions, mixture ellipses, latent scatter, diffusion trajectories, PSIS k-hat.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (safe on the
Agg backend, on servers and in tests); the CLI saves them in the run directory, notebooks
display them. The newer functions take ``ax=None`` to draw into an existing axes, validate
their inputs (:class:`inference.errors.DataError` with the expected and the given shapes) and
never modify them.

- :mod:`.curves`: :func:`plot_history`, :func:`plot_khat`, :func:`plot_elbo_terms`,
  :func:`plot_vlb_terms` (quantities against epochs, observations or timesteps);
- :mod:`.samples`: :func:`image_grid`, :func:`plot_samples`, :func:`plot_reconstructions`,
  :func:`plot_latent_scatter`, :func:`plot_diffusion_trajectories` (data, samples, latent codes);
- :mod:`.mixtures`: :func:`plot_mixture_ellipses`;
- :mod:`._figures`: the figure, axes and input helpers they share.
"""

from .curves import plot_elbo_terms, plot_history, plot_khat, plot_vlb_terms
from .mixtures import plot_mixture_ellipses
from .samples import (
    image_grid,
    plot_diffusion_trajectories,
    plot_latent_scatter,
    plot_reconstructions,
    plot_samples,
)

__all__ = [
    "image_grid",
    "plot_diffusion_trajectories",
    "plot_elbo_terms",
    "plot_history",
    "plot_khat",
    "plot_latent_scatter",
    "plot_mixture_ellipses",
    "plot_reconstructions",
    "plot_samples",
    "plot_vlb_terms",
]
