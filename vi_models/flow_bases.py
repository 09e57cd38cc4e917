r"""Base distributions of a normalizing flow: the standard Gaussian, or a learned Gaussian mixture.

A flow ``x = f(z)`` with ``z ~ p_0`` has the exact density (THEORY T22)

.. code-block:: text

    log p(x) = log p_0(f^{-1}(x)) + log |det d f^{-1} / d x|

for *any* base density ``p_0`` whose log-density and samples we have. The standard choice is
``N(0, I)``. A bijection must then tear a unimodal Gaussian apart to make well separated modes
(eight Gaussians, two moons), which costs layers and steep splines; a learned mixture

.. code-block:: text

    p_0(z) = sum_k pi_k N(z | mu_k, diag sigma_k^2)

lets the base carry the modes and the layers the shapes (Papamakarios et al. 2021, Sec. 2.3 on
base distributions; Izmailov et al. 2020 use a mixture base for classes). Its parameters are
trained with the layers by maximum likelihood. :meth:`GaussianMixtureBase.initialize` starts
them from EM on the data mapped to the base space (``inference.fit_em``), so the flow starts as
that mixture and the layers only ever improve on it in training likelihood.

References
----------
G. Papamakarios, E. Nalisnick, D. J. Rezende, S. Mohamed and B. Lakshminarayanan,
"Normalizing Flows for Probabilistic Modeling and Inference", JMLR 22 (2021).
P. Izmailov, P. Kirichenko, M. Finzi and A. G. Wilson, "Semi-Supervised Learning with
Normalizing Flows", ICML 2020.
"""

from __future__ import annotations

import math
from typing import Literal

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from inference._checks import check_positive_int

__all__ = ["BaseName", "GaussianMixtureBase"]

BaseName = Literal["normal", "mixture"]


class GaussianMixtureBase(nn.Module):
    """A learned diagonal Gaussian mixture on ``R^D``, the base ``p_0`` of a normalizing flow.

    Parameters
    ----------
    dim
        Dimension ``D``.
    num_components
        Number of components ``K >= 1``.
    device, dtype
        Where the parameters live and their dtype.

    Attributes
    ----------
    logits : nn.Parameter
        ``(K,)`` unnormalised log weights.
    means : nn.Parameter
        ``(K, D)`` component means (start: standard normal draws from the global RNG).
    log_scales : nn.Parameter
        ``(K, D)`` log standard deviations (start: ``log 0.5``).

    Examples
    --------
    >>> base = GaussianMixtureBase(2, 3)
    >>> base.distribution().log_prob(torch.zeros(4, 2)).shape
    torch.Size([4])
    """

    def __init__(
        self,
        dim: int,
        num_components: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.num_components = check_positive_int(num_components, "num_components")
        f = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        k, d = self.num_components, self.dim
        self.logits = nn.Parameter(torch.zeros(k, **f))
        self.means = nn.Parameter(torch.randn(k, d, **f))
        self.log_scales = nn.Parameter(torch.full((k, d), math.log(0.5), **f))

    def distribution(self) -> dist.Distribution:
        """``p_0``: batch shape ``()``, event shape ``(D,)``."""
        components = dist.Normal(self.means, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, D)``: a component ``k ~ pi``, then ``mu_k + sigma_k * eps``."""
        k = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, device=self.means.device, dtype=self.means.dtype)
        return self.means[k] + self.log_scales.exp()[k] * eps

    @torch.no_grad()
    def initialize(self, z: Tensor, *, seed: int = 0, max_iter: int = 500, tol: float = 1e-6) -> GaussianMixtureBase:
        """Start from the maximum-likelihood diagonal mixture of ``z`` (points in base space) by EM.

        Parameters
        ----------
        z
            ``(N, D)`` points, ``N >= K``.
        seed
            Seed of EM's k-means++ start.
        max_iter, tol
            EM iterations at most, and the change of the mean log-likelihood that stops it.

        Returns
        -------
        GaussianMixtureBase
            ``self``.
        """
        from inference import (
            fit_em,  # the engine imports the models; keep this import local
        )

        from .mixture import GaussianMixture

        z = z.detach().reshape(-1, self.dim).to(torch.float64)
        k = min(self.num_components, z.shape[0])
        gm = GaussianMixture(k, self.dim, covariance="diag", device=z.device, dtype=torch.float64)
        fit_em(gm, z, max_iter=max_iter, tol=tol, seed=seed, progress=False, reg_covar=1e-6, device=z.device)
        params = gm.params()
        logits = torch.full_like(self.logits, -math.inf if k < self.num_components else 0.0)
        logits[:k] = params["weights"].log().to(logits)
        self.logits.copy_(logits.clamp_min(-30.0))  # absent components: weight ~1e-13, still trainable
        self.means[:k] = params["means"].to(self.means)
        self.log_scales[:k] = (0.5 * params["variances"].log()).to(self.log_scales)
        return self

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_components={self.num_components}"
