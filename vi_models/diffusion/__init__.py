"""Denoising diffusion (DDPM) as a hierarchical latent-variable model (Ho et al. 2020).

The learned reverse chain p_theta(x_{t-1} | x_t) is the model (:class:`DDPM`); the fixed forward
process q(x_t | x_{t-1}) is its guide (:class:`guides.ForwardDiffusion`). Modules:

- :mod:`.ddpm`: the model; :mod:`.predictions`: eps / x0 / v and the reverse-step moments;
- :mod:`.schedules`: beta_t, alphabar_t and the posterior q(x_{t-1} | x_t, x_0);
- :mod:`.objectives`: which bound the pair computes (L_VLB, L_simple, hybrid);
- :mod:`.bounds`: the per-step terms; :mod:`.sampling`: ancestral and DDIM samplers;
  :mod:`.ode`: the exact likelihood by the probability-flow ODE;
- :mod:`.nets`: the noise networks (:class:`TimeMLP`, :class:`UNet`); :mod:`.ema`: weight averages;
- :mod:`.denoisers`: closed-form noise predictors (:class:`OptimalDenoiser`,
  :class:`GaussianMixtureDenoiser`); :mod:`.sites`: the site names model and guide share.
"""

from .ddpm import DDPM
from .denoisers import GaussianMixtureDenoiser, OptimalDenoiser
from .nets import TimeMLP, UNet
from .objectives import OBJECTIVES, DiffusionObjective, resolve_objective
from .ode import probability_flow_log_prob
from .schedules import NoiseSchedule

__all__ = [
    "DDPM",
    "NoiseSchedule",
    "DiffusionObjective",
    "OBJECTIVES",
    "resolve_objective",
    "TimeMLP",
    "UNet",
    "OptimalDenoiser",
    "GaussianMixtureDenoiser",
    "probability_flow_log_prob",
]
