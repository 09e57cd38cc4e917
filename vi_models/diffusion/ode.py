r"""Exact log-likelihood of a DDPM by its probability-flow ODE (Song et al. 2021, Sec. 4.3).

The continuous-time process behind the discrete chain has marginals
x_t = sqrt(abar(t)) x_0 + sqrt(1 - abar(t)) eps, with abar(t) interpolated between the steps
(:meth:`NoiseSchedule.alphas_cumprod_at`). In the angle phi = arccos sqrt(abar(t)),
x = cos(phi) x_0 + sin(phi) eps, and the deterministic flow that carries every marginal to the
next one is the average velocity E[dx/dphi | x] (the DDIM ODE; Song, Meng & Ermon 2021, eq. 14):

.. code-block:: text

    dx/dphi = f(x, phi) = -sin(phi) x0_theta + cos(phi) eps_theta
            = (eps_theta - sin(phi) x) / cos(phi)       (prediction "eps")
            = v_theta                                    (prediction "v", Salimans & Ho 2022)
            = (cos(phi) x - x0_theta) / sin(phi)        (prediction "x0")

Along a trajectory d/dphi log p_phi(x(phi)) = -div f (the instantaneous change of variables,
Chen et al. 2018, Thm. 1), so, integrating from the data (phi = 0) to phi_T (THEORY T21):

.. code-block:: text

    log p_0(x_0) = log N(x(phi_T); 0, I) + integral_0^{phi_T} div f(x(phi), phi) dphi

The divergence is exact (D backward passes; default for D <= 16) or Hutchinson's unbiased
estimate v^T (df/dx) v with a Rademacher probe v fixed along each trajectory (Grathwohl et
al. 2019). The integral is solved by an adaptive Dormand-Prince 5(4) method with a step size
per observation, so an observation's log p does not depend on the rest of its batch.

For ``prediction="x0"`` the velocity is singular at phi = 0, so integration starts at
t = 1e-3 (noise standard deviation about 3e-4 of the data scale) instead.

References
----------
Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021.
R. T. Q. Chen et al., "Neural Ordinary Differential Equations", NeurIPS 2018.
W. Grathwohl et al., "FFJORD", ICLR 2019.
J. R. Dormand and P. J. Prince, "A family of embedded Runge-Kutta formulae", 1980.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .predictions import DiffusionModel

__all__ = ["TraceMethod", "dopri5", "probability_flow_log_prob"]

TraceMethod = Literal["auto", "exact", "hutchinson"]
#: Data dimension up to which ``trace="auto"`` computes the exact divergence.
EXACT_TRACE_MAX_DIM = 16

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980, Table 2).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


def dopri5(
    func: Callable[[Tensor, Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
) -> tuple[Tensor, int]:
    """Solve dy/dt = func(t, y, index) from t0 to t1 for each row of ``y0`` with its own step size.

    Parameters
    ----------
    func
        ``func(t (n,), y (n, M), index (n,)) -> (n, M)``: the right-hand side for the rows
        ``index`` of the batch (so per-row data such as a probe can be looked up).
    y0
        Initial states ``(N, M)``.
    t0, t1
        Start and end, ``t1 > t0``.
    rtol, atol
        Tolerances of the local error, per row: RMS over M of err / (atol + rtol |y|) <= 1.
    max_steps
        Bound on the number of step attempts.

    Returns
    -------
    y1, nfe
        The states at t1, ``(N, M)``, and the number of right-hand-side calls.

    Raises
    ------
    RuntimeError
        ``max_steps`` attempts without reaching t1 (tolerances too tight for the dynamics).
    """
    n = y0.shape[0]
    dev, dtype = y0.device, y0.dtype
    y = y0.clone()
    t = torch.full((n,), float(t0), device=dev, dtype=dtype)
    everyone = torch.arange(n, device=dev)
    k1 = func(t, y, everyone)
    nfe = 1
    # Initial step (Hairer, Norsett & Wanner, Sec. II.4): h = 0.01 |y| / |f|, bounded.
    d0 = (y / (atol + rtol * y.abs())).pow(2).mean(-1).sqrt()
    d1 = (k1 / (atol + rtol * y.abs())).pow(2).mean(-1).sqrt()
    h = torch.where((d0 > 1e-5) & (d1 > 1e-5), 0.01 * d0 / d1.clamp_min(1e-12), torch.full_like(d0, 1e-6))
    h = h.clamp(max=(t1 - t0) / 10, min=1e-8 * (t1 - t0))
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    for _ in range(max_steps):
        idx = everyone[~done]
        if idx.numel() == 0:
            return y, nfe
        ti, yi, hi = t[idx], y[idx], torch.minimum(h[idx], t1 - t[idx])
        ks = [k1[idx]]
        for stage in range(1, 7):
            dy = sum(a * k for a, k in zip(_A[stage], ks) if a != 0.0)
            ks.append(func(ti + _C[stage] * hi, yi + hi.unsqueeze(-1) * dy, idx))
        nfe += 6
        y5 = yi + hi.unsqueeze(-1) * sum(b * k for b, k in zip(_B5, ks) if b != 0.0)
        err = hi.unsqueeze(-1) * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        tol = atol + rtol * torch.maximum(yi.abs(), y5.abs())
        ratio = (err / tol).pow(2).mean(-1).sqrt()  # (n_active,)
        accept = ratio <= 1.0
        acc = idx[accept]
        y[acc] = y5[accept]
        t[acc] = ti[accept] + hi[accept]
        k1[acc] = ks[6][accept]  # first same as last
        # Step-size control: h <- h * 0.9 ratio^(-1/5), within [0.2, 10] (Hairer et al. II.4).
        factor = (0.9 * ratio.clamp_min(1e-10).pow(-0.2)).clamp(0.2, 10.0)
        h[idx] = hi * factor
        done[idx] = t[idx] >= t1 - 1e-12 * max(1.0, abs(t1))
    raise RuntimeError(
        f"the ODE solver did not reach t1 = {t1} in {max_steps} step attempts; "
        "loosen rtol/atol or check the network for non-finite outputs"
    )


def _divergence(f: Tensor, y: Tensor, probe: Tensor | None) -> Tensor:
    """Exact trace of df/dy (probe None; one backward pass per dimension) or v^T (df/dy) v."""
    if probe is not None:
        (vjp,) = torch.autograd.grad(f, y, probe, create_graph=False)
        return (vjp * probe).sum(-1)
    div = torch.zeros(f.shape[0], device=f.device, dtype=f.dtype)
    for i in range(f.shape[-1]):
        (g,) = torch.autograd.grad(f[:, i].sum(), y, retain_graph=i + 1 < f.shape[-1])
        div = div + g[:, i]
    return div


@torch.no_grad()
def probability_flow_log_prob(
    model: DiffusionModel,
    x: Tensor,
    *,
    trace: TraceMethod = "auto",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    batch_size: int = 4096,
    use_ema: bool | None = None,
    generator: torch.Generator | None = None,
    return_nfe: bool = False,
) -> Tensor | tuple[Tensor, int]:
    """log p(x) of a DDPM by the probability-flow ODE (see the module docstring; THEORY T21).

    Parameters
    ----------
    model
        A :class:`vi_models.DDPM`.
    x
        Data ``(B, *data_shape)`` in the data's units.
    trace
        ``"exact"`` divergence, ``"hutchinson"`` (one Rademacher probe per observation,
        unbiased), or ``"auto"``: exact when D <= 16.
    rtol, atol
        Tolerances of the adaptive solver (5-digit accuracy by default, as Song et al.).
    batch_size
        Observations solved together.
    use_ema
        Use the EMA weights (default: when the model keeps them).
    generator
        For the Hutchinson probes.
    return_nfe
        Also return the number of network evaluations (per batch, summed).

    Returns
    -------
    Tensor
        Shape ``(B,)``: log p(x) in nats, with the Jacobian of the standardisation; with
        ``return_nfe``, a tuple ``(log_prob, nfe)``.

    Raises
    ------
    ConfigError
        Unknown ``trace`` or non-positive tolerances.
    """
    check_choice(trace, "trace", ("auto", "exact", "hutchinson"))
    batch_size = check_positive_int(batch_size, "batch_size")
    if not (rtol > 0 and atol > 0):
        raise ConfigError(f"expected rtol > 0 and atol > 0, got rtol={rtol!r}, atol={atol!r}")
    model._check_data(x)
    s = model.schedule
    d = model.data_shape.numel()
    exact = trace == "exact" or (trace == "auto" and d <= EXACT_TRACE_MAX_DIM)
    y_all = s.normalise(x).reshape(x.shape[0], d)
    abar_T = float(s.alphas_cumprod[-1])
    phi_end = math.acos(math.sqrt(abar_T))
    phi_start = 0.0 if model.prediction != "x0" else math.acos(math.sqrt(float(s.alphas_cumprod_at(torch.tensor(1e-3)))))
    was_training = model.training
    model.eval()
    out, nfe_total = [], 0
    try:
        for start in range(0, x.shape[0], batch_size):
            y0 = y_all[start : start + batch_size]
            n = y0.shape[0]
            probe = None
            if not exact:
                probe = torch.randint(0, 2, (n, d), generator=generator, device="cpu").to(y0.device, y0.dtype) * 2 - 1

            rhs = _AugmentedDynamics(model, d, probe, use_ema)
            state0 = torch.cat([y0, y0.new_zeros(n, 1)], dim=-1)  # [x, integral of div f]
            state1, nfe = dopri5(rhs, state0, phi_start, phi_end, rtol=rtol, atol=atol)
            nfe_total += nfe
            y_end, integral = state1[:, :d], state1[:, d]
            log_prior = -0.5 * (y_end**2).sum(-1) - 0.5 * d * math.log(2 * math.pi)  # log N(x_T; 0, I)
            out.append(log_prior + integral - s.log_data_scale(model.data_shape))
    finally:
        model.train(was_training)
    log_prob = torch.cat(out)
    return (log_prob, nfe_total) if return_nfe else log_prob


class _AugmentedDynamics:
    """d/dphi of the state [x, integral of div f] for the rows ``index`` of a batch."""

    def __init__(self, model: DiffusionModel, dim: int, probe: Tensor | None, use_ema: bool | None) -> None:
        self.model, self.dim, self.probe, self.use_ema = model, dim, probe, use_ema

    def __call__(self, phi: Tensor, state: Tensor, index: Tensor) -> Tensor:
        with torch.enable_grad():
            y = state[:, : self.dim].detach().requires_grad_(True)
            f = _velocity(self.model, y, phi, self.use_ema)
            div = _divergence(f, y, self.probe[index] if self.probe is not None else None)
        return torch.cat([f.detach(), div.detach().unsqueeze(-1)], dim=-1)


def _velocity(model: DiffusionModel, y: Tensor, phi: Tensor, use_ema: bool | None) -> Tensor:
    """dx/dphi at flat standardised ``y`` (n, D) and angles ``phi`` (n,)."""
    s = model.schedule
    cos, sin = phi.cos().unsqueeze(-1), phi.sin().unsqueeze(-1)
    t = s.time_at((phi.cos() ** 2).clamp_min(float(s.alphas_cumprod[-1]))).to(y.dtype)
    shaped = y.reshape(y.shape[0], *model.data_shape)
    out = model.output(shaped, t, use_ema=use_ema).reshape(y.shape)
    if model.prediction == "eps":
        return (out - sin * y) / cos
    if model.prediction == "v":
        return out
    return (cos * y - out) / sin
