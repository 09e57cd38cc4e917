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
from typing import Any, Literal

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError

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
    def set_mixture(self, mixture: Any) -> GaussianMixtureBase:
        """Set the parameters to those of a fitted diagonal Gaussian mixture on ``R^D``.

        :func:`inference.initialize_flow` fits one by EM to the data mapped to the base space
        and calls this.

        Parameters
        ----------
        mixture
            Anything with ``weights``/``weights_`` ``(K', )``, ``means``/``means_`` ``(K', D)``
            and diagonal ``covariances``/``covariances_`` ``(K', D)`` (a
            :class:`vi_models.GaussianMixture` with ``covariance="diag"``, or scikit-learn's with
            ``covariance_type="diag"``), ``K' <= K``: the components beyond ``K'`` get weight
            ~1e-13, still trainable.

        Returns
        -------
        GaussianMixtureBase
            ``self``.

        Raises
        ------
        ConfigError
            More components than ``K``, or shapes that are not ``(K', D)``.
        """
        def get(*names: str) -> Tensor:
            for name in names:
                value = getattr(mixture, name, None)
                if value is not None:
                    return torch.as_tensor(value.detach() if isinstance(value, Tensor) else value)
            raise ConfigError(f"expected a fitted diagonal mixture with {names[0]!r}, got {type(mixture).__name__}")

        weights, means = get("weights", "weights_"), get("means", "means_")
        variances = get("variances", "covariances", "covariances_")
        k = weights.shape[0]
        if not 1 <= k <= self.num_components or means.shape != (k, self.dim) or variances.shape != (k, self.dim):
            raise ConfigError(
                f"expected a diagonal mixture of at most K = {self.num_components} components in D = {self.dim}: "
                f"weights (K',), means and variances (K', D); got {tuple(weights.shape)}, {tuple(means.shape)}, "
                f"{tuple(variances.shape)}"
            )
        logits = torch.full_like(self.logits, -math.inf if k < self.num_components else 0.0)
        logits[:k] = weights.log().to(logits)
        self.logits.copy_(logits.clamp_min(-30.0))  # absent components: weight ~1e-13, still trainable
        self.means[:k] = means.to(self.means)
        self.log_scales[:k] = (0.5 * variances.log()).to(self.log_scales)
        return self

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_components={self.num_components}"
