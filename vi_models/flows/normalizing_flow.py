r"""The normalizing-flow base class: a flow as a Pyro model with an exact density.

:class:`NormalizingFlow` holds what every flow of :mod:`vi_models.flows` shares: the base
distribution (N(0, I) as buffers, or a learned :class:`~vi_models.flows.bases.GaussianMixtureBase`),
the data-end :class:`~vi_models.flows.layers.ActNorm` and optional logistic squash, the exact
log-density by change of variables (THEORY T22),

.. code-block:: text

    log p(x) = log p_0(z_0) - sum_k log |det d f_k / d z_{k-1}|,   z_0 = f^{-1}(x)

sampling, the Pyro model (one observed site, so ``inference.fit(flow, None, data,
loss="elbo")`` is maximum likelihood) and the data-dependent start (:meth:`initialize`).
Subclasses only list their layers (``_steps``).
"""

from __future__ import annotations

from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions import (
    AffineTransform,
    ComposeTransform,
    SigmoidTransform,
    Transform,
)

from vi_models._validation import check_choice, check_positive_int, resolve_device
from vi_models.errors import ConfigError, DataError
from vi_models.nets import check_batch
from vi_models.sites import DATA_PLATE, OBSERVED

from .bases import BaseName, GaussianMixtureBase
from .layers import (
    ActNorm,
    _check_float,
    clear_transform_caches,
)

__all__ = ["NormalizingFlow"]

Domain = Literal["real", "unit"]


