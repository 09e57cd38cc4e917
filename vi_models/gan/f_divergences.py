r"""The f-divergences of the f-GAN: generators, conjugates, output activations, optimal critics.

``D_f(p || q) = E_q[f(p / q)]`` for a convex ``f`` with ``f(1) = 0`` (THEORY T30).
The named generators ``f`` (Nowozin et al. 2016, Table 1; ``t = p/q``):

.. code-block:: text

    "kl"               t log t                                   KL(p || q)
    "reverse_kl"       -log t                                    KL(q || p)
    "js"               1/2 [t log t - (t + 1) log((t + 1)/2)]    JS(p || q)  (Table 1's f is 2 JS)
    "pearson"          (t - 1)^2                                 Pearson chi^2
    "hellinger"        (sqrt(t) - 1)^2                           squared Hellinger, int (sqrt p - sqrt q)^2
    "total_variation"  1/2 |t - 1|                               1/2 int |p - q|

The GAN's critic (:class:`vi_models.GAN`) and the engine's estimators and dual bounds
(:mod:`inference.divergences`) share this table. The conjugates are ``f*(t) = sup_u {u t - f(u)}``, and the
output activations ``g_f`` map an unconstrained network output ``v`` into the domain of ``f*`` (Nowozin et al. 2016, Table 2;
the ``"js"`` row is halved with its ``f``):

.. code-block:: text

    name               f*(t)                      dom f*              g_f(v)
    "kl"               exp(t - 1)                 R                   v
    "reverse_kl"       -1 - log(-t)               t < 0               -exp(v)
    "js"               -1/2 log(2 - exp(2t))      t < log(2)/2        1/2 (log 2 - log(1 + exp(-v)))
    "pearson"          t^2/4 + t                  R                   v
    "hellinger"        t / (1 - t)                t < 1               1 - exp(v)
    "total_variation"  t                          |t| <= 1/2          1/2 tanh(v)

References
----------
S. Nowozin, B. Cseke and R. Tomioka, "f-GAN: Training Generative Neural Samplers using
Variational Divergence Minimization", NeurIPS 2016.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vi_models._validation import check_choice

__all__ = [
    "F_DIVERGENCES",
    "FDivergence",
    "f_activation",
    "f_conjugate",
    "f_conjugate_of_activation",
    "f_generator",
    "f_optimal_critic",
]

FDivergence = Literal["kl", "reverse_kl", "js", "pearson", "hellinger", "total_variation"]
F_DIVERGENCES: Final = ("kl", "reverse_kl", "js", "pearson", "hellinger", "total_variation")
_LOG2: Final = math.log(2.0)


def _check_name(name: Any) -> str:
    return check_choice(name, "f-divergence name", F_DIVERGENCES)


def f_generator(name: FDivergence, log_t: Tensor) -> Tensor:
    """The generator ``f(t)`` of a named f-divergence, evaluated at ``t = exp(log_t)``.

    Taking ``log t = log p - log q`` rather than ``t`` keeps every generator finite where the
    density ratio itself would overflow. ``log_t``: any shape; returns the same shape.
    """
    _check_name(name)
    if name == "kl":
        return torch.exp(log_t) * log_t
    if name == "reverse_kl":
        return -log_t
    if name == "pearson":
        return torch.expm1(log_t).square()
    if name == "hellinger":
        return torch.expm1(0.5 * log_t).square()
    if name == "total_variation":
        return 0.5 * torch.expm1(log_t).abs()
    # js: 1/2 [t log(2t / (1 + t)) + log(2 / (1 + t))], with log(t / (1 + t)) = -softplus(-log t).
    t = torch.exp(log_t)
    return 0.5 * (t * (_LOG2 - F.softplus(-log_t)) + _LOG2 - F.softplus(log_t))


def f_conjugate(name: FDivergence, t: Tensor) -> Tensor:
    """Fenchel conjugate ``f*(t) = sup_u {u t - f(u)}`` of a named generator (f-GAN Table 2).

    ``t``: any shape; returns the same shape, ``+inf`` outside ``dom f*`` (so a dual bound
    with such a critic value is ``-inf``, never silently wrong).
    """
    _check_name(name)
    inf = torch.full_like(t, math.inf)
    if name == "kl":
        return torch.exp(t - 1.0)
    if name == "pearson":
        return 0.25 * t.square() + t
    if name == "reverse_kl":
        ok = t < 0
        return torch.where(ok, -1.0 - torch.log(-torch.where(ok, t, -torch.ones_like(t))), inf)
    if name == "hellinger":
        ok = t < 1
        safe = torch.where(ok, t, torch.zeros_like(t))
        return torch.where(ok, safe / (1.0 - safe), inf)
    if name == "total_variation":
        return torch.where(t.abs() <= 0.5, t, inf)
    ok = t < 0.5 * _LOG2  # js
    safe = torch.where(ok, t, torch.zeros_like(t))
    return torch.where(ok, -0.5 * torch.log(2.0 - torch.exp(2.0 * safe)), inf)


def f_activation(name: FDivergence, v: Tensor) -> Tensor:
    """Output activation ``g_f(v)``: maps an unconstrained critic output into ``dom f*``."""
    _check_name(name)
    if name in ("kl", "pearson"):
        return v
    if name == "reverse_kl":
        return -torch.exp(v)
    if name == "hellinger":
        return -torch.expm1(v)
    if name == "total_variation":
        return 0.5 * torch.tanh(v)
    return 0.5 * (_LOG2 - F.softplus(-v))  # js


def f_conjugate_of_activation(name: str, v: Tensor) -> Tensor:
    """``f*(g_f(v))`` in closed form: stable where composing the two would cancel."""
    if name == "kl":
        return torch.exp(v - 1.0)
    if name == "reverse_kl":
        return -1.0 - v
    if name == "hellinger":
        return torch.expm1(-v)
    if name == "js":  # exp(2 t) = 2 sigmoid(v), so 2 - exp(2 t) = 2 sigmoid(-v)
        return -0.5 * (_LOG2 - F.softplus(v))
    return f_conjugate(name, f_activation(name, v))


def f_optimal_critic(name: FDivergence, log_ratio: Tensor) -> Tensor:
    """The critic ``T*(x) = f'(p(x)/q(x))`` at which the dual bound is tight, from ``log p/q``."""
    _check_name(name)
    if name == "kl":
        return 1.0 + log_ratio
    if name == "reverse_kl":
        return -torch.exp(-log_ratio)
    if name == "pearson":
        return 2.0 * torch.expm1(log_ratio)
    if name == "hellinger":
        return -torch.expm1(-0.5 * log_ratio)
    if name == "total_variation":
        return 0.5 * torch.sign(log_ratio)
    return 0.5 * (_LOG2 - F.softplus(-log_ratio))  # js: 1/2 log(2t / (1 + t))
