r"""Flow posterior ``q_phi(z | x)`` for :class:`vi_models.VAE`: a Gaussian encoder followed by a flow.

For each observation of the plate ``"data"`` (Rezende & Mohamed 2015, Sec. 4; Kingma et
al. 2016, Sec. 4):

.. code-block:: text

    z_0 ~ q_0(z | x) = N(mu_phi(x), diag(sigma_phi(x)^2))        the GaussianEncoder
    z_K = f_K o ... o f_1 (z_0; c(x))                             K invertible layers
    log q(z_K | x) = log q_0(z_0 | x) - sum_k log |det d f_k / d z_{k-1}|      (THEORY T22)

with each layer, conditioned on the context ``c(x)`` (the flattened data, as bin centres
when ``num_levels`` is set) or shared by every ``x`` (``conditional=False``):

.. code-block:: text

    "iaf":       z_k = z_{k-1} * exp(s(z_{k-1,<j}, c)) + t(z_{k-1,<j}, c)    (Kingma et al. 2016, eq. 10)
    "coupling":  affine coupling (Dinh et al. 2017; THEORY T23), with a permutation between layers

built from Pyro's (``ConditionalAffineAutoregressive``, ``ConditionalAffineCoupling`` and
their unconditional versions), each starting near the identity (so ``q`` starts as the Gaussian
encoder's). IAF layers sample in one pass and score their own samples
through the transforms' cache; scoring an arbitrary ``z`` inverts them in ``z_dim`` passes.

The KL term has no closed form: fit with ``loss="elbo"`` or ``loss="iwae"``.
(``loss="meanfield"`` runs, but Pyro then falls back to the same Monte-Carlo estimate as
``"elbo"``; nothing analytic is gained.)

References
----------
D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever and M. Welling, "Improved
Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
L. Dinh, J. Sohl-Dickstein and S. Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import (
    AffineCoupling,
    ConditionalAffineAutoregressive,
    ConditionalAffineCoupling,
    Permute,
)
from pyro.infer.util import is_validation_enabled
from pyro.nn import (
    AutoRegressiveNN,
    ConditionalAutoRegressiveNN,
    ConditionalDenseNN,
    DenseNN,
    PyroModule,
)
from torch import Tensor, nn
from torch.distributions import Transform

from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError, DataError
from vi_models.flows.models import (
    _AffineAutoregressive,
    _permutations,
    clear_transform_caches,
    near_identity_,
)
from vi_models.nets import ActivationFactory, _check_dims, _make_activation
from vi_models.sites import DATA_PLATE, LATENT

from .encoder import GaussianEncoder

__all__ = ["FlowEncoder"]


class _ConditionalIAF(ConditionalAffineAutoregressive):
    """Pyro's conditional IAF whose conditioned layers have the dtype-correct inverse."""

    def condition(self, context: Tensor) -> _AffineAutoregressive:
        return _AffineAutoregressive(super().condition(context).arn, **self.kwargs)


