r"""Divergences between distributions and between sample sets, with their variational bounds.

Between two :class:`torch.distributions.Distribution` objects ``p`` and ``q`` (THEORY T5, T30):

.. code-block:: text

    KL(p || q)  = E_p[log p - log q]  >= 0, asymmetric           closed form where torch has one
    JS(p || q)  = 1/2 KL(p || m) + 1/2 KL(q || m),  m = (p + q)/2,   0 <= JS <= log 2
    D_f(p || q) = E_q[f(p / q)],  f convex, f(1) = 0              Monte Carlo with x ~ q

The named generators ``f`` (``"kl"``, ``"reverse_kl"``, ``"js"``, ``"pearson"``, ``"hellinger"``,
``"total_variation"``; Nowozin et al. 2016, Table 1), their conjugates ``f*`` and the critic's
output activations ``g_f`` (Table 2) are tabulated in :mod:`vi_models.gan.f_divergences`, which
the GAN's critic shares; they are re-exported here.

Variational lower bounds from samples of a critic ``T`` on ``x ~ p`` and ``x ~ q`` (T31):

.. code-block:: text

    f-GAN dual (Nowozin et al. 2016, eq. 4):  D_f >= E_p[T] - E_q[f*(T)],  equality at T* = f'(p/q)
    Donsker-Varadhan:                         KL  >= E_p[T] - log E_q[exp T],  equality at T = log p/q + c
    JS dual (Goodfellow et al. 2014):         JS  >= log 2 + 1/2 (E_p[log D] + E_q[log(1 - D)]),
                                              equality at D* = p / (p + q)  (T28, T29)

with ``f*`` and ``g_f`` of :mod:`vi_models.gan.f_divergences`.

The sample-set distances (Wasserstein, sliced Wasserstein, MMD, THEORY T32) live in
:mod:`inference.divergences.distances` and are re-exported here.

Every log-mean-exp is shifted by its maximum (T33); every function is torch, batched where
the docstring says so, differentiable, and runs on the device of its inputs. Sample
dimensions come first: ``(num_samples, *batch)``.

References
----------
S. Nowozin, B. Cseke and R. Tomioka, "f-GAN: Training Generative Neural Samplers using
Variational Divergence Minimization", NeurIPS 2016.
M. D. Donsker and S. R. S. Varadhan, "Asymptotic evaluation of certain Markov process
expectations for large time IV", Comm. Pure Appl. Math. 36, 1983.
I. Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014.
A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schoelkopf and A. Smola, "A Kernel Two-Sample
Test", JMLR 13, 2012.
N. Bonneel, J. Rabin, G. Peyre and H. Pfister, "Sliced and Radon Wasserstein Barycenters of
Measures", J. Math. Imaging Vis. 51, 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution

from vi_models._math import logmeanexp
from vi_models._validation import check_choice, check_positive_int, sample_tensor
from vi_models.errors import ConfigError, DataError
from vi_models.gan.f_divergences import (
    F_DIVERGENCES,
    FDivergence,
    f_activation,
    f_conjugate,
    f_conjugate_of_activation,
    f_generator,
    f_optimal_critic,
)

from .distances import mmd, sliced_wasserstein, wasserstein_1d

__all__ = [
    "F_DIVERGENCES",
    "donsker_varadhan_bound",
    "f_activation",
    "f_conjugate",
    "f_conjugate_of_activation",
    "f_divergence",
    "f_dual_bound",
    "f_generator",
    "f_optimal_critic",
    "js_divergence",
    "js_dual_bound",
    "kl_divergence",
    "mmd",
    "reverse_kl",
    "sliced_wasserstein",
    "wasserstein_1d",
]

_LOG2: Final = math.log(2.0)


# ---------------------------------------------------------------------- input checks


def _check_name(name: Any) -> str:
    return check_choice(name, "f-divergence name", F_DIVERGENCES)


def _check_pair(p: Any, q: Any) -> None:
    for name, d in (("p", p), ("q", q)):
        if not isinstance(d, Distribution):
            raise ConfigError(
                f"expected {name} to be a torch.distributions.Distribution, got {type(d).__name__}; "
                "wrap parameters in a distribution, e.g. torch.distributions.Normal(loc, scale)"
            )
    if p.event_shape != q.event_shape:
        raise ConfigError(
            f"expected p and q on the same space, got event shapes {tuple(p.event_shape)} and "
            f"{tuple(q.event_shape)}; use .to_event()/Independent to match them"
        )


def _draw(p: Distribution, num_samples: int) -> Tensor:
    """``(num_samples, *batch, *event)`` draws, reparameterised when ``p`` allows (gradients)."""
    return p.rsample((num_samples,)) if p.has_rsample else p.sample((num_samples,))


# ---------------------------------------------------------------------- KL and JS


def kl_divergence(
    p: Distribution,
    q: Distribution,
    *,
    num_samples: int | None = None,
    method: Literal["auto", "analytic", "mc"] = "auto",
) -> Tensor:
    """``KL(p || q) = E_p[log p(x) - log q(x)]`` (THEORY T4, T5).

    Parameters
    ----------
    p, q
        Distributions with the same event shape and broadcastable batch shapes.
    num_samples
        Monte Carlo sample size, needed when no closed form is registered or ``method="mc"``.
        Draws from ``p`` are reparameterised when ``p.has_rsample``, so the estimate has
        gradients in ``p``'s parameters (reverse-KL fitting of a variational ``p``).
    method
        ``"auto"``: :func:`torch.distributions.kl_divergence` where a closed form is registered
        (torch, Pyro and :mod:`vi_models._kl` registrations), Monte Carlo otherwise;
        ``"analytic"``: closed form or error; ``"mc"``: always Monte Carlo.

    Returns
    -------
    Tensor
        Shape ``broadcast(p.batch_shape, q.batch_shape)``. A Monte Carlo estimate is unbiased
        but can be negative for small ``num_samples``.

    Raises
    ------
    ConfigError
        ``p``/``q`` are not distributions on the same space; no closed form and no
        ``num_samples``; ``num_samples < 1``.

    Examples
    --------
    >>> from torch.distributions import Normal
    >>> float(kl_divergence(Normal(0.0, 1.0), Normal(1.0, 1.0)))
    0.5
    """
    _check_pair(p, q)
    check_choice(method, "method", ("auto", "analytic", "mc"))
    if method != "mc":
        try:
            return torch.distributions.kl_divergence(p, q)
        except NotImplementedError:
            if method == "analytic":
                raise ConfigError(
                    f"expected a closed-form KL({type(p).__name__} || {type(q).__name__}), but none is "
                    "registered; use method='auto' or 'mc' with num_samples=..."
                ) from None
    if num_samples is None:
        raise ConfigError(
            f"expected num_samples for a Monte Carlo KL({type(p).__name__} || {type(q).__name__}), got None "
            "(no closed form is registered for this pair); pass e.g. num_samples=1000"
        )
    x = _draw(p, check_positive_int(num_samples, "num_samples"))
    return (p.log_prob(x) - q.log_prob(x)).mean(0)


def reverse_kl(
    p: Distribution,
    q: Distribution,
    *,
    num_samples: int | None = None,
    method: Literal["auto", "analytic", "mc"] = "auto",
) -> Tensor:
    """``KL(q || p)``: the reverse (variational, mode-seeking) direction for a target ``p``.

    Minimising it over ``q`` locks onto one mode of a multimodal ``p``; minimising the forward
    ``KL(p || q)`` (maximum likelihood) spreads ``q`` over all of them (THEORY T5). Same
    arguments, shapes and errors as :func:`kl_divergence`, with the roles of ``p`` and ``q``
    swapped (Monte Carlo draws come from ``q``).
    """
    return kl_divergence(q, p, num_samples=num_samples, method=method)


def js_divergence(p: Distribution, q: Distribution, num_samples: int) -> Tensor:
    """Jensen-Shannon divergence ``1/2 KL(p || m) + 1/2 KL(q || m)``, ``m = (p + q)/2`` (T30).

    Monte Carlo with ``num_samples`` draws from each of ``p`` and ``q``; ``log m`` is computed as
    ``logaddexp(log p, log q) - log 2`` so it never under- or overflows (T33).

    Parameters
    ----------
    p, q
        Distributions with the same event shape and broadcastable batch shapes.
    num_samples
        Draws from each distribution.

    Returns
    -------
    Tensor
        Shape ``broadcast(p.batch_shape, q.batch_shape)``, in nats, in ``[0, log 2]`` in
        expectation.

    Raises
    ------
    ConfigError
        ``p``/``q`` are not distributions on the same space, or ``num_samples < 1``.
    """
    _check_pair(p, q)
    s = check_positive_int(num_samples, "num_samples")
    total = 0.0
    for a, b in ((p, q), (q, p)):
        x = _draw(a, s)
        log_a, log_b = a.log_prob(x), b.log_prob(x)
        log_m = torch.logaddexp(log_a, log_b) - _LOG2
        total = total + 0.5 * (log_a - log_m).mean(0)
    return total


# ---------------------------------------------------------------------- f-divergences


def f_divergence(
    p: Distribution,
    q: Distribution,
    f: FDivergence | Callable[[Tensor], Tensor],
    num_samples: int,
) -> Tensor:
    """``D_f(p || q) = E_q[f(p(x) / q(x))]`` by Monte Carlo over ``x ~ q`` (THEORY T30).

    Parameters
    ----------
    p, q
        Distributions with the same event shape and broadcastable batch shapes; ``p`` must be
        absolutely continuous with respect to ``q`` for the estimate to be consistent.
    f
        A name among :data:`F_DIVERGENCES` (see the module docstring), or a callable
        ``f(t)`` of the density ratio ``t`` (a tensor), convex with ``f(1) = 0``.
    num_samples
        Draws from ``q``.

    Returns
    -------
    Tensor
        Shape ``broadcast(p.batch_shape, q.batch_shape)``.

    Raises
    ------
    ConfigError
        ``p``/``q`` not distributions on the same space, an unknown name, ``num_samples < 1``.

    Examples
    --------
    >>> from torch.distributions import Normal
    >>> tv = f_divergence(Normal(0.0, 1.0), Normal(0.5, 1.0), "total_variation", 10_000)
    """
    _check_pair(p, q)
    if not callable(f):
        _check_name(f)
    x = _draw(q, check_positive_int(num_samples, "num_samples"))
    log_t = p.log_prob(x) - q.log_prob(x)
    values = f(torch.exp(log_t)) if callable(f) else f_generator(f, log_t)
    return values.mean(0)


def f_dual_bound(name: FDivergence, t_p: Tensor, t_q: Tensor, *, activation: bool = False) -> Tensor:
    """f-GAN variational lower bound ``E_p[T] - E_q[f*(T)] <= D_f(p || q)`` (Nowozin et al. eq. 4).

    Parameters
    ----------
    name
        One of :data:`F_DIVERGENCES`.
    t_p
        Critic values on samples of ``p``, shape ``(N_p, *batch)``.
    t_q
        Critic values on samples of ``q``, shape ``(N_q, *batch)``.
    activation
        ``True`` when ``t_p``/``t_q`` are raw outputs ``v`` to pass through the output
        activation ``g_f`` first (the f-GAN parameterisation); ``False`` when they are already
        values of ``T`` in ``dom f*``.

    Returns
    -------
    Tensor
        Shape ``(*batch)``; ``-inf`` if a ``t_q`` value lies outside ``dom f*``. Equal to
        ``D_f`` in expectation at ``T* = f'(p/q)`` (:func:`f_optimal_critic`).

    Raises
    ------
    ConfigError
        Unknown name.
    DataError
        Empty or non-finite critic values.
    """
    _check_name(name)
    t_p = sample_tensor(t_p, "t_p")
    t_q = sample_tensor(t_q, "t_q", like=t_p)
    if activation:
        return f_activation(name, t_p).mean(0) - f_conjugate_of_activation(name, t_q).mean(0)
    return t_p.mean(0) - f_conjugate(name, t_q).mean(0)


def donsker_varadhan_bound(t_p: Tensor, t_q: Tensor) -> Tensor:
    """Donsker-Varadhan bound ``E_p[T] - log E_q[exp T] <= KL(p || q)`` (THEORY T31).

    Tight at ``T = log p/q + c`` for any constant ``c``; invariant to adding ``c`` to both
    inputs. ``log E_q[exp T]`` is a max-shifted log-mean-exp (T33), so critic values far beyond
    ``exp``'s range (``T > 709`` in float64) still give a finite bound.

    Parameters
    ----------
    t_p
        Critic values on samples of ``p``, shape ``(N_p, *batch)``.
    t_q
        Critic values on samples of ``q``, shape ``(N_q, *batch)``.

    Returns
    -------
    Tensor
        Shape ``(*batch)``.

    Raises
    ------
    DataError
        Empty or non-finite critic values.
    """
    t_p = sample_tensor(t_p, "t_p")
    t_q = sample_tensor(t_q, "t_q", like=t_p)
    return t_p.mean(0) - logmeanexp(t_q, dim=0)


def js_dual_bound(d_p: Tensor, d_q: Tensor, *, logits: bool = False) -> Tensor:
    """GAN bound ``log 2 + 1/2 (E_p[log D] + E_q[log(1 - D)]) <= JS(p || q)`` (THEORY T31).

    Tight at ``D* = p / (p + q)`` (T28); at ``p = q``, ``D* = 1/2`` and the bound is 0 (T29:
    the GAN value ``E_p log D + E_q log(1 - D)`` is then ``-2 log 2``).

    Parameters
    ----------
    d_p
        Discriminator outputs on samples of ``p``, shape ``(N_p, *batch)``: probabilities in
        ``[0, 1]``, or logits when ``logits=True``.
    d_q
        The same on samples of ``q``, shape ``(N_q, *batch)``.
    logits
        Take ``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)`` from logits ``l``,
        exact where probabilities would round to 0 or 1.

    Returns
    -------
    Tensor
        Shape ``(*batch)``, in nats.

    Raises
    ------
    DataError
        Empty or non-finite inputs, or probabilities outside ``[0, 1]``.
    """
    d_p = sample_tensor(d_p, "d_p")
    d_q = sample_tensor(d_q, "d_q", like=d_p)
    if logits:
        log_d_p, log_1m_d_q = -F.softplus(-d_p), -F.softplus(d_q)
    else:
        for name, d in (("d_p", d_p), ("d_q", d_q)):
            if bool(((d < 0) | (d > 1)).any()):
                raise DataError(
                    f"expected {name} to hold probabilities in [0, 1], got values in "
                    f"[{float(d.min()):.4g}, {float(d.max()):.4g}]; pass logits=True for raw outputs"
                )
        log_d_p, log_1m_d_q = torch.log(d_p), torch.log1p(-d_q)
    return _LOG2 + 0.5 * (log_d_p.mean(0) + log_1m_d_q.mean(0))
