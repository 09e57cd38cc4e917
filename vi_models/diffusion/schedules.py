r"""Noise schedules of a DDPM and the closed forms of its forward process.

Forward process (Ho et al. 2020, eq. 2 and eq. 4; THEORY T14), for t = 1, ..., T:

.. code-block:: text

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),    alpha_t = 1 - beta_t,
                                                                abar_t = prod_{s<=t} alpha_s

Posterior of one step (eq. 6-7; THEORY T17):

.. code-block:: text

    q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)
    mu~_t   = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
    beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t

Every table is indexed by the paper's t: entry 0 is the data (beta_0 = 0, abar_0 = 1) and
entry t is step t, so ``alphas_cumprod[t - 1]`` is abar_{t-1} as written. The tables are
computed in float64 and registered as (non-persistent) buffers in the module's dtype.

The reverse variances sigma_t^2 of the model are part of the schedule because they are
fixed: ``"fixed_small"`` sigma_t^2 = beta~_t, ``"fixed_large"`` sigma_t^2 = beta_t (Ho et
al., Sec. 3.2). beta~_1 = 0, so both use sigma_1^2 = beta~_2 at t = 1 (the clipping of Ho et
al.'s code, kept by Nichol & Dhariwal for the decoder L_0).

The process acts on standardised data y = (x - data_loc) / data_scale (for instance
``data_loc = data_scale = 0.5`` maps images in [0, 1] to [-1, 1], Ho et al. Sec. 3.3); the
affine map is part of the schedule so that the model and its guide share it, and densities
in x carry the Jacobian -sum log data_scale.

For the probability-flow ODE the schedule is extended to continuous t in [0, T] by
interpolating log abar linearly between integers (:meth:`NoiseSchedule.alphas_cumprod_at`):
the continuous-time marginals then equal the discrete ones at every integer t.

References
----------
J. Ho, A. Jain and P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal, Union

import torch
from torch import Tensor, nn

from vi_models._validation import check_choice, check_positive_int, resolve_device
from vi_models.errors import ConfigError, DataError

__all__ = [
    "NoiseSchedule",
    "ScheduleName",
    "VarianceName",
    "check_shared_schedule",
    "cosine_beta_schedule",
    "linear_beta_schedule",
]

ScheduleName = Literal["linear", "cosine"]
VarianceName = Literal["fixed_small", "fixed_large"]
_SCHEDULES: Final = ("linear", "cosine")
_VARIANCES: Final = ("fixed_small", "fixed_large")
_F64 = torch.float64
#: What ``schedule=`` accepts: a name, or the betas (beta_1, ..., beta_T) themselves.
ScheduleSpec = Union[ScheduleName, Sequence[float], Tensor]  # noqa: UP007 (a runtime alias)


def linear_beta_schedule(num_steps: int) -> Tensor:
    """beta_1, ..., beta_T evenly spaced from 1e-4 to 0.02 for T = 1000 (Ho et al., Sec. 4).

    For other T both ends are scaled by 1000 / T (Nichol & Dhariwal's code), which keeps
    abar_T near 4e-5, so the prior matching term L_T stays negligible.

    Parameters
    ----------
    num_steps
        T >= 51 (below that beta_T = 20 / T would reach 0.4 and grow past 1).

    Returns
    -------
    Tensor
        Shape ``(T,)``, float64.

    Raises
    ------
    ConfigError
        T too small for a linear schedule.
    """
    num_steps = check_positive_int(num_steps, "T")
    if num_steps < 51:
        raise ConfigError(
            f"expected T >= 51 for schedule='linear' (beta_T = 20 / T), got T={num_steps}; "
            "use schedule='cosine' for short chains, or pass the betas yourself"
        )
    scale = 1000.0 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=_F64)


def cosine_beta_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021), eq. (17): abar_t = f(t) / f(0).

    ``f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2``, ``beta_t = 1 - abar_t / abar_{t-1}``
    clipped to ``max_beta`` (their Sec. 3.2) so the last step is not singular.

    Returns
    -------
    Tensor
        Shape ``(T,)``, float64.
    """
    num_steps = check_positive_int(num_steps, "T")
    t = torch.arange(num_steps + 1, dtype=_F64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)


def _check_betas(betas: Tensor) -> Tensor:
    if betas.dim() != 1 or betas.numel() == 0:
        raise ConfigError(f"expected betas of shape (T,), got {tuple(betas.shape)}")
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ConfigError(
            f"expected every beta_t in (0, 1), got values in [{float(betas.min()):.3g}, {float(betas.max()):.3g}]"
        )
    return betas


class NoiseSchedule(nn.Module):
    """The fixed numbers of a DDPM: beta_t, abar_t, posterior coefficients, reverse variances.

    Parameters
    ----------
    T
        Number of diffusion steps (ignored when ``schedule`` is a tensor of betas).
    schedule
        ``"linear"`` (Ho et al.), ``"cosine"`` (Nichol & Dhariwal), or the betas
        ``(beta_1, ..., beta_T)`` themselves.
    variance
        Reverse-process variance sigma_t^2: ``"fixed_small"`` (beta~_t) or ``"fixed_large"`` (beta_t).
    data_loc, data_scale
        The standardisation y = (x - data_loc) / data_scale: floats, or tensors broadcastable
        to one observation's shape (``data_scale > 0``).
    device, dtype
        Where and in which dtype the tables live (default CPU, ``torch.get_default_dtype()``).

    Attributes
    ----------
    betas, alphas, alphas_cumprod : Tensor
        Shape ``(T + 1,)``; entry 0 is t = 0 (beta_0 = 0, abar_0 = 1).
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, log_alphas_cumprod : Tensor
        Shape ``(T + 1,)``.
    sqrt_recip_alphas, eps_coefs : Tensor
        1 / sqrt(alpha_t) and beta_t / sqrt(1 - abar_t), the coefficients of eq. (11).
    posterior_variance, posterior_mean_coef1, posterior_mean_coef2 : Tensor
        beta~_t and the x_0, x_t coefficients of mu~_t (eq. 7); entries 0 (and for the
        variance, 1) are 0.
    reverse_variance : Tensor
        sigma_t^2 of the model, shape ``(T + 1,)`` (entry 0 unused).
    loss_weights : Tensor
        w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) of THEORY T19, shape ``(T + 1,)``.

    Raises
    ------
    ConfigError
        Unknown schedule or variance, T out of range, betas outside (0, 1).

    Examples
    --------
    >>> sched = NoiseSchedule(T=1000)
    >>> round(float(sched.alphas_cumprod[-1]), 6)
    4e-05
    """

    def __init__(
        self,
        T: int = 1000,
        schedule: ScheduleName | Sequence[float] | Tensor = "linear",
        variance: VarianceName = "fixed_small",
        data_loc: float | Tensor = 0.0,
        data_scale: float | Tensor = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.variance = check_choice(variance, "variance", _VARIANCES)
        if isinstance(schedule, str):
            self.schedule_name = check_choice(schedule, "schedule", _SCHEDULES)
            betas = linear_beta_schedule(T) if schedule == "linear" else cosine_beta_schedule(T)
        else:
            self.schedule_name = "custom"
            betas = _check_betas(torch.as_tensor(schedule, dtype=_F64).detach().clone())
        if betas.numel() < 2:
            raise ConfigError(f"expected T >= 2 diffusion steps, got {betas.numel()}")
        self.num_steps = betas.numel()
        factory = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}

        # Float64 throughout: 1 - abar_t and abar_{t-1} / abar_t lose digits in float32.
        betas = torch.cat([betas.new_zeros(1), betas])  # (T + 1,), beta_0 = 0
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, 0)  # abar_t, eq. (4)
        prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])  # abar_{t-1}
        one_minus = 1.0 - alphas_cumprod
        safe = torch.where(one_minus > 0, one_minus, torch.ones_like(one_minus))  # t = 0 has 1 - abar_0 = 0
        posterior_variance = torch.where(one_minus > 0, (1.0 - prev) / safe * betas, 0.0)  # beta~_t, eq. (7)
        coef1 = torch.where(one_minus > 0, prev.sqrt() * betas / safe, 0.0)  # x_0 coefficient of mu~_t, eq. (7)
        coef2 = torch.where(one_minus > 0, alphas.sqrt() * (1.0 - prev) / safe, 0.0)  # x_t coefficient
        if self.variance == "fixed_small":
            reverse = posterior_variance.clone()
        else:
            reverse = betas.clone()
        # sigma_1^2 = beta~_2 for both choices (beta~_1 = 0 would make p(x_0 | x_1) singular).
        reverse[1] = posterior_variance[2]
        reverse[0] = 0.0
        safe_rev = torch.where(reverse > 0, reverse, torch.ones_like(reverse))
        weights = torch.where(one_minus > 0, betas**2 / (2 * safe_rev * alphas * safe), 0.0)  # w_t, eq. (12)

        tables = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": one_minus.sqrt(),
            "log_alphas_cumprod": alphas_cumprod.log(),
            "sqrt_recip_alphas": alphas.rsqrt(),
            "eps_coefs": torch.where(one_minus > 0, betas / safe.sqrt(), 0.0),  # beta_t / sqrt(1 - abar_t), eq. (11)
            "posterior_variance": posterior_variance,
            "posterior_mean_coef1": coef1,
            "posterior_mean_coef2": coef2,
            "reverse_variance": reverse,
            "loss_weights": weights,
        }
        for name, table in tables.items():
            self.register_buffer(name, table.to(**factory), persistent=False)

        loc = torch.as_tensor(data_loc, dtype=_F64).detach().clone()
        scale = torch.as_tensor(data_scale, dtype=_F64).detach().clone()
        if not bool(torch.isfinite(loc).all()) or not bool(((scale > 0) & torch.isfinite(scale)).all()):
            raise ConfigError(
                f"expected a finite data_loc and a finite data_scale > 0, got data_loc={data_loc!r}, "
                f"data_scale={data_scale!r}; pass the training data's mean and standard deviation"
            )
        self.register_buffer("data_loc", loc.to(**factory))
        self.register_buffer("data_scale", scale.to(**factory))

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.num_steps

    def extra_repr(self) -> str:
        return f"T={self.num_steps}, schedule={self.schedule_name!r}, variance={self.variance!r}"

    # ------------------------------------------------------------------ data standardisation

    def normalise(self, x: Tensor) -> Tensor:
        """y = (x - data_loc) / data_scale, the data as the diffusion sees it (same shape)."""
        return (x - self.data_loc) / self.data_scale

    def denormalise(self, y: Tensor) -> Tensor:
        """x = data_loc + data_scale * y (same shape)."""
        return self.data_loc + self.data_scale * y

    def log_data_scale(self, event_shape: torch.Size) -> Tensor:
        """sum over one observation of log data_scale: log p_x(x) = log p_y(y) - this (a scalar)."""
        return torch.log(self.data_scale).expand(event_shape).sum()

    # ------------------------------------------------------------------ indexing

    def check_steps(self, t: Tensor, *, allow_zero: bool = False) -> Tensor:
        """Return integer steps ``t`` as a long tensor, or raise :class:`DataError` if out of range."""
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, device=self.betas.device)
        if t.is_floating_point():
            if not bool((t == t.round()).all()):
                raise DataError(f"expected integer time steps, got fractional values {t.flatten()[:4].tolist()}")
            t = t.long()
        low = 0 if allow_zero else 1
        if t.numel() and not bool(((t >= low) & (t <= self.num_steps)).all()):
            raise DataError(
                f"expected time steps in {{{low}, ..., {self.num_steps}}}, got values in "
                f"[{int(t.min())}, {int(t.max())}]; t is 1-based as in the paper"
            )
        return t

    @staticmethod
    def gather(table: Tensor, t: Tensor, event_dim: int) -> Tensor:
        """``table[t]`` reshaped to broadcast over ``event_dim`` trailing dimensions: ``(*t.shape, 1, ..., 1)``."""
        return table[t].reshape(t.shape + (1,) * event_dim)

    # ------------------------------------------------------------------ forward process

    def q_mean_variance(self, x0: Tensor, t: Tensor, event_dim: int = 1) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (eq. 4, T14).

        Parameters
        ----------
        x0
            Data, shape ``(*batch, *event)``.
        t
            Steps in {0, ..., T}, shape ``batch`` (broadcastable).
        event_dim
            Number of event dimensions of ``x0``.

        Returns
        -------
        mean, variance
            ``mean`` like ``x0``; ``variance`` shape ``(*t.shape, 1, ..., 1)``.
        """
        t = self.check_steps(t, allow_zero=True)
        mean = self.gather(self.sqrt_alphas_cumprod, t, event_dim) * x0
        return mean, self.gather(1.0 - self.alphas_cumprod, t, event_dim)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor, event_dim: int = 1) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, a draw of q(x_t | x_0) (eq. 4; Algorithm 1).

        Shapes as :meth:`q_mean_variance`; ``noise`` like ``x0``.
        """
        t = self.check_steps(t, allow_zero=True)
        return (
            self.gather(self.sqrt_alphas_cumprod, t, event_dim) * x0
            + self.gather(self.sqrt_one_minus_alphas_cumprod, t, event_dim) * noise
        )

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor, event_dim: int = 1) -> tuple[Tensor, Tensor]:
        """Mean mu~_t and variance beta~_t of q(x_{t-1} | x_t, x_0) (eq. 6-7; THEORY T17).

        Parameters
        ----------
        x0, x_t
            Shape ``(*batch, *event)`` (broadcastable).
        t
            Steps in {1, ..., T}, shape ``batch``; beta~_1 = 0 (x_0 is then known).
        event_dim
            Number of event dimensions.

        Returns
        -------
        mean, variance
            ``mean`` of the broadcast shape; ``variance`` shape ``(*t.shape, 1, ..., 1)``.
        """
        t = self.check_steps(t)
        mean = self.gather(self.posterior_mean_coef1, t, event_dim) * x0 + self.gather(
            self.posterior_mean_coef2, t, event_dim
        ) * x_t
        return mean, self.gather(self.posterior_variance, t, event_dim)

    # ------------------------------------------------------------------ parameterisations

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor, event_dim: int = 1) -> Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), eq. (4) solved for x_0."""
        return (x_t - self.gather(self.sqrt_one_minus_alphas_cumprod, t, event_dim) * eps) / self.gather(
            self.sqrt_alphas_cumprod, t, event_dim
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor, event_dim: int = 1) -> Tensor:
        """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), eq. (4) solved for eps (t >= 1)."""
        return (x_t - self.gather(self.sqrt_alphas_cumprod, t, event_dim) * x0) / self.gather(
            self.sqrt_one_minus_alphas_cumprod, t, event_dim
        )

    def predict_eps_from_v(self, x_t: Tensor, t: Tensor, v: Tensor, event_dim: int = 1) -> Tensor:
        """eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t, for v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0
        (Salimans & Ho 2022, Sec. 4)."""
        return self.gather(self.sqrt_alphas_cumprod, t, event_dim) * v + self.gather(
            self.sqrt_one_minus_alphas_cumprod, t, event_dim
        ) * x_t

    # ------------------------------------------------------------------ continuous time

    def alphas_cumprod_at(self, t: Tensor) -> Tensor:
        """abar(t) for real t in [0, T]: log abar interpolated linearly between the integers.

        Equals ``alphas_cumprod[t]`` at every integer t; used by the probability-flow ODE. Integer
        (long) steps index the table directly.

        Parameters
        ----------
        t
            Times, any shape: floating (real t) or integer steps in {0, ..., T}.

        Returns
        -------
        Tensor
            Same shape as ``t``.
        """
        if not t.is_floating_point():
            return self.alphas_cumprod[t]
        t = t.clamp(0, self.num_steps)
        low = t.floor().long().clamp(max=self.num_steps - 1)
        frac = (t - low).to(self.log_alphas_cumprod.dtype)
        log_ab = self.log_alphas_cumprod
        return torch.exp(log_ab[low] + frac * (log_ab[low + 1] - log_ab[low]))

    def time_at(self, alphas_cumprod: Tensor) -> Tensor:
        """The inverse of :meth:`alphas_cumprod_at`: real t in [0, T] with abar(t) = ``alphas_cumprod``.

        Parameters
        ----------
        alphas_cumprod
            Values in [abar_T, 1], any shape.

        Returns
        -------
        Tensor
            Same shape, in the schedule's dtype.
        """
        neg_log = -self.log_alphas_cumprod  # increasing, 0 at t = 0
        target = (-torch.log(alphas_cumprod.to(neg_log.dtype))).clamp(0, float(neg_log[-1]))
        high = torch.searchsorted(neg_log, target.reshape(-1).contiguous()).clamp(1, self.num_steps).reshape(target.shape)
        low = high - 1
        frac = (target - neg_log[low]) / (neg_log[high] - neg_log[low])
        return low.to(neg_log.dtype) + frac.clamp(0, 1)


def check_shared_schedule(schedule: NoiseSchedule, T: int, variance: str, data_loc: Any, data_scale: Any) -> None:
    """A shared schedule fixes T, the variance and the standardisation: refuse conflicting values."""
    clashes = []
    if T != 1000 and T != schedule.num_steps:
        clashes.append(f"T={T} (schedule: {schedule.num_steps})")
    if variance != "fixed_small" and variance != schedule.variance:
        clashes.append(f"variance={variance!r} (schedule: {schedule.variance!r})")
    for name, value, default in (("data_loc", data_loc, 0.0), ("data_scale", data_scale, 1.0)):
        if not (isinstance(value, (int, float)) and value == default):
            clashes.append(f"{name}=... (set it on the NoiseSchedule)")
    if clashes:
        raise ConfigError(
            f"expected T, variance, data_loc and data_scale to come from the NoiseSchedule passed as schedule, "
            f"got {', '.join(clashes)}; build the NoiseSchedule with them instead"
        )
