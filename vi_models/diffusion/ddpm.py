r"""Denoising diffusion probabilistic model (Ho et al. 2020) as a hierarchical Pyro model.

Generative story (the reverse process), on standardised data y = (x - loc) / scale:

.. code-block:: text

    x_T ~ p(x_T) = N(0, I)
    x_{t-1} | x_t ~ p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I),  t = T, ..., 2   (eq. 1)
    x_0 | x_1     ~ N(mu_theta(x_1, 1), sigma_1^2 I)                                             (L_0)
    mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(alpha_t)        (eq. 11)

with sigma_t^2 fixed (:class:`NoiseSchedule`). The network predicts the noise eps (``"eps"``),
the data x_0 (``"x0"``) or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (``"v"``, Salimans & Ho
2022); all three are turned into eps_theta and mu_theta, so every objective sees the same
quantities. L_0 is a Gaussian density of x_0 in the data's units: for dequantised images
(x = (k + u) / L) it is a continuous density of the dequantised data, and
:meth:`inference.data.DataBundle.bits_per_dim` turns it into a bound on the discrete
bits/dim.

The guide is :class:`guides.ForwardDiffusion`, the fixed forward process q(x_{1:T} | x_0).
The pair's negative ELBO is L_VLB (eq. 5, THEORY T18); :mod:`inference.engine.diffusion_elbo`
lists the objectives (exact L_VLB, its time-sampled unbiased estimate, L_simple, hybrid) that
:func:`inference.fit` trains by, all through the sites of :mod:`vi_models.diffusion.sites`.

Beyond the Pyro model: :meth:`DDPM.vlb` (the bound per observation, analytic KLs),
:meth:`DDPM.log_prob` (exact log-likelihood by the probability-flow ODE, THEORY T21),
:meth:`DDPM.sample` (ancestral sampling, Algorithm 2, or DDIM), :meth:`DDPM.simple_loss`, and
an optional exponential moving average (EMA) of the weights.

References
----------
J. Ho, A. Jain and P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
J. Song, C. Meng and S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021.
T. Salimans and J. Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor, nn

from vi_models._validation import check_choice, check_positive_int, resolve_device
from vi_models.diffusion.objectives import (
    DiffusionObjective,
    ObjectiveSpec,
    resolve_objective,
)
from vi_models.errors import ConfigError
from vi_models.nets import check_batch, resolve_data_shape
from vi_models.sites import DATA_PLATE

from .ema import NetworkEMA
from .methods import DiffusionMethods
from .nets import Reshape, TimeMLP, UNet
from .predictions import NoisePredictions
from .schedules import (
    NoiseSchedule,
    ScheduleSpec,
    VarianceName,
    check_shared_schedule,
)
from .sites import (
    OBSERVED,
    PREVIOUS,
    PRIOR,
    SIMPLE_OFFSET,
    STATE,
    TIME,
    TIME_PLATE,
    TimeStep,
    chain_site,
)

__all__ = ["DDPM", "Prediction"]

Prediction = Literal["eps", "x0", "v"]
_PREDICTIONS: Final = ("eps", "x0", "v")


class DDPM(DiffusionMethods, NetworkEMA, NoisePredictions, PyroModule):
    """The reverse process of a DDPM, ``p(x_T) prod_t p_theta(x_{t-1} | x_t)``, as a Pyro model.

    See the module docstring for the generative story; pair it with
    ``guides.ForwardDiffusion(model.schedule)`` and fit it with :func:`inference.fit` or
    :func:`inference.engine.diffusion_elbo.fit_diffusion`.

    Parameters
    ----------
    data_shape
        ``D`` for vectors ``(B, D)``, or a shape such as ``(8, 8)`` for images ``(B, 8, 8)``.
    T
        Number of diffusion steps.
    schedule
        ``"linear"`` (Ho et al.; T >= 51), ``"cosine"`` (Nichol & Dhariwal), the betas, or a
        ready :class:`NoiseSchedule` to share (e.g. with an :class:`OptimalDenoiser`); T,
        variance and the standardisation then come from it (passing different ones is an error).
    prediction
        What the network predicts: ``"eps"``, ``"x0"`` or ``"v"``.
    variance
        sigma_t^2 = beta~_t (``"fixed_small"``) or beta_t (``"fixed_large"``).
    network
        A module ``(x_t (..., *data_shape), t (...)) -> (..., *data_shape)``; ``t`` is real
        (integer steps in training, real t on the ODE). Default: :class:`TimeMLP` for vectors,
        :class:`UNet` for images (``data_shape`` of length 2 or ``image_shape`` given).
    image_shape
        ``(H, W)`` to view flat data ``(B, H * W)`` as images for the default U-Net.
    data_loc, data_scale
        Standardisation y = (x - data_loc) / data_scale the diffusion acts on (default: none;
        ``0.5, 0.5`` for images in [0, 1], the mean and std for other data).
    ema_decay
        Keep an exponential moving average of the network's weights with this decay (e.g.
        0.999), used by :meth:`sample`, :meth:`vlb` and :meth:`log_prob` by default.
    base
        A fixed closed-form noise predictor ``(y_t, t) -> eps`` on the same schedule, such as
        :class:`GaussianMixtureDenoiser`: the network then predicts the residual (its output
        is added to the base's, converted to ``prediction``). The default networks start with
        a zero output layer, so the untrained model is the base's density.
    hidden_dim, num_blocks, unet_channels
        Sizes of the default networks.
    device, dtype
        Where and in which floating dtype parameters and tables live.

    Attributes
    ----------
    schedule : NoiseSchedule
        The fixed tables (give it to :class:`guides.ForwardDiffusion`).
    network : nn.Module
        The trained network; ``ema_network`` holds its moving average when ``ema_decay`` is set.

    Raises
    ------
    ConfigError
        Unknown option, T too small for the schedule, ``ema_decay`` outside (0, 1).

    Examples
    --------
    >>> model = DDPM(2, T=100, hidden_dim=16, num_blocks=1)
    >>> model.sample(3, sampler="ddim", steps=5).shape
    torch.Size([3, 2])
    >>> model.vlb(torch.randn(4, 2)).shape
    torch.Size([4])
    """

    def __init__(
        self,
        data_shape: int | tuple[int, ...],
        T: int = 1000,
        schedule: ScheduleSpec | NoiseSchedule = "linear",
        prediction: Prediction = "eps",
        variance: VarianceName = "fixed_small",
        network: nn.Module | None = None,
        *,
        image_shape: tuple[int, int] | None = None,
        data_loc: float | Tensor = 0.0,
        data_scale: float | Tensor = 1.0,
        ema_decay: float | None = None,
        base: nn.Module | None = None,
        hidden_dim: int = 128,
        num_blocks: int = 3,
        unet_channels: Sequence[int] = (32, 64),
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.prediction = check_choice(prediction, "prediction", _PREDICTIONS)
        self._data_shape, self.image_shape = resolve_data_shape(data_shape, image_shape, conv=False, what="")
        factory = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}
        if isinstance(schedule, NoiseSchedule):
            check_shared_schedule(schedule, T, variance, data_loc, data_scale)
            factory = {"device": schedule.betas.device, "dtype": schedule.betas.dtype}
        else:
            schedule = NoiseSchedule(T, schedule, variance, data_loc=data_loc, data_scale=data_scale, **factory)
        self.schedule = schedule
        self._num_steps = schedule.num_steps
        if network is None:
            if self.image_shape is not None:
                network = UNet(self.image_shape, unet_channels, **factory)
                if tuple(self._data_shape) != self.image_shape:
                    network = Reshape(network, self._data_shape, self.image_shape)
            else:
                network = TimeMLP(self._data_shape.numel(), hidden_dim, num_blocks, **factory)
                if len(self._data_shape) != 1:
                    network = Reshape(network, self._data_shape, (self._data_shape.numel(),))
        elif not isinstance(network, nn.Module):
            raise ConfigError(f"expected network as an nn.Module (x_t, t) -> prediction, got {type(network).__name__}")
        self.network = network
        self._modules["base"] = None
        self.set_base(base)

        # c_t of L_{t-1} = w_t ||eps - eps_theta||^2 + c_t (T19): the value of the term at a perfect
        # eps_theta; for t = 1 the Gaussian decoder's normaliser in the data's units.
        s, d = self.schedule, self._data_shape.numel()
        ratio = (s.posterior_variance / torch.where(s.reverse_variance > 0, s.reverse_variance, 1.0)).to(torch.float64)
        offsets = 0.5 * d * (ratio - 1 - torch.log(ratio.clamp_min(1e-300)))
        offsets[0] = 0.0
        offsets[1] = 0.5 * d * math.log(2 * math.pi * float(s.reverse_variance[1])) + float(
            s.log_data_scale(self._data_shape)
        )
        self.register_buffer("simple_offsets", offsets.to(**factory), persistent=False)

        self._init_ema(ema_decay, factory["device"])

    # ------------------------------------------------------------------ properties

    @property
    def schedule(self) -> NoiseSchedule:
        """The fixed tables and standardisation (share them with :class:`guides.ForwardDiffusion`)."""
        # A class property is found before PyroModule.__getattr__, which would announce the
        # (absent) parameters of the schedule to Pyro's handlers on every access.
        return self._modules["schedule"]

    @property
    def base(self) -> nn.Module | None:
        """The fixed noise predictor the network's output is added to (``None``: none)."""
        return self._modules["base"]

    def set_base(self, base: nn.Module | None) -> None:
        """Set (or remove, with ``None``) the fixed noise predictor the network's output is added to.

        Raises
        ------
        ConfigError
            ``base`` not a module, on another schedule, or for another data shape.
        """
        if base is not None:
            if not isinstance(base, nn.Module):
                raise ConfigError(f"expected base as an nn.Module (y_t, t) -> eps such as a GaussianMixtureDenoiser, "
                                  f"got {type(base).__name__}")
            if getattr(base, "schedule", self.schedule) is not self.schedule:
                raise ConfigError("expected the base on the model's schedule: build it with model.schedule "
                                  "(or pass schedule= the base's)")
            shape = getattr(base, "data_shape", None)
            if shape is not None and torch.Size(shape) != self._data_shape:
                raise ConfigError(f"expected a base for data of shape {tuple(self._data_shape)}, got one for "
                                  f"{tuple(shape)}")
        self._modules["base"] = base  # fixed buffers; no Pyro parameters to announce

    @property
    def data_shape(self) -> torch.Size:
        """Event shape of one observation, e.g. ``(2,)`` or ``(8, 8)``."""
        return self._data_shape

    @property
    def event_dim(self) -> int:
        """Number of event dimensions: ``len(data_shape)``."""
        return len(self._data_shape)

    @property
    def is_discrete(self) -> bool:
        """``False``: a density on R^D (dequantised images report the bound convention of bits/dim)."""
        return False

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self._num_steps

    def extra_repr(self) -> str:
        return f"data_shape={tuple(self._data_shape)}, prediction={self.prediction!r}, ema_decay={self.ema_decay}"

    def decoder(self, mean: Tensor, variance: Tensor) -> dist.Distribution:
        """p_theta(x_0 | x_1) in the data's units: N(loc + scale mu, scale^2 sigma_1^2), event ``data_shape``."""
        s = self.schedule
        return dist.Normal(s.denormalise(mean), s.data_scale * variance.sqrt()).to_event(self.event_dim)

    # ------------------------------------------------------------------ the Pyro model

    def _check_data(self, x: Any, name: str = "x") -> Tensor:
        return check_batch(x, self._data_shape, like=self.schedule.betas, name=name)

    def forward(
        self,
        x: Tensor | None = None,
        *,
        num_samples: int | None = None,
        objective: ObjectiveSpec = None,
        announce_params: bool = True,
    ) -> Tensor:
        """The Pyro model: the reverse chain, or the per-step sites of a training objective.

        With data ``x`` the sites depend on ``objective`` (passed by
        :class:`inference.engine.diffusion_elbo.DiffusionELBO`; default ``"vlb_sampled"``), see
        :mod:`vi_models.diffusion.sites`. Without data it runs the chain x_T -> ... -> x_0
        (prior predictive; sites ``chain_site(t)`` and ``OBSERVED``).

        Parameters
        ----------
        x
            Data ``(B, *data_shape)``, or ``None`` to sample.
        num_samples
            ``B`` when ``x`` is ``None``.
        objective
            A :class:`~vi_models.diffusion.DiffusionObjective` or its name.
        announce_params
            Issue a ``pyro.param`` statement per network parameter (so that SVI's optimizers and
            Pyro's ELBOs see them). :class:`~inference.engine.diffusion_elbo.DiffusionELBO` turns it
            off when no handler collects parameters: it back-propagates without param sites.

        Returns
        -------
        Tensor
            ``x``, or the sampled x_0 ``(num_samples, *data_shape)`` in the data's units.

        Raises
        ------
        ConfigError
            Both or neither of ``x`` and ``num_samples``; unknown objective.
        DataError
            ``x`` of the wrong shape, dtype or device, or non-finite.
        """
        if (x is None) == (num_samples is None):
            raise ConfigError(
                "expected either data x of shape (B, *data_shape) or num_samples (prior sampling), "
                f"got {'both' if x is not None else 'neither'}; pass exactly one"
            )
        obj = resolve_objective(objective)
        if announce_params:
            self.network  # noqa: B018 - PyroModule.__getattr__ issues pyro.module("network", ...)
        if x is None:
            n = check_positive_int(num_samples, "num_samples")
            with pyro.plate(DATA_PLATE, n, dim=-1):
                return self._chain(None)
        self._check_data(x)
        y0 = self.schedule.normalise(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            if obj.name == "chain":
                return self._chain(x)
            if obj.samples_time:
                t = pyro.sample(TIME, TimeStep(self.T, device=x.device))
                self._step_sites(x, y0, t, obj)
            else:
                with pyro.plate(TIME_PLATE, self.T, dim=-2):
                    t = torch.arange(1, self.T + 1, device=x.device).unsqueeze(-1)  # (T, 1)
                    self._step_sites(x, y0, t, obj)
            if obj.vlb_coef > 0:
                # L_T = KL(q(x_T | x_0) || N(0, I)): no parameters, kept so the loss is the bound.
                with poutine.scale(scale=obj.vlb_coef):
                    pyro.sample(PRIOR, dist.Normal(torch.zeros_like(y0), 1.0).to_event(self.event_dim))
        return x

    def _step_sites(self, x: Tensor, y0: Tensor, t: Tensor, obj: DiffusionObjective) -> None:
        """Sites of L_{t-1} (t >= 2) and L_0 (t = 1) for steps ``t``: one network call."""
        s, ev = self.schedule, self.event_dim
        mean_q = s.gather(s.sqrt_alphas_cumprod, t, ev) * y0
        std_q = s.gather(s.sqrt_one_minus_alphas_cumprod, t, ev).expand_as(mean_q)
        with poutine.mask(mask=False):  # x_t only conditions the next site (see diffusion_sites)
            y_t = pyro.sample(STATE, dist.Normal(mean_q, std_q).to_event(ev))
        steps = t.expand(y_t.shape[: y_t.dim() - ev])
        mean, var, _ = self.p_mean_variance(y_t, steps)
        weights = s.loss_weights[steps]
        later = steps > 1
        with poutine.scale(scale=obj.step_scale(weights, self.T)):
            with poutine.mask(mask=later):
                pyro.sample(PREVIOUS, dist.Normal(mean, var.sqrt().expand_as(mean)).to_event(ev))
            with poutine.mask(mask=~later):
                pyro.sample(OBSERVED, self.decoder(mean, var), obs=x)
        if obj.simple_coef > 0:
            pyro.factor(SIMPLE_OFFSET, obj.offset_scale(weights, self.T) * self.simple_offsets[steps])

    def _chain(self, x: Tensor | None) -> Tensor:
        """x_T ~ N(0, I), then x_{t-1} ~ p_theta(x_{t-1} | x_t) down to x_0 (observed at ``x``)."""
        ev = self.event_dim
        zeros = torch.zeros(self._data_shape, device=self.schedule.betas.device, dtype=self.schedule.betas.dtype)
        y = pyro.sample(chain_site(self.T), dist.Normal(zeros, 1.0).to_event(ev))
        for t in range(self.T, 0, -1):
            steps = torch.full(y.shape[: y.dim() - ev], t, device=y.device, dtype=torch.long)
            mean, var, _ = self.p_mean_variance(y, steps)
            if t > 1:
                y = pyro.sample(chain_site(t - 1), dist.Normal(mean, var.sqrt().expand_as(mean)).to_event(ev))
        return pyro.sample(OBSERVED, self.decoder(mean, var), obs=x)
