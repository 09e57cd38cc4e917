r"""Amortised Gaussian guide ``q_phi(z | x)`` for :class:`vi_models.VAE` (Kingma & Welling 2014).

For each observation of the plate ``"data"``:

.. code-block:: text

    (mu, sigma, l) = NN_phi(x)                                   encoder network, App. C.2
    diag:  q_phi(z | x) = N(mu, diag(sigma^2))                   eq. (9)
    full:  q_phi(z | x) = N(mu, L L^T),  L = diag(sigma) + strictly-lower(l)
    z = mu + L eps,  eps ~ N(0, I)                               reparameterisation, eq. (10)

with ``sigma = softplus(.) + 1e-4`` so the Cholesky factor always has a positive diagonal.
Against the prior ``N(0, I)`` both covariances have an analytic KL (App. B for the diagonal
one; :mod:`vi_models._kl` registers the full one), used by ``TraceMeanField_ELBO``.

References
----------
D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from torch import Tensor, nn

from vi_models._validation import check_choice, check_positive_int, resolve_device
from vi_models.errors import DataError
from vi_models.nets import MLP, ActivationFactory, ConvEncoder, check_batch, resolve_data_shape
from vi_models.sites import DATA_PLATE, LATENT

__all__ = ["GaussianEncoder"]

#: Floor on the guide's standard deviations / Cholesky diagonal: keeps log det finite.
SCALE_FLOOR = 1e-4


class GaussianEncoder(PyroModule):
    """Amortised Gaussian guide ``q_phi(z | x) = N(mu_phi(x), Sigma_phi(x))`` (a Pyro guide).

    Samples the site ``LATENT`` inside ``pyro.plate(DATA_PLATE, B, dim=-1)``, matching
    :class:`vi_models.VAE`; it takes the same float data as the model for every likelihood.

    Parameters
    ----------
    x_dim
        ``D`` for flat data ``(B, D)`` or a shape such as ``(8, 8)``; as for the model.
    z_dim
        Latent dimension (the model's).
    hidden_dims
        Hidden widths of the encoder MLP (for ``encoder="conv"``: of the MLP after the convolutions).
    covariance
        ``"diag"``: ``Normal(mu, sigma).to_event(1)``; ``"full"``:
        ``MultivariateNormal(mu, scale_tril=L)``.
    encoder
        ``"mlp"``, or ``"conv"`` (strided convolutions; needs one-channel images).
    image_shape
        ``(H, W)`` to encode flat data with ``encoder="conv"``.
    num_levels
        For dequantised data ``x = (k + u) / L``: feed the network the bin centre
        ``(floor(L x) + 0.5) / L`` instead of ``x``, so ``q(z | x)`` depends on the level ``k``
        only, like the categorical likelihood. ``None`` (default) feeds ``x`` as given.
    device, dtype
        Where and in which floating dtype the parameters live.
    activation
        Activation factory of the networks (default ``nn.SiLU``).
    conv_channels
        Channels of the strided convolutions (``encoder="conv"``).

    Raises
    ------
    ConfigError
        Unknown ``covariance`` or ``encoder``, sizes < 1, ``num_levels < 2``, or
        ``encoder="conv"`` without an image shape.

    Examples
    --------
    >>> guide = GaussianEncoder(64, 4, hidden_dims=(32,), covariance="full")
    >>> loc, scale_tril = guide.encode(torch.rand(5, 64))
    >>> loc.shape, scale_tril.shape
    (torch.Size([5, 4]), torch.Size([5, 4, 4]))
    """

    def __init__(
        self,
        x_dim: int | tuple[int, ...],
        z_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        covariance: Literal["diag", "full"] = "diag",
        encoder: Literal["mlp", "conv"] = "mlp",
        image_shape: tuple[int, int] | None = None,
        num_levels: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        activation: ActivationFactory = nn.SiLU,
        conv_channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        self.covariance = check_choice(covariance, "covariance", ("diag", "full"))
        self.encoder_type = check_choice(encoder, "encoder", ("mlp", "conv"))
        self._z_dim = check_positive_int(z_dim, "z_dim")
        self.num_levels = None if num_levels is None else check_positive_int(num_levels, "num_levels", minimum=2)
        self._data_shape, self.image_shape = resolve_data_shape(
            x_dim, image_shape, conv=self.encoder_type == "conv", what="encoder='conv'"
        )
        factory = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}

        d = self._z_dim
        # Network output: mu (d), pre-softplus sigma (d), and for "full" the d(d-1)/2 entries
        # strictly below the diagonal of L.
        num_out = 2 * d + (d * (d - 1) // 2 if self.covariance == "full" else 0)
        if self.encoder_type == "mlp":
            self.encoder_net: nn.Module = MLP(self._data_shape.numel(), num_out, hidden_dims, activation, **factory)
        else:
            self.encoder_net = ConvEncoder(
                self.image_shape, num_out, 1, conv_channels, hidden_dims, activation, **factory
            )
        # Integer buffers: follow .to(device) but not .to(dtype); a float one is the dtype probe.
        self.register_buffer("tril_index", torch.tril_indices(d, d, offset=-1, device=factory["device"]), persistent=False)
        self.register_buffer("_probe", torch.zeros((), **factory), persistent=False)

    @property
    def z_dim(self) -> int:
        """Latent dimension."""
        return self._z_dim

    @property
    def data_shape(self) -> torch.Size:
        """Event shape of one observation."""
        return self._data_shape

    def extra_repr(self) -> str:
        return f"data_shape={tuple(self._data_shape)}, z_dim={self._z_dim}, covariance={self.covariance!r}"

    def _network_input(self, x: Tensor) -> Tensor:
        """``x`` (B, *data_shape) -> (B, D) for the MLP or (B, 1, H, W) for the convolutions."""
        if self.num_levels is not None:
            if is_validation_enabled() and not bool(((x >= 0) & (x < 1)).all()):
                raise DataError(
                    f"expected dequantised x in [0, 1) (the guide has num_levels={self.num_levels}), got "
                    f"values in [{float(x.min()):.3g}, {float(x.max()):.3g}]; pass (k + u) / num_levels, "
                    "or build the guide with num_levels=None for other data"
                )
            levels = torch.floor(x * self.num_levels).clamp(0, self.num_levels - 1)
            x = (levels + 0.5) / self.num_levels  # bin centre: q depends on k only
        if self.encoder_type == "conv":
            return x.reshape(x.shape[0], 1, *self.image_shape)
        return x.reshape(x.shape[0], -1)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parameters of ``q_phi(z | x)``.

        Parameters
        ----------
        x
            Data, shape ``(B, *data_shape)``.

        Returns
        -------
        loc, scale
            ``loc`` of shape ``(B, z_dim)``; ``scale`` the standard deviations ``(B, z_dim)``
            (``"diag"``) or the lower-triangular Cholesky factor ``L`` with positive diagonal,
            ``(B, z_dim, z_dim)`` (``"full"``).

        Raises
        ------
        DataError
            ``x`` of the wrong shape, dtype or device (or, with validation on, NaN/inf or
            values outside [0, 1) when ``num_levels`` is set).
        """
        check_batch(x, self._data_shape, like=self._probe)
        d = self._z_dim
        out = self.encoder_net(self._network_input(x))  # (B, num_out)
        loc = out[..., :d]
        sigma = F.softplus(out[..., d : 2 * d]) + SCALE_FLOOR  # (B, d)
        if self.covariance == "diag":
            return loc, sigma
        rows, cols = self.tril_index
        scale_tril = torch.diag_embed(sigma)  # (B, d, d), a fresh tensor: safe to fill in place
        scale_tril[..., rows, cols] = out[..., 2 * d :]
        return loc, scale_tril

    def distribution(self, x: Tensor) -> dist.Distribution:
        """``q_phi(z | x)`` with batch shape ``(B,)`` and event shape ``(z_dim,)``."""
        loc, scale = self.encode(x)
        if self.covariance == "diag":
            return dist.Normal(loc, scale).to_event(1)
        return dist.MultivariateNormal(loc, scale_tril=scale)

    def forward(self, x: Tensor) -> Tensor:
        """The Pyro guide: sample ``z ~ q_phi(z | x)`` at ``LATENT`` inside the ``DATA_PLATE`` plate.

        Parameters
        ----------
        x
            Data, shape ``(B, *data_shape)`` (the same float tensor the model gets).

        Returns
        -------
        Tensor
            ``z`` of shape ``(..., B, z_dim)`` (leading dims from outer plates such as
            vectorised particles).
        """
        q = self.distribution(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return pyro.sample(LATENT, q)
