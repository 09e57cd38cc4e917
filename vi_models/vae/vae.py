r"""Variational autoencoder (Kingma & Welling 2014) as a Pyro model.

Generative story, for each observation ``i`` of the plate ``"data"``:

.. code-block:: text

    z_i       ~ p(z) = N(0, I_{z_dim})                                  (Sec. 3, prior)
    x_i | z_i ~ p_theta(x | z_i)                                        (App. C decoders)

with the decoder, one factor per data dimension ``j`` (``D = prod(data_shape)``):

.. code-block:: text

    gaussian:     x_ij | z ~ N(mu_theta(z)_j, sigma_j^2)                (App. C.2)
                  sigma_j = decoder_scale (fixed), or softplus(rho_j) + 1e-3 (learned)
    bernoulli:    x_ij | z ~ Bernoulli(sigmoid(f_theta(z)_j)),   x_ij in {0, 1}   (App. C.1)
    categorical:  k_ij | z ~ Categorical(softmax(f_theta(z)_j)),  k_ij in {0, ..., L-1},
                  k_ij = floor(L x_ij) for dequantised data x_ij = (k_ij + u_ij) / L in [0, 1)

The categorical decoder is a per-pixel softmax over ``L = num_levels`` grey levels (van den
Oord et al. 2016); its log-likelihood is the exact discrete ``log P(k | z)``. The density of
the dequantised ``x`` on ``[0, 1)^D`` under the model "pick k, then x uniform in its bin" is
``log P(k | z) + D log L`` (Theis et al. 2016), which is what continuous models are compared
against.

The guide is :class:`guides.GaussianEncoder`, ``q_phi(z | x) = N(mu_phi(x), Sigma_phi(x))``,
reparameterised (eq. 10). Fitting maximises the ELBO, eq. (3),
``E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z))``, by the SGVB estimators of eqs. (6)-(7)
(``Trace_ELBO`` / ``TraceMeanField_ELBO`` with the analytic KL of App. B) or its importance-
weighted version (IWAE, Burda et al. 2016).

References
----------
D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
A. van den Oord, N. Kalchbrenner and K. Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016.
L. Theis, A. van den Oord and M. Bethge, "A note on the evaluation of generative models", ICLR 2016.
Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from torch import Tensor, nn

from vi_models._validation import check_choice, check_positive_int, resolve_device
from vi_models.errors import ConfigError, DataError
from vi_models.nets import MLP, ActivationFactory, ConvDecoder, check_batch, resolve_data_shape
from vi_models.sites import DATA_PLATE, LATENT, OBSERVED

__all__ = ["DATA_PLATE", "LATENT", "OBSERVED", "VAE"]

Likelihood = Literal["gaussian", "bernoulli", "categorical"]
_LIKELIHOODS: Final = ("gaussian", "bernoulli", "categorical")
#: Floor on a learned decoder scale: stops sigma -> 0 (an unbounded likelihood) on pixels that
#: are constant in the training set, such as the digits' borders.
SCALE_FLOOR: Final = 1e-3


class SupportsEncode(Protocol):
    """Anything with ``encode(x) -> (loc (B, z_dim), scale)``, e.g. :class:`guides.GaussianEncoder`."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


