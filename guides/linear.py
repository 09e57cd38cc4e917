"""Linear Gaussian encoder: q(z | x) = N(A x + c, Sigma) with Sigma shared by all x.

It contains the exact posterior of :class:`vi_models.LinearGaussian` (whose posterior
covariance does not depend on x), so the ELBO gap log p(x) - ELBO = KL(q || p(z | x))
(THEORY T1) can be driven to zero and measured in closed form.
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from vi_models._validation import check_choice, check_positive_int
from vi_models.sites import DATA_PLATE, LATENT

__all__ = ["LinearGaussianEncoder"]


class LinearGaussianEncoder(PyroModule):
    """q(z | x) = N(A x + c, L L^T), ``L`` diagonal (``"diag"``) or lower-triangular (``"full"``).

    Args:
        x_dim: d; z_dim: q.
        covariance: ``"diag"`` or ``"full"``.
        device, dtype: placement of the parameters.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        *,
        covariance: Literal["diag", "full"] = "full",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.covariance = check_choice(covariance, "covariance", ("diag", "full"))
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.zeros(self.z_dim, self.x_dim, **kw))  # A: (q, d)
        self.bias = nn.Parameter(torch.zeros(self.z_dim, **kw))  # c: (q,)
        self.log_diag = nn.Parameter(torch.zeros(self.z_dim, **kw))
        self.off_diag = nn.Parameter(torch.zeros(self.z_dim, self.z_dim, **kw))

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factor L of Sigma, shape ``(q, q)``."""
        lower = torch.tril(self.off_diag, -1) if self.covariance == "full" else torch.zeros_like(self.off_diag)
        return lower + torch.diag(self.log_diag.exp())

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) for ``x`` of shape ``(..., d)``: batch shape ``(...)``, event ``(q,)``."""
        loc = (self.weight * x.unsqueeze(-2)).sum(-1) + self.bias
        if self.covariance == "diag":
            return dist.Normal(loc, self.log_diag.exp()).to_event(1)
        return dist.MultivariateNormal(loc, scale_tril=self.scale_tril())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sample z ~ q(z | x) for a batch ``x`` of shape ``(B, d)``."""
        with pyro.plate(DATA_PLATE, x.shape[-2]):
            return pyro.sample(LATENT, self.distribution(x))

    @torch.no_grad()
    def set_posterior(self, model: nn.Module) -> "LinearGaussianEncoder":
        """Set q to the exact posterior of a :class:`vi_models.LinearGaussian` ``model``."""
        psi_inv = model.scale**-2
        eye = torch.eye(self.z_dim, dtype=self.bias.dtype, device=self.bias.device)
        cov = torch.linalg.inv(eye + model.weight.T @ (psi_inv[:, None] * model.weight))
        self.weight.copy_(cov @ (model.weight.T * psi_inv))
        self.bias.copy_(-self.weight @ model.bias)
        chol = torch.linalg.cholesky(cov)
        self.log_diag.copy_(torch.diagonal(chol).log())
        self.off_diag.copy_(torch.tril(chol, -1))
        return self
