r"""MADE: an exact autoregressive density with masked networks (Germain et al. 2015), as a Pyro model.

Generative story, for each observation ``i`` of the plate ``"data"``, in a fixed variable
order ``o(1), ..., o(D)`` (THEORY T25; Germain et al. 2015, eq. 1):

.. code-block:: text

    p(x) = prod_{j=1}^{D} p(x_{o(j)} | x_{o(<j)})
    x_{o(j)} | x_{o(<j)} ~ one of
        gaussian_mixture:  sum_c pi_jc N(mu_jc, sigma_jc^2)        (Uria et al. 2013; Papamakarios et al. 2017, MADE MoG)
        bernoulli:         Bernoulli(sigmoid(l_j)),   x in {0, 1}^D        (Germain et al. 2015, eq. 4)
        categorical:       Categorical(softmax(l_j)), levels k_j = floor(L x_j) in {0, ..., L-1}

where every conditional's parameters come out of *one* network pass: the masked MLP of
Germain et al. (2015, Sec. 4, eqs. 12-13) gives each hidden unit a degree ``m(k)`` and lets
unit ``k`` see input ``d`` only if ``m(k) >= m(d)`` (hidden) or ``m(k) < m(d)`` (output),
so output ``j`` depends on ``x_{o(<j)}`` alone. The masks are Pyro's
:class:`pyro.nn.AutoRegressiveNN`, reused rather than rewritten.

``log p(x)`` is exact and costs one pass; sampling draws ``x_{o(1)}``, then each next
coordinate from its conditional given the ones drawn so far: ``D`` passes (T25).

With ``num_orders = M > 1`` the model is the uniform mixture of ``M`` such MADEs, each with
its own network and variable order (the ensembles over orderings of Germain et al. 2015,
Sec. 4.2, and Uria et al. 2014), still exact:

.. code-block:: text

    p(x) = (1/M) sum_{m=1}^{M} prod_j p_m(x_{o_m(j)} | x_{o_m(<j)});   sample m ~ U{1..M}, then x ~ p_m

The categorical conditional models the grey levels of dequantised data ``x = (k + u) / L``
in ``[0, 1)`` exactly like :class:`vi_models.VAE` with ``likelihood="categorical"``: the
Pyro site observes ``k = floor(L x)``, :meth:`MADE.log_prob` returns the exact
``log P(k)`` (a mass, ``is_discrete``), and the density of the dequantised data under "pick
``k``, then ``x`` uniform in its bin" is ``log P(k) + D log L`` (Theis et al. 2016).

Fitting is maximum likelihood through the ordinary engine: the model's only sample site is
the observed ``x``, so ``inference.fit(made, None, data, loss="elbo")`` maximises ``log p(x)``.

References
----------
M. Germain, K. Gregor, I. Murray and H. Larochelle, "MADE: Masked Autoencoder for
Distribution Estimation", ICML 2015.
B. Uria, I. Murray and H. Larochelle, "RNADE: The real-valued neural autoregressive
density-estimator", NeurIPS 2013.
B. Uria, I. Murray and H. Larochelle, "A Deep and Tractable Density Estimator", ICML 2014
(ensembles over orderings).
G. Papamakarios, T. Pavlakou and I. Murray, "Masked Autoregressive Flow for Density
Estimation", NeurIPS 2017 (MADE MoG baseline).
L. Theis, A. van den Oord and M. Bethge, "A note on the evaluation of generative models", ICLR 2016.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import AutoRegressiveNN, PyroModule
from torch import Tensor, nn

from vi_models._validation import check_choice, check_positive_int, resolve_device
from vi_models.errors import ConfigError, DataError
from vi_models.nets import ActivationFactory, _check_dims, _make_activation, check_batch
from vi_models.sites import DATA_PLATE, OBSERVED

from .conditionals import CONDITIONALS, Conditional, conditional_log_prob, draw_conditional
from .distribution import AutoregressiveDistribution

__all__ = ["MADE", "AutoregressiveDistribution"]



class MADE(PyroModule):
    """Masked autoencoder for distribution estimation: ``p(x) = prod_j p(x_j | x_<j)`` (a Pyro model).

    See the module docstring for the generative story.

    Parameters
    ----------
    dim
        Data dimension ``D`` (>= 2).
    hidden_dims
        Hidden widths of the masked MLP (each ``>= D``: one unit per degree at least).
    conditional
        ``"gaussian_mixture"`` (real data), ``"bernoulli"`` (data in {0, 1}) or
        ``"categorical"`` (dequantised levels in [0, 1)).
    num_components
        Mixture components per coordinate (``"gaussian_mixture"``).
    num_levels
        Number of grey levels ``L`` (``"categorical"``; 17 for the digits).
    order
        The variable order ``o`` of the first (or only) network: a permutation of
        ``range(dim)`` (``order[0]`` is drawn first); default the natural order ``0, ..., D-1``.
    num_orders
        ``M``, the number of networks in the ensemble over orderings; networks ``2..M`` use
        fixed random orders (seeded by their index, so rebuilding gives the same model).
    skip_connections
        Add the direct masked input -> output connections of Germain et al. (Sec. 4.3).
    activation
        Activation factory of the hidden layers (default ``nn.ReLU``).
    device, dtype
        Where and in which floating dtype the parameters live.

    Attributes
    ----------
    num_params : int
        Network outputs per coordinate: ``3 * num_components``, 1 or ``num_levels``.

    Raises
    ------
    ConfigError
        Unknown ``conditional``; ``dim < 2``; a hidden width below ``dim``; an ``order`` that
        is not a permutation of ``range(dim)``; counts < 1 (levels < 2).

    Notes
    -----
    Sampling with a ``generator`` draws the ensemble member with it too, so ``num_orders > 1``
    stays reproducible; the number of network passes is ``D`` per member that was drawn.

    Examples
    --------
    >>> made = MADE(4, (16,), conditional="categorical", num_levels=3)
    >>> x = made.sample(5)                  # bin centres (k + 0.5) / 3
    >>> made.log_prob(x).shape              # exact log P(k)
    torch.Size([5])
    >>> loss = pyro.infer.Trace_ELBO().differentiable_loss(made, lambda x: None, x)
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        *,
        conditional: Conditional = "gaussian_mixture",
        num_components: int = 5,
        num_levels: int = 17,
        order: Sequence[int] | Tensor | None = None,
        num_orders: int = 1,
        skip_connections: bool = True,
        activation: ActivationFactory = nn.ReLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.conditional = check_choice(conditional, "conditional", CONDITIONALS)
        self._dim = check_positive_int(dim, "dim", minimum=2)
        self.num_components = check_positive_int(num_components, "num_components")
        self.num_levels = check_positive_int(num_levels, "num_levels", minimum=2)
        hidden = list(_check_dims(hidden_dims, "hidden_dims", allow_empty=False))
        if min(hidden) < self._dim:
            raise ConfigError(
                f"expected every hidden width >= dim={self._dim} (MADE needs a unit per input degree), "
                f"got hidden_dims={tuple(hidden)}; widen the layers"
            )
        first = self._check_order(order)
        orders = [first] + [
            torch.randperm(self._dim, generator=torch.Generator().manual_seed(m))
            for m in range(1, check_positive_int(num_orders, "num_orders"))
        ]
        factory = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}
        self.num_params = {"gaussian_mixture": 3 * self.num_components, "bernoulli": 1}.get(
            self.conditional, self.num_levels
        )
        self.nets = nn.ModuleList(
            AutoRegressiveNN(
                self._dim,
                hidden,
                param_dims=[self.num_params],
                permutation=perm,
                skip_connections=bool(skip_connections),
                nonlinearity=_make_activation(activation),
            )
            for perm in orders
        )
        self.register_buffer("_probe", torch.zeros((), **factory), persistent=False)
        self.to(**factory)

    def _check_order(self, order: Any) -> Tensor:
        if order is None:
            return torch.arange(self._dim)
        perm = torch.as_tensor(order)
        if perm.dim() != 1 or perm.is_floating_point() or sorted(perm.tolist()) != list(range(self._dim)):
            raise ConfigError(
                f"expected order to be a permutation of range({self._dim}), got {order!r}; "
                f"e.g. order=list(reversed(range({self._dim})))"
            )
        return perm.long()

    @classmethod
    def from_members(cls, members: Sequence[MADE]) -> MADE:
        """The ensemble over orderings ``p(x) = (1/M) sum_m p_m(x)`` of separately fitted MADEs.

        Fitting ``num_orders > 1`` jointly maximises the mixture's likelihood, which lets the
        members specialise; on small data, members fitted one by one (each with its own order)
        and averaged afterwards generalise better (Germain et al. 2015, Sec. 4.2). The result
        is an ordinary exact :class:`MADE` (``log_prob``, ``sample``, Pyro model).

        Parameters
        ----------
        members
            MADEs of the same ``dim``, ``conditional``, ``num_components``/``num_levels`` and
            hidden widths; their networks are copied, not shared.

        Returns
        -------
        MADE
            ``num_orders`` = the members' networks in total, in the given order.

        Raises
        ------
        ConfigError
            No members, or members that differ in any of the above.
        """
        members = list(members)
        if not members or not all(isinstance(m, MADE) for m in members):
            raise ConfigError(f"expected a non-empty sequence of MADE models, got {members!r}")
        first = members[0]
        key = lambda m: (m.dim, m.conditional, m.num_params, [tuple(p.shape) for p in m.nets[0].parameters()])
        for m in members[1:]:
            if key(m) != key(first):
                raise ConfigError(
                    "expected members built alike (dim, conditional, num_components/num_levels, hidden_dims), "
                    f"got {first.extra_repr()} and {m.extra_repr()}; build them with the same arguments"
                )
        ensemble = copy.deepcopy(first)
        ensemble.nets = nn.ModuleList(copy.deepcopy(net) for m in members for net in m.nets)
        return ensemble

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """Data dimension ``D``."""
        return self._dim

    @property
    def data_shape(self) -> torch.Size:
        """Event shape of one observation, ``(D,)``."""
        return torch.Size([self._dim])

    @property
    def num_orders(self) -> int:
        """``M``, the number of networks (orderings) in the ensemble."""
        return len(self.nets)

    @property
    def orders(self) -> Tensor:
        """The variable orders (long, ``(M, D)``): ``orders[m, j]`` is the ``j``-th coordinate network ``m`` draws."""
        return torch.stack([net.permutation for net in self.nets])

    @property
    def is_discrete(self) -> bool:
        """Whether ``log_prob`` is a probability mass (bernoulli, categorical) rather than a density."""
        return self.conditional != "gaussian_mixture"

    def extra_repr(self) -> str:
        return f"dim={self._dim}, conditional={self.conditional!r}, num_params={self.num_params}, num_orders={self.num_orders}"

    # ------------------------------------------------------------------ conditionals

    def levels(self, x: Tensor) -> Tensor:
        """Grey-level index ``k = floor(L x)``, clamped to ``[0, L-1]`` (long), of dequantised ``x`` in [0, 1)."""
        return torch.floor(x * self.num_levels).clamp(0, self.num_levels - 1).long()

    def _features(self, value: Tensor) -> Tensor:
        """Network input from a site value: ``x`` (real), ``2x - 1`` (binary) or the centred level."""
        if self.conditional == "gaussian_mixture":
            return value
        if self.conditional == "bernoulli":
            return 2 * value - 1
        return (2 * value.to(self._probe.dtype) + 1) / self.num_levels - 1  # bin centre, mapped to (-1, 1)

    def conditionals(self, value: Tensor, component: int = 0) -> Tensor:
        """Raw parameters of every conditional ``p_m(x_j | x_<j)`` of network ``m``, one masked pass.

        Parameters
        ----------
        value
            Site values, shape ``(..., D)``: reals, {0, 1} floats, or levels ``k`` (long) for
            the categorical conditional.
        component
            ``m``, which network of the ensemble (``0 <= m < num_orders``).

        Returns
        -------
        Tensor
            Shape ``(..., D, num_params)``: per coordinate the mixture logits, means and
            pre-softplus scales (``K`` each, in that order), one logit, or ``L`` logits.
            Row ``j`` depends on the coordinates before ``j`` in ``orders[m]`` only.
        """
        out = self.nets[component](self._features(value))  # (..., num_params, D) or (..., D)
        return out.reshape(*value.shape[:-1], self.num_params, self._dim).transpose(-1, -2)

    def _site_log_prob(self, value: Tensor) -> Tensor:
        """``log p`` of site values (``(..., D)``, levels for categorical) -> ``(...)``."""
        per_order = torch.stack([
            conditional_log_prob(self.conditional, self.conditionals(value, m), value, self.num_components).sum(-1)
            for m in range(self.num_orders)
        ])
        if self.num_orders == 1:
            return per_order[0]
        return torch.logsumexp(per_order, 0) - math.log(self.num_orders)  # uniform mixture over orders

    @torch.no_grad()
    def _sample_sites(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling (THEORY T25): ``(n, D)`` site values, ``D`` passes per network used."""
        long_sites = self.conditional == "categorical"
        value = torch.zeros(
            n, self._dim, device=self._probe.device, dtype=torch.long if long_sites else self._probe.dtype
        )
        device = self._probe.device if generator is None else generator.device
        which = torch.randint(self.num_orders, (n,), generator=generator, device=device).to(value.device)
        for m, net in enumerate(self.nets):  # m ~ U{1..M}, then x ~ p_m
            rows = torch.nonzero(which == m).flatten()
            if rows.numel() == 0:
                continue
            part = value[rows]
            for j in net.permutation.tolist():
                params = self.conditionals(part, m)[:, j]  # (n_m, P): depends on the coordinates drawn so far
                part[:, j] = draw_conditional(self.conditional, params, self.num_components, generator)
            value[rows] = part
        return value

    # ------------------------------------------------------------------ public density interface

    def _check_data(self, x: Any, name: str = "x") -> Tensor:
        check_batch(x, self.data_shape, like=self._probe, name=name)
        if is_validation_enabled():
            if self.conditional == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
                raise DataError(
                    f"expected binary {name} in {{0, 1}} for conditional='bernoulli', got values in "
                    f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; binarise the data or use 'gaussian_mixture'"
                )
            if self.conditional == "categorical" and not bool(((x >= 0) & (x < 1)).all()):
                raise DataError(
                    f"expected dequantised {name} in [0, 1) for conditional='categorical', got values in "
                    f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; pass (k + u) / num_levels with k the "
                    "integer level and u ~ U[0, 1)"
                )
        return x

    def _site_value(self, x: Tensor) -> Tensor:
        return self.levels(x) if self.conditional == "categorical" else x

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)``: a density (gaussian_mixture) or the mass ``log P(x)`` / ``log P(k)``.

        Parameters
        ----------
        x
            Data, shape ``(B, D)``: reals; {0, 1} (bernoulli); dequantised values in [0, 1)
            (categorical, scored at ``k = floor(L x)``).

        Returns
        -------
        Tensor
            Shape ``(B,)``, nats. For categorical data add ``D log L`` for the density of the
            dequantised ``x``.

        Raises
        ------
        DataError
            Wrong shape/dtype/device; with validation on, values outside the support.
        """
        self._check_data(x)
        return self._site_log_prob(self._site_value(x))

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples ``x_{o(1)}, then x_{o(2)} | x_{o(1)}, ...`` (THEORY T25), ``D`` passes.

        Parameters
        ----------
        n
            Number of samples.
        generator
            Random generator on the module's device, for reproducible draws.

        Returns
        -------
        Tensor
            Shape ``(n, D)`` on the data scale: reals; {0, 1}; bin centres ``(k + 0.5) / L``.
        """
        n = check_positive_int(n, "n")
        value = self._sample_sites(n, generator)
        if self.conditional == "categorical":
            return (value.to(self._probe.dtype) + 0.5) / self.num_levels
        return value

    def distribution(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> AutoregressiveDistribution:
        """``p(x)`` as a Pyro distribution over site values, event shape ``(D,)``."""
        return AutoregressiveDistribution(self, torch.Size(batch_shape))

    def forward(self, x: Tensor | None = None, *, num_samples: int | None = None) -> Tensor:
        """The Pyro model: site ``OBSERVED`` inside ``pyro.plate(DATA_PLATE, B, dim=-1)``.

        Parameters
        ----------
        x
            Data, shape ``(B, D)``; ``None`` to sample.
        num_samples
            ``B`` when ``x`` is ``None``.

        Returns
        -------
        Tensor
            The site's value ``(..., B, D)``: ``x``, or the levels ``k`` (long) for the
            categorical conditional, or a draw.

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
            batch_size, obs = check_positive_int(num_samples, "num_samples"), None
        else:
            self._check_data(x)
            batch_size, obs = x.shape[0], self._site_value(x)
        with pyro.plate(DATA_PLATE, batch_size, dim=-1):
            return pyro.sample(OBSERVED, self.distribution((batch_size,)), obs=obs)