class FlowEncoder(PyroModule):
    """Amortised flow posterior ``q_phi(z | x)``: Gaussian encoder, then ``num_flows`` layers (a Pyro guide).

    Samples ``LATENT`` inside ``pyro.plate(DATA_PLATE, B, dim=-1)`` with a
    ``TransformedDistribution`` of event shape ``(z_dim,)``, matching :class:`vi_models.VAE`
    and :class:`vi_models.FlowPriorVAE`. See the module docstring.

    Parameters
    ----------
    x_dim
        ``D`` for flat data ``(B, D)`` or a shape such as ``(8, 8)``; as for the model.
    z_dim
        Latent dimension (>= 2).
    hidden_dims
        Hidden widths of the Gaussian encoder network.
    num_flows
        Number of flow layers ``K``.
    flow_hidden_dims
        Hidden widths of each layer's network (each ``>= z_dim`` for ``"iaf"``).
    flow
        ``"iaf"`` (inverse autoregressive) or ``"coupling"`` (affine coupling).
    conditional
        Condition every layer on the data (``True``) or share the layers across ``x``.
    encoder, image_shape, num_levels, device, dtype, activation, conv_channels
        As for :class:`guides.GaussianEncoder` (diagonal covariance); ``activation`` is
        also used in the flow networks.

    Raises
    ------
    ConfigError
        Unknown ``flow``; ``z_dim < 2``; ``num_flows < 1``; a flow width below ``z_dim``
        for ``"iaf"``; and the :class:`GaussianEncoder` errors.

    Examples
    --------
    >>> from vi_models import VAE
    >>> vae = VAE(6, 3, hidden_dims=(8,))
    >>> guide = FlowEncoder(6, 3, hidden_dims=(8,), num_flows=2, flow_hidden_dims=(8,))
    >>> loss = pyro.infer.Trace_ELBO().differentiable_loss(vae, guide, torch.randn(4, 6))
    """

    def __init__(
        self,
        x_dim: int | tuple[int, ...],
        z_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        num_flows: int = 4,
        flow_hidden_dims: Sequence[int] = (64, 64),
        *,
        flow: Literal["iaf", "coupling"] = "iaf",
        conditional: bool = True,
        encoder: Literal["mlp", "conv"] = "mlp",
        image_shape: tuple[int, int] | None = None,
        num_levels: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        activation: ActivationFactory = nn.SiLU,
        conv_channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        self.flow_type = check_choice(flow, "flow", ("iaf", "coupling"))
        self.conditional = bool(conditional)
        z_dim = check_positive_int(z_dim, "z_dim")
        if z_dim < 2:
            raise ConfigError(
                f"expected z_dim >= 2 for a flow posterior (its layers split or order z), got {z_dim}; "
                "use guides.GaussianEncoder for a 1-D latent"
            )
        num_flows = check_positive_int(num_flows, "num_flows")
        hidden = list(_check_dims(flow_hidden_dims, "flow_hidden_dims", allow_empty=False))
        if self.flow_type == "iaf" and min(hidden) < z_dim:
            raise ConfigError(
                f"expected every flow_hidden_dims entry >= z_dim={z_dim} for flow='iaf' (a MADE needs a unit "
                f"per degree), got {tuple(hidden)}; widen the layers"
            )
        self.base_encoder = GaussianEncoder(
            x_dim, z_dim, hidden_dims, "diag", encoder, image_shape, num_levels, device, dtype,
            activation=activation, conv_channels=conv_channels,
        )
        self.num_levels = self.base_encoder.num_levels
        probe = self.base_encoder._probe
        context_dim = self.base_encoder.data_shape.numel()
        d = z_dim // 2
        self.flows = nn.ModuleList()
        for k in range(num_flows):
            act = _make_activation(activation)
            if self.flow_type == "iaf":
                order = torch.arange(z_dim) if k % 2 == 0 else torch.arange(z_dim - 1, -1, -1)
                if self.conditional:
                    arn = ConditionalAutoRegressiveNN(z_dim, context_dim, hidden, permutation=order, nonlinearity=act)
                    layer: nn.Module = _ConditionalIAF(near_identity_(arn))
                else:
                    layer = _AffineAutoregressive(near_identity_(AutoRegressiveNN(z_dim, hidden, permutation=order, nonlinearity=act)))
            elif self.conditional:
                net = ConditionalDenseNN(d, context_dim, hidden, [z_dim - d] * 2, nonlinearity=act)
                layer = ConditionalAffineCoupling(d, near_identity_(net))
            else:
                layer = AffineCoupling(d, near_identity_(DenseNN(d, hidden, [z_dim - d] * 2, nonlinearity=act)))
            self.flows.append(layer)
        factory = {"device": probe.device, "dtype": probe.dtype}
        self.register_buffer("permutations", _permutations(z_dim, num_flows, "reverse", **factory))
        self.to(**factory)

    @property
    def z_dim(self) -> int:
        """Latent dimension."""
        return self.base_encoder.z_dim

    @property
    def data_shape(self) -> torch.Size:
        """Event shape of one observation."""
        return self.base_encoder.data_shape

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, flow={self.flow_type!r}, num_flows={len(self.flows)}, conditional={self.conditional}"

    def context(self, x: Tensor) -> Tensor:
        """The layers' context ``c(x)``: flattened ``x`` (bin centres if ``num_levels``), ``(B, prod(data_shape))``."""
        if self.num_levels is not None:
            if is_validation_enabled() and not bool(((x >= 0) & (x < 1)).all()):
                raise DataError(
                    f"expected dequantised x in [0, 1) (the guide has num_levels={self.num_levels}), got values in "
                    f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; build the guide with num_levels=None for other data"
                )
            x = (torch.floor(x * self.num_levels).clamp(0, self.num_levels - 1) + 0.5) / self.num_levels
        return x.reshape(x.shape[0], -1)

    def transforms(self, x: Tensor) -> list[Transform]:
        """The layers ``f_1, ..., f_K`` for the batch ``x`` (conditioned on ``c(x)``), caches cleared."""
        clear_transform_caches(self)
        c = self.context(x) if self.conditional else None
        out: list[Transform] = []
        for perm, layer in zip(self.permutations, self.flows):
            if self.flow_type == "coupling":
                out.append(Permute(perm))
            out.append(layer.condition(c) if self.conditional else layer)
        return out

    def distribution(self, x: Tensor) -> dist.TransformedDistribution:
        """``q_phi(z | x)``: batch shape ``(B,)``, event shape ``(z_dim,)``.

        Parameters
        ----------
        x
            Data, shape ``(B, *data_shape)``.
        """
        loc, scale = self.base_encoder.encode(x)  # (B, z_dim) each; checks x
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), self.transforms(x))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A point code and the base scale, for :meth:`VAE.reconstruct` / :meth:`VAE.interpolate`.

        Returns
        -------
        loc, scale
            ``f(mu_phi(x))``, the base mean pushed through the flow, ``(B, z_dim)``; and the base
            standard deviations ``sigma_phi(x)``, ``(B, z_dim)`` (the flow has no single scale).
        """
        loc, scale = self.base_encoder.encode(x)
        for t in self.transforms(x):
            loc = t(loc)
        return loc, scale

    def forward(self, x: Tensor) -> Tensor:
        """The Pyro guide: sample ``z ~ q_phi(z | x)`` at ``LATENT`` inside the ``DATA_PLATE`` plate.

        Parameters
        ----------
        x
            Data, shape ``(B, *data_shape)``.

        Returns
        -------
        Tensor
            ``z`` of shape ``(..., B, z_dim)``.
        """
        q = self.distribution(x)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return pyro.sample(LATENT, q)
