r"""Normalizing flows: exact densities by change of variables, as Pyro models.

Generative story, for each observation ``i`` of the plate ``"data"`` (``D = dim``):

.. code-block:: text

    z_i ~ p_0(z) = N(0, I_D)                                   base distribution (buffers), or a
                                                               learned Gaussian mixture (base="mixture")
    x_i = f(z_i) = a o f_K o ... o f_1 (z_i)                   K invertible layers, then ActNorm a
                                                               (and a logistic squash for domain="unit")

and the exact log-density by change of variables (THEORY T22; Dinh et al. 2017, eq. 3):

.. code-block:: text

    log p(x) = log p_0(z_0) - sum_k log |det d f_k / d z_{k-1}|,   z_0 = f^{-1}(x)

The layers are Pyro's transforms, not rewritten:

* :class:`RealNVP`: affine coupling (Dinh et al. 2017, eqs. 4-6; THEORY T23),
  ``y_{1:d} = x_{1:d}``, ``y_{d+1:D} = x_{d+1:D} * exp(s(x_{1:d})) + t(x_{1:d})``, whose
  Jacobian is triangular with ``log|det| = sum s(x_{1:d})``
  (:class:`pyro.distributions.transforms.AffineCoupling`), with a permutation between layers;
* :class:`SplineFlow`: rational-quadratic spline coupling (Durkan et al. 2019, Sec. 3.1,
  eqs. 4-6) on ``[-bound, bound]``, the identity outside
  (:class:`pyro.distributions.transforms.SplineCoupling` with ``order="quadratic"``);
* :class:`MAF`: masked autoregressive flow (Papamakarios et al. 2017, eqs. 2-4), the inverse
  of Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive` (an IAF layer), so
  that ``log p(x)`` takes one network pass per layer and sampling ``D`` passes.

Two pieces Pyro lacks are written in the package: :class:`ActNorm` (Kingma & Dhariwal 2018, Sec. 3.1),
a learned per-dimension affine map at the data end with an optional data-dependent start
(:meth:`NormalizingFlow.initialize`; :mod:`vi_models.flows.layers`), and the bookkeeping that makes a flow a
:class:`~pyro.nn.PyroModule` (parameters in ``nn.ModuleList``; base distribution and
permutations as buffers, so ``.to(device)`` and ``state_dict`` cover everything;
:mod:`vi_models.flows.normalizing_flow`). Pyro's
permutation transform is rebuilt from a buffer on every call, and the transforms' caches are
cleared whenever a distribution is built, so a cached inverse never outlives a parameter
update.

Fitting is maximum likelihood through the ordinary engine: the model has a single sample
site, the observed ``x``, so with ``guide=None`` the ELBO equals ``log p(x)`` exactly and
``inference.fit(flow, None, data, loss="elbo")`` maximises it. A flow also serves as a
learned VAE prior (:class:`FlowPriorVAE`) and, conditioned on ``x``, as a VAE posterior
(:class:`guides.FlowEncoder`).

References
----------
L. Dinh, J. Sohl-Dickstein and S. Bengio, "Density estimation using Real NVP", ICLR 2017.
C. Durkan, A. Bekasov, I. Murray and G. Papamakarios, "Neural Spline Flows", NeurIPS 2019.
G. Papamakarios, T. Pavlakou and I. Murray, "Masked Autoregressive Flow for Density
Estimation", NeurIPS 2017.
D. P. Kingma and P. Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
NeurIPS 2018.
J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018 (learned priors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pyro.distributions.transforms import (
    AffineAutoregressive,
    AffineCoupling,
    Permute,
    SplineCoupling,
)
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import AutoRegressiveNN, DenseNN
from torch import Tensor, nn
from torch.distributions import Transform

from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError
from vi_models.nets import ActivationFactory, _check_dims, _make_activation

from .bases import BaseName
from .layers import (
    _IDENTITY_DERIVATIVE,
    ActNorm,
    _check_float,
    _spline_identity_bias,
    clear_transform_caches,
    near_identity_,
)
from .normalizing_flow import Domain, NormalizingFlow, _permutations

__all__ = [
    "MAF",
    "ActNorm",
    "NormalizingFlow",
    "RealNVP",
    "SplineFlow",
    "clear_transform_caches",
    "near_identity_",
]


class _CouplingFlow(NormalizingFlow):
    """Coupling layers with a fixed permutation of the coordinates before each one."""

    def __init__(self, dim: int, num_layers: int, permutation: str, **kwargs: Any) -> None:
        super().__init__(dim, **kwargs)
        self._num_layers = check_positive_int(num_layers, "num_layers")
        kind = check_choice(permutation, "permutation", ("reverse", "random"))
        # Persistent: the permutations are part of the model (state_dict round-trips them).
        self.register_buffer("permutations", _permutations(self._dim, self._num_layers, kind, **self._factory))

    def _steps(self) -> list[Transform]:
        steps: list[Transform] = []
        for perm, layer in zip(self.permutations, self.layers):
            steps += [Permute(perm), layer]
        return steps


class RealNVP(_CouplingFlow):
    r"""RealNVP: a stack of affine coupling layers (Dinh et al. 2017; THEORY T22, T23).

    Layer ``k`` permutes the coordinates, then applies
    ``y_{1:d} = x_{1:d}``, ``y_{d+1:D} = x_{d+1:D} * exp(s(x_{1:d})) + t(x_{1:d})`` with
    ``d = D // 2`` and ``(t, s)`` one MLP (Pyro's ``AffineCoupling`` and ``DenseNN``;
    ``s`` clipped to ``[-5, 3]``). Exact ``log p(x)`` in one pass, sampling in one pass.

    Parameters
    ----------
    dim
        Data dimension ``D >= 2``.
    num_layers
        Number of coupling layers ``K``.
    hidden_dims
        Hidden widths of each coupling network.
    permutation
        ``"reverse"`` (alternate the halves; in 2-D the swap) or ``"random"`` (fixed,
        seeded per layer).
    activation
        Activation factory of the coupling networks (default ``nn.ReLU``).
    domain, alpha, device, dtype
        See :class:`NormalizingFlow`.

    Raises
    ------
    ConfigError
        ``dim < 2``, ``num_layers < 1``, malformed ``hidden_dims``, unknown option.

    Examples
    --------
    >>> flow = RealNVP(2, num_layers=4, hidden_dims=(16,))
    >>> x = flow.sample(5)
    >>> flow.log_prob(x).shape
    torch.Size([5])
    >>> loss = pyro.infer.Trace_ELBO().differentiable_loss(flow, lambda x: None, x)
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 8,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        permutation: Literal["reverse", "random"] = "reverse",
        activation: ActivationFactory = nn.ReLU,
        domain: Domain = "real",
        alpha: float = 0.05,
        base: BaseName = "normal",
        num_components: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, num_layers, permutation, domain=domain, alpha=alpha, base=base,
                         num_components=num_components, device=device, dtype=dtype)
        hidden = list(_check_dims(hidden_dims, "hidden_dims", allow_empty=False))
        d = self._dim // 2
        for _ in range(self._num_layers):
            net = DenseNN(d, hidden, param_dims=[self._dim - d, self._dim - d], nonlinearity=_make_activation(activation))
            self.layers.append(AffineCoupling(d, near_identity_(net)))
        self.to(**self._factory)


