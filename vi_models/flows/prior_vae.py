"""A VAE whose prior is a normalizing flow learned with the decoder (see :class:`FlowPriorVAE`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pyro.distributions as dist
import torch
from torch import Tensor

from vi_models.errors import ConfigError
from vi_models.vae.vae import VAE

from .models import NormalizingFlow, RealNVP

__all__ = ["FlowPriorVAE"]


class FlowPriorVAE(VAE):
    r"""VAE whose prior ``p(z)`` is a normalizing flow learned with the decoder.

    Generative story: ``z_i ~ p_psi(z)`` (a :class:`NormalizingFlow` over ``R^{z_dim}``,
    default :class:`RealNVP`), ``x_i | z_i ~ p_theta(x | z_i)`` as in :class:`VAE`. A learned
    prior tightens the ELBO's KL term ``KL(q(z|x) || p_psi(z))`` (Tomczak & Welling 2018;
    Chen et al. 2017, "Variational Lossy Autoencoder", Sec. 3.2). The KL has no closed form:
    ``loss="meanfield"`` falls back to the Monte-Carlo term, the same as ``loss="elbo"``.

    Parameters
    ----------
    x_dim, z_dim, hidden_dims, likelihood
        As for :class:`VAE` (``z_dim >= 2``).
    prior_flow
        A :class:`NormalizingFlow` with ``dim == z_dim`` and ``domain="real"``; default
        ``RealNVP(z_dim, flow_layers, flow_hidden_dims)`` on the VAE's device and dtype.
    flow_layers, flow_hidden_dims
        Size of the default prior flow.
    **vae_kwargs
        Any other :class:`VAE` argument (``num_levels``, ``decoder``, ``device``, ``dtype``, ...).

    Raises
    ------
    ConfigError
        As for :class:`VAE`; a ``prior_flow`` of the wrong dimension or domain.

    Examples
    --------
    >>> from guides import GaussianEncoder
    >>> vae = FlowPriorVAE(6, 2, hidden_dims=(8,), flow_layers=2, flow_hidden_dims=(8,))
    >>> loss = pyro.infer.Trace_ELBO().differentiable_loss(vae, GaussianEncoder(6, 2, (8,)), torch.randn(4, 6))
    >>> vae.sample(3).shape
    torch.Size([3, 6])
    """

    def __init__(
        self,
        x_dim: int | tuple[int, ...],
        z_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        likelihood: Literal["gaussian", "bernoulli", "categorical"] = "gaussian",
        *,
        prior_flow: NormalizingFlow | None = None,
        flow_layers: int = 4,
        flow_hidden_dims: Sequence[int] = (64, 64),
        **vae_kwargs: Any,
    ) -> None:
        super().__init__(x_dim, z_dim, hidden_dims, likelihood, **vae_kwargs)
        if prior_flow is None:
            if self.z_dim < 2:
                raise ConfigError(f"expected z_dim >= 2 for a flow prior (coupling layers split z), got {self.z_dim}")
            prior_flow = RealNVP(
                self.z_dim, flow_layers, flow_hidden_dims, device=self.prior_loc.device, dtype=self.prior_loc.dtype
            )
        if not isinstance(prior_flow, NormalizingFlow) or prior_flow.dim != self.z_dim or prior_flow.domain != "real":
            got = f"{type(prior_flow).__name__}(dim={getattr(prior_flow, 'dim', '?')}, domain={getattr(prior_flow, 'domain', '?')!r})"
            raise ConfigError(
                f"expected prior_flow to be a NormalizingFlow with dim=z_dim={self.z_dim} and domain='real', "
                f"got {got}; build it as RealNVP({self.z_dim}, ...)"
            )
        self.prior_flow = prior_flow

    def prior(self) -> dist.Distribution:
        """The flow prior ``p_psi(z)``: batch shape ``()``, event shape ``(z_dim,)``."""
        return self.prior_flow.distribution()

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``z ~ p_psi(z)``, then ``x ~ p_theta(x | z)`` (THEORY T26); see :meth:`VAE.sample`.

        Returns
        -------
        Tensor
            Shape ``(n, *data_shape)``.
        """
        z = self.prior_flow.sample(n, generator=generator)  # (n, z_dim)
        return self._draw(self._decoder_output(z), mean, generator)