class VAE(PyroModule):
    """Variational autoencoder ``p(z) p_theta(x | z)`` (Kingma & Welling 2014), a Pyro model.

    See the module docstring for the generative story. Pair it with
    :class:`guides.GaussianEncoder` and fit it with :func:`inference.fit`.

    Parameters
    ----------
    x_dim
        ``D`` for flat data ``(B, D)``, or a shape such as ``(8, 8)`` for image data ``(B, 8, 8)``.
    z_dim
        Latent dimension.
    hidden_dims
        Hidden widths of the decoder MLP (for ``decoder="conv"``: of the MLP before the
        transposed convolutions).
    likelihood
        ``"gaussian"`` (continuous data), ``"bernoulli"`` (data in {0, 1}) or ``"categorical"``
        (dequantised grey levels in [0, 1)).
    decoder_scale
        Gaussian likelihood only: a fixed standard deviation > 0, or ``"learned"`` (one per
        data dimension, initialised at 1, kept above 1e-3). Ignored by the other likelihoods.
    num_levels
        Categorical likelihood only: the number of grey levels ``L`` (17 for the digits).
    decoder
        ``"mlp"``, or ``"conv"`` (transposed convolutions; needs one-channel images).
    image_shape
        ``(H, W)`` to decode flat data with ``decoder="conv"``; ``x_dim`` must equal ``H * W``.
    device, dtype
        Where and in which floating dtype the parameters live (default CPU and
        ``torch.get_default_dtype()``); ``.to(...)`` moves them later.
    activation
        Activation factory of the decoder networks (default ``nn.SiLU``).
    conv_channels
        Channels of the transposed-convolution stages (``decoder="conv"``).

    Attributes
    ----------
    likelihood : str
        The likelihood's name.
    num_levels : int
        ``L``, the number of grey levels of the categorical likelihood.
    image_shape : tuple[int, int] | None
        ``(H, W)`` when the data are images (``x_dim`` of length 2, or ``image_shape`` given).

    Raises
    ------
    ConfigError
        Unknown ``likelihood`` or ``decoder``, ``z_dim < 1``, ``decoder_scale <= 0``,
        ``num_levels < 2``, or ``decoder="conv"`` without an image shape.

    Examples
    --------
    >>> from guides import GaussianEncoder
    >>> vae = VAE(64, 8, hidden_dims=(32,), likelihood="categorical")
    >>> guide = GaussianEncoder(64, 8, hidden_dims=(32,), num_levels=17)
    >>> x = torch.rand(5, 64)
    >>> loss = pyro.infer.Trace_ELBO().differentiable_loss(vae, guide, x)
    >>> vae.sample(3).shape
    torch.Size([3, 64])
    """

    def __init__(
        self,
        x_dim: int | tuple[int, ...],
        z_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        likelihood: Likelihood = "gaussian",
        decoder_scale: float | Literal["learned"] = "learned",
        num_levels: int = 17,
        decoder: Literal["mlp", "conv"] = "mlp",
        image_shape: tuple[int, int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        activation: ActivationFactory = nn.SiLU,
        conv_channels: Sequence[int] = (64, 32),
    ) -> None:
        super().__init__()
        self.likelihood = check_choice(likelihood, "likelihood", _LIKELIHOODS)
        self.decoder_type = check_choice(decoder, "decoder", ("mlp", "conv"))
        self._z_dim = check_positive_int(z_dim, "z_dim")
        self.num_levels = check_positive_int(num_levels, "num_levels", minimum=2)
        if decoder_scale != "learned" and (
            isinstance(decoder_scale, bool)
            or not isinstance(decoder_scale, (int, float))
            or not math.isfinite(decoder_scale)
            or decoder_scale <= 0
        ):
            raise ConfigError(
                f"expected decoder_scale to be a float > 0 or 'learned', got {decoder_scale!r}; "
                "a Gaussian decoder needs a positive standard deviation"
            )
        self._data_shape, self.image_shape = resolve_data_shape(
            x_dim, image_shape, conv=self.decoder_type == "conv", what="decoder='conv'"
        )
        factory = {"device": resolve_device(device), "dtype": dtype or torch.get_default_dtype()}

        # p(z) = N(0, I): buffers, so the prior follows .to(device/dtype) with the parameters.
        self.register_buffer("prior_loc", torch.zeros(self._z_dim, **factory), persistent=False)
        self.register_buffer("prior_scale", torch.ones(self._z_dim, **factory), persistent=False)

        # Network outputs per data dimension: one mean/logit, or one logit per grey level.
        per_dim = self.num_levels if self.likelihood == "categorical" else 1
        if self.decoder_type == "mlp":
            self.decoder_net: nn.Module = MLP(
                self._z_dim, self._data_shape.numel() * per_dim, hidden_dims, activation, **factory
            )
        else:
            self.decoder_net = ConvDecoder(
                self._z_dim, per_dim, self.image_shape, conv_channels, hidden_dims, activation, **factory
            )

        self.decoder_scale = decoder_scale
        if self.likelihood == "gaussian" and decoder_scale == "learned":
            # sigma = softplus(rho) + floor, rho initialised so that sigma = 1.
            rho = math.log(math.expm1(1.0 - SCALE_FLOOR))
            self.scale_raw = nn.Parameter(torch.full(self._data_shape, rho, **factory))
        elif self.likelihood == "gaussian":
            self.register_buffer("fixed_scale", torch.tensor(float(decoder_scale), **factory), persistent=False)

    # ------------------------------------------------------------------ properties

    @property
    def z_dim(self) -> int:
        """Latent dimension."""
        return self._z_dim

    @property
    def data_shape(self) -> torch.Size:
        """Event shape of one observation, e.g. ``(64,)`` or ``(8, 8)``."""
        return self._data_shape

    @property
    def event_dim(self) -> int:
        """Number of event dimensions of the observed site: ``len(data_shape)``."""
        return len(self._data_shape)

    @property
    def is_discrete(self) -> bool:
        """Whether ``log p(x | z)`` is a probability mass (bernoulli, categorical) rather than a density."""
        return self.likelihood != "gaussian"

    @property
    def scale(self) -> Tensor | None:
        """Gaussian decoder's standard deviations, shape ``data_shape`` or ``()``; ``None`` otherwise."""
        if self.likelihood != "gaussian":
            return None
        if self.decoder_scale == "learned":
            return F.softplus(self.scale_raw) + SCALE_FLOOR
        return self.fixed_scale

    def extra_repr(self) -> str:
        return (
            f"data_shape={tuple(self._data_shape)}, z_dim={self._z_dim}, likelihood={self.likelihood!r}, "
            f"decoder={self.decoder_type!r}"
        )

    # ------------------------------------------------------------------ distributions

    def prior(self) -> dist.Distribution:
        """The prior ``p(z) = N(0, I_{z_dim})``: batch shape ``()``, event shape ``(z_dim,)``."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def _decoder_output(self, z: Tensor) -> Tensor:
        """Raw decoder output: ``(..., *data_shape)``, or ``(..., *data_shape, L)`` for categorical."""
        out = self.decoder_net(z)  # mlp: (..., D * per_dim); conv: (..., per_dim, H, W)
        if self.decoder_type == "conv":
            out = out.movedim(-3, -1)  # (..., H, W, per_dim)
        levels = (self.num_levels,) if self.likelihood == "categorical" else ()
        return out.reshape(*z.shape[:-1], *self._data_shape, *levels)

    def decode(self, z: Tensor) -> dist.Distribution:
        """The likelihood ``p_theta(x | z)``.

        Parameters
        ----------
        z
            Latent codes, shape ``(..., z_dim)`` (any leading dimensions).

        Returns
        -------
        Distribution
            Batch shape ``z.shape[:-1]``, event shape ``data_shape``: a Normal (gaussian), a
            Bernoulli on {0, 1} (bernoulli), or a Categorical over the level index
            ``k in {0, ..., L-1}`` (categorical; ``k = floor(L x)``).

        Raises
        ------
        DataError
            ``z`` is not a tensor with last dimension ``z_dim``.
        """
        if not isinstance(z, Tensor) or z.dim() == 0 or z.shape[-1] != self._z_dim:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise DataError(f"expected z of shape (..., {self._z_dim}), got {got}; pass codes of size z_dim")
        out = self._decoder_output(z)
        if self.likelihood == "gaussian":
            fn: dist.Distribution = dist.Normal(out, self.scale)
        elif self.likelihood == "bernoulli":
            fn = dist.Bernoulli(logits=out)
        else:
            fn = dist.Categorical(logits=out)
        return fn.to_event(self.event_dim)

    # ------------------------------------------------------------------ the Pyro model

    def _check_data(self, x: Any, name: str = "x") -> Tensor:
        check_batch(x, self._data_shape, like=self.prior_loc, name=name)
        if is_validation_enabled():
            if self.likelihood == "bernoulli" and not bool(((x == 0) | (x == 1)).all()):
                raise DataError(
                    f"expected binary {name} in {{0, 1}} for likelihood='bernoulli', got other values "
                    f"(range [{float(x.min()):.3g}, {float(x.max()):.3g}]); binarise the data "
                    "(x > 0.5).float() or use likelihood='gaussian'"
                )
            if self.likelihood == "categorical" and not bool(((x >= 0) & (x < 1)).all()):
                raise DataError(
                    f"expected dequantised {name} in [0, 1) for likelihood='categorical', got values in "
                    f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; pass (k + u) / num_levels with "
                    "k the integer level and u ~ U[0, 1) (the data loader's dequantisation)"
                )
        return x

    def levels(self, x: Tensor) -> Tensor:
        """Grey-level index ``k = floor(L x)``, clamped to ``[0, L-1]`` (long), of dequantised ``x`` in [0, 1)."""
        return torch.floor(x * self.num_levels).clamp(0, self.num_levels - 1).long()

    def forward(self, x: Tensor | None = None, *, num_samples: int | None = None) -> Tensor:
        """The Pyro model ``p(z) p_theta(x | z)`` over a batch.

        Sample sites, inside ``pyro.plate(DATA_PLATE, B, dim=-1)``: ``LATENT`` (event
        ``(z_dim,)``) and ``OBSERVED`` (event ``data_shape``; observed at ``x``, or at the level
        ``k = floor(L x)`` for the categorical likelihood). Broadcasts over outer plates such
        as a vectorised-particles plate at dim -2.

        Parameters
        ----------
        x
            Data, shape ``(B, *data_shape)``; ``None`` to sample from the prior predictive.
        num_samples
            ``B`` when ``x`` is ``None``.

        Returns
        -------
        Tensor
            The value of the ``OBSERVED`` site, shape ``(..., B, *data_shape)``: ``x`` itself,
            the levels ``k`` (long) for the categorical likelihood, or a prior-predictive draw.

        Raises
        ------
        ConfigError
            Both or neither of ``x`` and ``num_samples``.
        DataError
            ``x`` of the wrong shape/dtype/device; with validation on, values outside the
            likelihood's support (bernoulli: {0, 1}; categorical: [0, 1)) or NaN/inf.
        """
        if (x is None) == (num_samples is None):
            raise ConfigError(
                "expected either data x of shape (B, *data_shape) or num_samples (prior sampling), "
                f"got {'both' if x is not None else 'neither'}; pass exactly one"
            )
        if x is None:
            batch_size, obs = check_positive_int(num_samples, "num_samples"), None
        else:
            self._check_data(x)
            batch_size = x.shape[0]
            obs = self.levels(x) if self.likelihood == "categorical" else x
        with pyro.plate(DATA_PLATE, batch_size, dim=-1):
            z = pyro.sample(LATENT, self.prior())  # (..., B, z_dim)
            return pyro.sample(OBSERVED, self.decode(z), obs=obs)

    # ------------------------------------------------------------------ generation

    def _draw(self, out: Tensor, mean: bool, generator: torch.Generator | None) -> Tensor:
        """Decoder mean or a draw, on the data scale, from raw decoder output (see ``_decoder_output``)."""
        if self.likelihood == "gaussian":
            if mean:
                return out
            noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
            return out + self.scale * noise
        if self.likelihood == "bernoulli":
            probs = torch.sigmoid(out)
            if mean:
                return probs
            u = torch.rand(out.shape, generator=generator, device=out.device, dtype=out.dtype)
            return (u < probs).to(out.dtype)
        probs = torch.softmax(out, dim=-1)  # (..., *data_shape, L)
        if mean:  # E[(k + 1/2) / L]
            centres = (torch.arange(self.num_levels, device=out.device, dtype=out.dtype) + 0.5) / self.num_levels
            return probs @ centres
        k = torch.multinomial(probs.reshape(-1, self.num_levels), 1, generator=generator)
        return (k.reshape(probs.shape[:-1]).to(out.dtype) + 0.5) / self.num_levels

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``z ~ p(z)``, then ``x ~ p_theta(x | z)`` (THEORY T26), without gradients.

        Parameters
        ----------
        n
            Number of samples.
        mean
            Return the decoder mean ``E[x | z]`` instead of a draw.
        generator
            Random generator on the model's device, for reproducible draws.

        Returns
        -------
        Tensor
            Shape ``(n, *data_shape)`` on the data scale: real values (gaussian); {0, 1} draws or
            probabilities (bernoulli); bin centres ``(k + 0.5) / L`` or their expectation, in
            ``(0, 1)`` (categorical).
        """
        n = check_positive_int(n, "n")
        z = torch.randn(n, self._z_dim, generator=generator, device=self.prior_loc.device, dtype=self.prior_loc.dtype)
        return self._draw(self._decoder_output(z), mean, generator)

    def _encode_loc(self, x: Tensor, guide: SupportsEncode) -> Tensor:
        loc = guide.encode(x)[0]
        if loc.shape[-1] != self._z_dim:
            raise ConfigError(
                f"expected a guide with z_dim={self._z_dim}, got codes of size {loc.shape[-1]}; "
                "build the guide with the model's z_dim"
            )
        return loc

    @torch.no_grad()
    def reconstruct(self, x: Tensor, guide: SupportsEncode, *, mean: bool = True) -> Tensor:
        """Encode with the guide's mean ``mu_phi(x)``, then decode, without gradients.

        Parameters
        ----------
        x
            Data, shape ``(B, *data_shape)``.
        guide
            An encoder such as :class:`guides.GaussianEncoder`.
        mean
            Return the decoder mean (default) rather than a draw from ``p_theta(x | mu_phi(x))``.

        Returns
        -------
        Tensor
            Shape ``(B, *data_shape)``, on the data scale as in :meth:`sample`.
        """
        self._check_data(x)
        return self._draw(self._decoder_output(self._encode_loc(x, guide)), mean, None)

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, guide: SupportsEncode, steps: int = 8) -> Tensor:
        """Decoder means along the straight line between the codes ``mu_phi(x_a)`` and ``mu_phi(x_b)``.

        Parameters
        ----------
        x_a, x_b
            Two observations, each of shape ``data_shape`` (or ``(1, *data_shape)``).
        guide
            An encoder such as :class:`guides.GaussianEncoder`.
        steps
            Number of points, endpoints included (>= 2).

        Returns
        -------
        Tensor
            Shape ``(steps, *data_shape)``; row 0 reconstructs ``x_a``, row -1 ``x_b``.
        """
        steps = check_positive_int(steps, "steps", minimum=2)
        pair = []
        for name, x in (("x_a", x_a), ("x_b", x_b)):
            x = x.unsqueeze(0) if isinstance(x, Tensor) and x.shape == self._data_shape else x
            self._check_data(x, name)
            if x.shape[0] != 1:
                raise DataError(f"expected one observation {name} of shape {tuple(self._data_shape)}, got {tuple(x.shape)}")
            pair.append(x)
        loc = self._encode_loc(torch.cat(pair), guide)  # (2, z_dim)
        t = torch.linspace(0, 1, steps, device=loc.device, dtype=loc.dtype).unsqueeze(-1)  # (steps, 1)
        return self._draw(self._decoder_output((1 - t) * loc[0] + t * loc[1]), True, None)