class NormalizingFlow(PyroModule):
    """Base class: a density ``p(x)`` on ``R^D`` (or ``[0, 1)^D``) by a stack of invertible layers.

    Subclasses fill ``self.layers`` (an ``nn.ModuleList`` of Pyro ``TransformModule``) and may
    override :meth:`_steps` to interleave parameter-free transforms. See the module docstring
    for the generative story.

    Parameters
    ----------
    dim
        Data dimension ``D`` (>= 2: coupling layers split the vector in two).
    domain
        ``"real"``: ``x`` in ``R^D``. ``"unit"``: ``x`` in ``[0, 1)^D`` (dequantised data), by
        a final logistic squash ``x = (sigmoid(u) - alpha) / (1 - 2 alpha)`` (Dinh et al.
        2017, Sec. 4.1), whose log-Jacobian is part of ``log p(x)``.
    alpha
        Margin of the ``"unit"`` squash, in ``(0, 0.5)``: the support is
        ``(-alpha, 1 - alpha) / (1 - 2 alpha)``, slightly wider than ``[0, 1)``.
    base
        ``"normal"``: ``p_0 = N(0, I)`` (buffers). ``"mixture"``: a learned diagonal Gaussian
        mixture with ``num_components`` components (:class:`~vi_models.flows.bases.GaussianMixtureBase`),
        trained with the layers; :meth:`initialize` starts it from EM on the data.
    num_components
        Components of the ``"mixture"`` base (ignored for ``"normal"``).
    device, dtype
        Where and in which floating dtype parameters and buffers live (default CPU and
        ``torch.get_default_dtype()``); ``.to(...)`` moves them later.

    Attributes
    ----------
    is_discrete : bool
        ``False``: ``log_prob`` is a density.
    """

    is_discrete = False

    def __init__(
        self,
        dim: int,
        *,
        domain: Domain = "real",
        alpha: float = 0.05,
        base: BaseName = "normal",
        num_components: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._dim = check_positive_int(dim, "dim", minimum=2)
        self.domain = check_choice(domain, "domain", ("real", "unit"))
        self.alpha = _check_float(alpha, "alpha", low=0.0, high=0.5)
        self._factory = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}
        # p_0(z) = N(0, I): buffers, so the base follows .to(device/dtype) with the parameters.
        self.register_buffer("base_loc", torch.zeros(self._dim, **self._factory), persistent=False)
        self.register_buffer("base_scale", torch.ones(self._dim, **self._factory), persistent=False)
        self.base_name = check_choice(base, "base", ("normal", "mixture"))
        if self.base_name == "mixture":
            self.base_mixture = GaussianMixtureBase(self._dim, num_components, **self._factory)
        self.layers = nn.ModuleList()
        self.actnorm = ActNorm(self._dim, **self._factory)

    # ------------------------------------------------------------------ structure

    @property
    def dim(self) -> int:
        """Data dimension ``D``."""
        return self._dim

    @property
    def data_shape(self) -> torch.Size:
        """Event shape of one observation, ``(D,)``."""
        return torch.Size([self._dim])

    def _steps(self) -> list[Transform]:
        """The learnable layers in generative order ``z -> x`` (before ActNorm and the squash)."""
        return list(self.layers)

    def _squash(self) -> list[Transform]:
        if self.domain == "real":
            return []
        a = self.alpha
        return [SigmoidTransform(), AffineTransform(-a / (1 - 2 * a), 1 / (1 - 2 * a))]

    def transform(self) -> ComposeTransform:
        """The bijection ``f: z -> x`` from the base space to data space, caches cleared.

        Returns
        -------
        ComposeTransform
            ``f(z)`` maps ``(..., D) -> (..., D)``; ``f.inv(x)`` inverts it and
            ``f.log_abs_det_jacobian(z, x)`` is ``log|det df/dz|`` of shape ``(...)``.
        """
        clear_transform_caches(self)
        return ComposeTransform([*self._steps(), self.actnorm, *self._squash()])

    def base(self) -> dist.Distribution:
        """``p_0``: ``N(0, I_D)`` or the learned mixture; batch shape ``()``, event shape ``(D,)``."""
        if self.base_name == "mixture":
            return self.base_mixture.distribution()
        return dist.Normal(self.base_loc, self.base_scale).to_event(1)

    def distribution(self) -> dist.TransformedDistribution:
        """The flow density ``p(x)``: batch shape ``()``, event shape ``(D,)``."""
        clear_transform_caches(self)
        return dist.TransformedDistribution(self.base(), [*self._steps(), self.actnorm, *self._squash()])

    def extra_repr(self) -> str:
        return f"dim={self._dim}, num_layers={len(self.layers)}, domain={self.domain!r}, base={self.base_name!r}"

    # ------------------------------------------------------------------ density and samples

    def _check_data(self, x: Any, name: str = "x") -> Tensor:
        check_batch(x, self.data_shape, like=self.base_loc, name=name)
        if self.domain == "unit":
            a = self.alpha
            low, high = -a / (1 - 2 * a), (1 - a) / (1 - 2 * a)
            if not bool(((x > low) & (x < high)).all()):
                raise DataError(
                    f"expected {name} in [0, 1) for domain='unit' (support ({low:.4g}, {high:.4g})), got values in "
                    f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; rescale the data to [0, 1) or use domain='real'"
                )
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` by change of variables (THEORY T22), differentiable in the parameters.

        Parameters
        ----------
        x
            Data, shape ``(B, D)``, the module's dtype and device.

        Returns
        -------
        Tensor
            Shape ``(B,)``, nats.

        Raises
        ------
        DataError
            ``x`` of the wrong shape, dtype or device; outside ``[0, 1)`` for ``domain="unit"``.
        """
        self._check_data(x)
        return self.distribution().log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``z ~ N(0, I)`` and return ``x = f(z)``, without gradients.

        Parameters
        ----------
        n
            Number of samples.
        generator
            Random generator on the module's device, for reproducible draws.

        Returns
        -------
        Tensor
            Shape ``(n, D)``.
        """
        n = check_positive_int(n, "n")
        if self.base_name == "mixture":
            return self.transform()(self.base_mixture.sample(n, generator))
        z = torch.randn(n, self._dim, generator=generator, device=self.base_loc.device, dtype=self.base_loc.dtype)
        return self.transform()(z * self.base_scale + self.base_loc)

    def forward(self, x: Tensor | None = None, *, num_samples: int | None = None) -> Tensor:
        """The Pyro model: ``x ~ p(x)`` at site ``OBSERVED`` inside ``pyro.plate(DATA_PLATE, B, dim=-1)``.

        Parameters
        ----------
        x
            Data, shape ``(B, D)``; ``None`` to sample.
        num_samples
            ``B`` when ``x`` is ``None``.

        Returns
        -------
        Tensor
            The site's value, shape ``(..., B, D)``.

        Raises
        ------
        ConfigError
            Both or neither of ``x`` and ``num_samples``.
        DataError
            As :meth:`log_prob`.
        """
        if (x is None) == (num_samples is None):
            raise ConfigError(
                "expected either data x of shape (B, D) or num_samples, "
                f"got {'both' if x is not None else 'neither'}; pass exactly one"
            )
        if x is None:
            batch_size = check_positive_int(num_samples, "num_samples")
        else:
            self._check_data(x)
            batch_size = x.shape[0]
        with pyro.plate(DATA_PLATE, batch_size, dim=-1):
            return pyro.sample(OBSERVED, self.distribution(), obs=x)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> NormalizingFlow:
        """Data-dependent start of :class:`ActNorm` (Glow, Sec. 3.1): standardise ``x`` on entry.

        Sets ``loc`` and ``log_scale`` so that the data, mapped back through the squash
        (``domain="unit"``), have mean 0 and standard deviation 1 per dimension under ActNorm's
        inverse. Optional; call it once before fitting. A mixture base keeps its own start:
        :func:`inference.initialize_flow` calls this and then fits the base by EM to the data
        mapped back to the base space, so that the flow starts as that mixture.

        Parameters
        ----------
        x
            Training data (or a large batch), shape ``(N, D)``, ``N >= 2``.

        Returns
        -------
        NormalizingFlow
            ``self``, for chaining.
        """
        self._check_data(x)
        if x.shape[0] < 2:
            raise DataError(f"expected at least 2 rows to estimate a scale, got {x.shape[0]}")
        u = x
        for t in reversed(self._squash()):
            u = t.inv(u)
        std = u.std(0).clamp_min(1e-3)
        self.actnorm.loc.copy_(u.mean(0))
        self.actnorm.log_scale.copy_(std.log())
        return self


def _permutations(dim: int, num_layers: int, kind: str, **factory: Any) -> Tensor:
    """``(num_layers, dim)`` permutations: alternately reversed, or fixed random ones (seeded by layer)."""
    if kind == "reverse":
        rows = [torch.arange(dim) if k % 2 == 0 else torch.arange(dim - 1, -1, -1) for k in range(num_layers)]
    else:
        rows = [torch.randperm(dim, generator=torch.Generator().manual_seed(k)) for k in range(num_layers)]
    return torch.stack(rows).to(device=factory["device"])
