"""Closed-form KL divergences that torch and Pyro do not register.

Importing this module (``vi_models`` does) registers, with
:func:`torch.distributions.kl.register_kl`,

    KL( MultivariateNormal(m0, S0) || Independent(Normal(m1, s1), 1) ),

the KL from a full-covariance Gaussian guide ``q(z|x)`` to the diagonal Gaussian prior of
the VAE. :class:`pyro.infer.TraceMeanField_ELBO` calls
``kl_divergence(guide_site.fn, model_site.fn)``, so with this registration the full-covariance
:class:`guides.GaussianEncoder` gets an analytic KL term instead of the sampled fallback.

Closed form (THEORY T4), with S1 = diag(s1^2) and S0 = L L^T:

    KL = 1/2 [ tr(S1^-1 S0) - d + (m1 - m0)^T S1^-1 (m1 - m0) + log det S1 - log det S0 ]

where tr(S1^-1 S0) = sum_ij L_ij^2 / s1_i^2, log det S1 = 2 sum_i log s1_i and
log det S0 = 2 sum_i log L_ii.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal, register_kl

__all__: list[str] = []


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diag_normal(p: MultivariateNormal, q: Independent) -> Tensor:
    """KL(p || q) for a full-covariance ``p`` and a diagonal Gaussian ``q`` (THEORY T4).

    Parameters
    ----------
    p
        ``MultivariateNormal`` with event shape ``(d,)``.
    q
        ``Independent(Normal(loc, scale), 1)`` with event shape ``(d,)``; anything else
        raises ``NotImplementedError`` so callers (Pyro) fall back to sampling.

    Returns
    -------
    Tensor
        Shape ``broadcast(p.batch_shape, q.batch_shape)``.
    """
    base = q.base_dist
    if not isinstance(base, Normal) or q.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"expected distributions with the same event shape, got {tuple(p.event_shape)} "
            f"and {tuple(q.event_shape)}; KL between Gaussians of different dimension is undefined"
        )
    d = p.event_shape[0]
    inv_s1 = base.scale.reciprocal()  # (..., d)
    tril = p._unbroadcasted_scale_tril  # (..., d, d), L with S0 = L L^T
    trace = (tril.pow(2) * inv_s1.pow(2).unsqueeze(-1)).sum((-2, -1))  # tr(S1^-1 S0)
    mahalanobis = ((base.loc - p.loc) * inv_s1).pow(2).sum(-1)  # (m1-m0)^T S1^-1 (m1-m0)
    half_log_det_ratio = base.scale.log().sum(-1) - tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    kl = 0.5 * (trace + mahalanobis - d) + half_log_det_ratio
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))
