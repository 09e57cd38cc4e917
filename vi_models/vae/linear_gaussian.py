"""Linear-Gaussian latent variable model: probabilistic PCA and factor analysis.

Generative story (Tipping & Bishop 1999, eq. 2; Bishop 2006, section 12.2)::

    z ~ N(0, I_q)
    x | z ~ N(W z + b, Psi),   Psi = sigma^2 I_d ("isotropic": PPCA) or diag(psi) ("diagonal": FA)

Everything is Gaussian, so the marginal p(x) = N(b, W W^T + Psi) and the posterior
p(z | x) = N(S W^T Psi^-1 (x - b), S), S = (I + W^T Psi^-1 W)^-1, are closed form
(Bishop 2006, eqs. 12.42 and 12.41-12.42). That makes the model the reference case for the
ELBO identities of THEORY T1/T2/T8: log p(x) - ELBO(q) = KL(q || p(z | x)) can be checked
exactly. Its guide is :class:`guides.LinearGaussianEncoder`; a linear VAE fitted by SVI
reaches the PPCA maximum likelihood (Lucas et al. 2019).
"""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from vi_models._validation import as_data_tensor, check_choice, check_positive_int
from vi_models.errors import DataError
from vi_models.sites import DATA_PLATE, LATENT, OBSERVED

__all__ = ["LinearGaussian"]


class LinearGaussian(PyroModule):
    """Probabilistic PCA (``noise="isotropic"``) or factor analysis (``noise="diagonal"``).

    Args:
        x_dim: d, dimension of the observations.
        z_dim: q, dimension of the latent space.
        noise: ``"isotropic"`` (one sigma) or ``"diagonal"`` (one per dimension).
        device, dtype: where and in which precision the parameters live.

    Example:
        >>> model = LinearGaussian(5, 2)
        >>> model.log_prob(torch.zeros(3, 5)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        *,
        noise: Literal["isotropic", "diagonal"] = "isotropic",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.x_dim = check_positive_int(x_dim, "x_dim")
        self.z_dim = check_positive_int(z_dim, "z_dim")
        self.noise = check_choice(noise, "noise", ("isotropic", "diagonal"))
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(0.1 * torch.randn(self.x_dim, self.z_dim, **kw))  # W: (d, q)
        self.bias = nn.Parameter(torch.zeros(self.x_dim, **kw))  # b: (d,)
        self.log_scale = nn.Parameter(torch.zeros(1 if noise == "isotropic" else self.x_dim, **kw))

    @property
    def scale(self) -> torch.Tensor:
        """Observation noise standard deviation, shape ``(d,)``."""
        return self.log_scale.exp().expand(self.x_dim)

    def forward(self, x: torch.Tensor | None = None, *, num_samples: int | None = None) -> torch.Tensor:
        """The Pyro model over a batch ``x`` of shape ``(B, d)`` (or ``num_samples`` prior draws)."""
        if x is not None and (x.dim() < 1 or x.shape[-1] != self.x_dim):
            raise DataError(f"expected x of shape (B, {self.x_dim}), got {tuple(x.shape)}")
        batch = x.shape[-2] if x is not None else (num_samples or 1)
        zeros = self.bias.new_zeros(self.z_dim)
        with pyro.plate(DATA_PLATE, batch):
            z = pyro.sample(LATENT, dist.Normal(zeros, 1.0).to_event(1))
            loc = (self.weight * z.unsqueeze(-2)).sum(-1) + self.bias  # (..., B, d); broadcasts over particles
            return pyro.sample(OBSERVED, dist.Normal(loc, self.scale).to_event(1), obs=x)

    def marginal(self) -> dist.MultivariateNormal:
        """p(x) = N(b, W W^T + Psi) (Bishop 2006, eq. 12.35)."""
        cov = self.weight @ self.weight.T + torch.diag(self.scale**2)
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x), shape ``(B,)`` for ``x`` of shape ``(B, d)``."""
        x = as_data_tensor(x, name="x", dtype=self.bias.dtype, device=self.bias.device)
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """Exact p(z | x) for ``x`` of shape ``(B, d)``: batch shape ``(B,)``, event ``(q,)``."""
        psi_inv = self.scale**-2
        eye = torch.eye(self.z_dim, dtype=self.bias.dtype, device=self.bias.device)
        precision = eye + self.weight.T @ (psi_inv[:, None] * self.weight)
        cov = torch.linalg.inv(precision)
        mean = (x - self.bias) @ (psi_inv[:, None] * self.weight) @ cov  # (B, q)
        return dist.MultivariateNormal(mean, covariance_matrix=cov)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws from p(x), shape ``(n, d)``."""
        with torch.no_grad():
            return self.marginal().sample((check_positive_int(n, "n"),))