class SplineFlow(_CouplingFlow):
    r"""Neural spline flow: rational-quadratic spline coupling layers (Durkan et al. 2019).

    Layer ``k`` permutes the coordinates, then maps the first ``d = D // 2`` coordinates by
    learned elementwise splines and the rest by splines whose knots (``count_bins`` bins:
    widths, heights, inner derivatives; Sec. 3.1, eqs. 4-6) are an MLP of the first ``d``
    (Pyro's ``SplineCoupling`` with ``order="quadratic"``). Each spline is monotone on
    ``[-bound, bound]`` and the identity outside it (linear tails).

    Parameters
    ----------
    dim
        Data dimension ``D >= 2``.
    num_layers
        Number of coupling layers.
    hidden_dims
        Hidden widths of each conditioner network.
    count_bins
        Number of spline bins ``K``.
    bound
        Half-width ``B`` of the spline's box ``[-B, B]``.
    permutation, activation, domain, alpha, device, dtype
        As for :class:`RealNVP`.

    Raises
    ------
    ConfigError
        As for :class:`RealNVP`; ``count_bins < 2`` or ``bound <= 0``.

    Examples
    --------
    >>> flow = SplineFlow(2, num_layers=2, hidden_dims=(16,))
    >>> flow.log_prob(flow.sample(3)).shape
    torch.Size([3])
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        count_bins: int = 8,
        bound: float = 4.0,
        permutation: Literal["reverse", "random"] = "reverse",
        activation: ActivationFactory = nn.ReLU,
        domain: Domain = "real",
        alpha: float = 0.05,
        base: BaseName = "normal",
        num_components: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, num_layers, permutation, domain=domain, alpha=alpha, base=base,
                         num_components=num_components, device=device, dtype=dtype)
        hidden = list(_check_dims(hidden_dims, "hidden_dims", allow_empty=False))
        self.count_bins = check_positive_int(count_bins, "count_bins", minimum=2)
        self.bound = _check_float(bound, "bound", low=0.0)
        d, rest, k = self._dim // 2, self._dim - self._dim // 2, self.count_bins
        for _ in range(self._num_layers):
            # Quadratic splines take (widths, heights, inner derivatives) per coordinate.
            net = DenseNN(d, hidden, param_dims=[rest * k, rest * k, rest * (k - 1)], nonlinearity=_make_activation(activation))
            layer = SplineCoupling(self._dim, d, near_identity_(net, bias=_spline_identity_bias(rest, k)), count_bins=k, bound=self.bound, order="quadratic")
            with torch.no_grad():  # the unconditional splines of the first half start as the identity too
                layer.lower_spline.unnormalized_widths.zero_()
                layer.lower_spline.unnormalized_heights.zero_()
                layer.lower_spline.unnormalized_derivatives.fill_(_IDENTITY_DERIVATIVE)
            self.layers.append(layer)
        self.to(**self._factory)


class _AffineAutoregressive(AffineAutoregressive):
    """Pyro's IAF layer with a dtype-correct sequential inverse.

    Pyro 1.9's ``AffineAutoregressive._inverse`` starts from ``torch.zeros`` in the *default*
    dtype, which fails for a float64 flow under a float32 default; this is the same loop
    (one network pass per coordinate, in the network's variable order) in ``y``'s dtype.
    """

    def _inverse(self, y: Tensor) -> Tensor:
        x = torch.zeros_like(y)
        for idx in self.arn.permutation:
            mean, log_scale = self.arn(x)
            log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            # x_idx depends only on coordinates earlier in the order, all filled in by now.
            x = x.index_copy(-1, idx.reshape(1), ((y[..., idx] - mean[..., idx]) * torch.exp(-log_scale[..., idx])).unsqueeze(-1))
        self._cached_log_scale = log_scale  # final pass: every coordinate's inputs are known
        return x


class MAF(NormalizingFlow):
    r"""Masked autoregressive flow (Papamakarios et al. 2017): fast density, sequential sampling.

    Each layer is ``x_j = z_j * exp(s_j(x_{<j})) + t_j(x_{<j})`` in its own variable order
    (alternately natural and reversed), with ``(t, s)`` a MADE network (Pyro's
    ``AutoRegressiveNN``): ``log p(x)`` costs one pass per layer, sampling ``D`` passes.

    Parameters
    ----------
    dim
        Data dimension ``D >= 2``.
    num_layers
        Number of autoregressive layers.
    hidden_dims
        Hidden widths of each MADE (each ``>= D``).
    activation, domain, alpha, device, dtype
        As for :class:`RealNVP`.

    Raises
    ------
    ConfigError
        As for :class:`RealNVP`; a hidden width smaller than ``dim``.
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 5,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        activation: ActivationFactory = nn.ReLU,
        domain: Domain = "real",
        alpha: float = 0.05,
        base: BaseName = "normal",
        num_components: int = 8,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(dim, domain=domain, alpha=alpha, base=base, num_components=num_components, device=device,
                         dtype=dtype)
        num_layers = check_positive_int(num_layers, "num_layers")
        hidden = list(_check_dims(hidden_dims, "hidden_dims", allow_empty=False))
        if min(hidden) < self._dim:
            raise ConfigError(
                f"expected every hidden width >= dim={self._dim} (a MADE needs a unit per input degree), "
                f"got hidden_dims={tuple(hidden)}; widen the layers"
            )
        for k in range(num_layers):
            order = torch.arange(self._dim) if k % 2 == 0 else torch.arange(self._dim - 1, -1, -1)
            arn = AutoRegressiveNN(self._dim, hidden, permutation=order, nonlinearity=_make_activation(activation))
            self.layers.append(_AffineAutoregressive(near_identity_(arn)))
        self.to(**self._factory)

    def _steps(self) -> list[Transform]:
        # AffineAutoregressive is IAF-shaped (parallel z -> x); its inverse is the MAF direction.
        return [layer.inv for layer in self.layers]

