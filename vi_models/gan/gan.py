r"""Generative adversarial networks as variational divergence minimisation (f-GAN).

Generative story (an implicit model: samples, no density):

.. code-block:: text

    z ~ N(0, I_{latent_dim}),      x = G_theta(z)                          (Goodfellow et al. 2014)

A critic ``T_omega(x) = g_f(V_omega(x))`` (an MLP ``V_omega`` with the output activation ``g_f``
of the divergence, Nowozin et al. 2016, eq. 6) and the generator play

.. code-block:: text

    min_theta max_omega  F(theta, omega) = E_{p_r}[T_omega(x)] - E_{p_theta}[f*(T_omega(x))]   (eq. 6)

``F`` is a lower bound on ``D_f(p_r || p_theta)`` for every critic, tight at
``T* = f'(p_r / p_theta)`` (eq. 4, THEORY T31). ``divergence`` picks ``f``:

.. code-block:: text

    "js"               the GAN (Table 1, "GAN" row): g(v) = log sigmoid(v) = log D(x),
                       f*(t) = -log(1 - e^t), so F = E_{p_r}[log D] + E_{p_g}[log(1 - D)],
                       Goodfellow et al.'s V(D, G), eq. (1); sup_D F = 2 JS - 2 log 2 (T28, T29)
    "kl"               KL(p_r || p_g)        g(v) = v           f*(t) = exp(t - 1)
    "reverse_kl"       KL(p_g || p_r)        g(v) = -exp(v)     f*(t) = -1 - log(-t)
    "pearson"          Pearson chi^2         g(v) = v           f*(t) = t^2/4 + t
    "hellinger"        squared Hellinger     g(v) = 1 - exp(v)  f*(t) = t / (1 - t)
    "total_variation"  1/2 int |p_r - p_g|   g(v) = tanh(v)/2   f*(t) = t
    "dv_kl"            KL(p_r || p_g) through the Donsker-Varadhan bound (T31),
                       F = E_{p_r}[T] - log E_{p_g}[exp T],  g(v) = v, tight at T = log p_r/p_g + c

The generator losses (``generator_loss``), for fakes ``x = G(z)``:

.. code-block:: text

    "minimax"          minimise F itself: its fake term  -E[f*(T(x))]      (eq. 6; E log(1 - D) for "js";
                       -log E exp T for "dv_kl")
    "non_saturating"   minimise -E[T(x)]    (Nowozin et al. Sec. 3.2; -E log D(G(z)) for "js",
                       Goodfellow et al. Sec. 3: strong gradients while D rejects the fakes)

:attr:`GAN.divergence_bound` turns a value of ``F`` into the lower bound on the divergence it
certifies (``(F + log 4) / 2`` on JS for ``"js"``, ``F`` itself otherwise). Fitting:
:func:`inference.divergences.adversarial.fit_adversarial`.

References
----------
I. Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014.
S. Nowozin, B. Cseke and R. Tomioka, "f-GAN: Training Generative Neural Samplers using
Variational Divergence Minimization", NeurIPS 2016.
M. D. Donsker and S. R. S. Varadhan, "Asymptotic evaluation of certain Markov process
expectations for large time IV", Comm. Pure Appl. Math. 36, 1983.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vi_models._math import logmeanexp
from vi_models._validation import check_choice, check_positive_int
from vi_models.errors import ConfigError, VIModelsError
from vi_models.nets import MLP, check_batch, resolve_data_shape

from .f_divergences import f_activation, f_conjugate_of_activation

__all__ = ["DIVERGENCES", "GAN", "GENERATOR_LOSSES", "Critic", "NoDensityError"]

Divergence = Literal["js", "kl", "reverse_kl", "pearson", "hellinger", "total_variation", "dv_kl"]
GeneratorLoss = Literal["minimax", "non_saturating"]
DIVERGENCES: Final = ("js", "kl", "reverse_kl", "pearson", "hellinger", "total_variation", "dv_kl")
GENERATOR_LOSSES: Final = ("minimax", "non_saturating")
_LOG2: Final = math.log(2.0)


class NoDensityError(VIModelsError, NotImplementedError):
    """A model that defines samples but no density was asked for ``log_prob``."""


class Critic(nn.Module):
    """The critic ``T_omega(x) = g_f(V_omega(x))``: an MLP ``V_omega`` and the output activation.

    Parameters
    ----------
    data_shape
        Event shape of one observation; inputs are flattened to ``prod(data_shape)``.
    hidden_dims
        Hidden widths of ``V_omega`` (LeakyReLU(0.2) activations, Radford et al. 2016).
    divergence
        One of :data:`DIVERGENCES`; picks ``g_f`` (module docstring).
    device, dtype
        Where and in which dtype the parameters are created.
    """

    def __init__(
        self,
        data_shape: torch.Size,
        hidden_dims: Sequence[int],
        divergence: Divergence,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.data_shape = torch.Size(data_shape)
        self.divergence = check_choice(divergence, "divergence", DIVERGENCES)
        self.net = MLP(
            self.data_shape.numel(), 1, hidden_dims, activation=lambda: nn.LeakyReLU(0.2), device=device, dtype=dtype
        )

    def raw(self, x: Tensor) -> Tensor:
        """``V_omega(x)``, unconstrained; the logit of ``D(x)`` for ``"js"``. ``(B, *data_shape) -> (B,)``."""
        return self.net(x.flatten(1)).squeeze(-1)

    def activation(self, v: Tensor) -> Tensor:
        """``g_f(v)``, elementwise: maps raw outputs into ``dom f*``."""
        if self.divergence == "js":
            return -F.softplus(-v)  # log sigmoid(v) = log D(x), Table 1's GAN row
        if self.divergence == "dv_kl":
            return v
        return f_activation(self.divergence, v)

    def conjugate(self, v: Tensor) -> Tensor:
        """``f*(g_f(v))`` in closed form, elementwise.

        Raises
        ------
        ConfigError
            For ``"dv_kl"``, whose bound has ``log E_q[exp T]`` in place of ``E_q[f*(T)]``.
        """
        if self.divergence == "dv_kl":
            raise ConfigError(
                "expected an f-divergence critic for f*(T), got divergence='dv_kl': the Donsker-Varadhan "
                "bound E_p[T] - log E_q[exp T] has no conjugate term; use GAN.objective"
            )
        if self.divergence == "js":
            return F.softplus(v)  # -log(1 - D(x)), D = sigmoid(v)
        return f_conjugate_of_activation(self.divergence, v)

    def forward(self, x: Tensor) -> Tensor:
        """``T_omega(x) = g_f(V_omega(x))``: ``(B, *data_shape) -> (B,)``."""
        return self.activation(self.raw(x))


class GAN(nn.Module):
    r"""Generator ``G_theta`` and critic ``T_omega`` of a (f-)GAN (module docstring).

    Parameters
    ----------
    data_dim
        Size ``D`` of one observation (flat data ``(N, D)``), or its shape such as ``(8, 8)``.
    latent_dim
        Dimension of ``z ~ N(0, I)``.
    generator_hidden
        Hidden widths of the generator MLP ``z -> x`` (SiLU activations, linear output);
        ``()`` gives an affine map, so ``p_theta`` is Gaussian.
    discriminator_hidden
        Hidden widths of the critic MLP ``V_omega``.
    divergence
        One of :data:`DIVERGENCES`: ``"js"`` is the GAN of Goodfellow et al. 2014.
    generator_loss
        ``"minimax"`` or ``"non_saturating"``.
    device, dtype
        Where and in which floating dtype the parameters are created.

    Attributes
    ----------
    generator : MLP
        ``G_theta``: ``(..., latent_dim) -> (..., D)``.
    discriminator : Critic
        ``T_omega``: ``(B, *data_shape) -> (B,)``; ``.raw`` gives ``V_omega``.

    Raises
    ------
    ConfigError
        Unknown ``divergence`` or ``generator_loss``, sizes that are not positive ints.

    Examples
    --------
    >>> gan = GAN(2, latent_dim=2, generator_hidden=(16,), discriminator_hidden=(16,))
    >>> gan.sample(5).shape
    torch.Size([5, 2])
    >>> x = torch.randn(8, 2)
    >>> bool(gan.discriminator_loss(x, gan(gan.sample_latent(8))) > 0)
    True
    """

    #: Samples are continuous ``x``, not discrete levels (read by the command line's bits/dim).
    is_discrete = False

    def __init__(
        self,
        data_dim: int | Sequence[int],
        latent_dim: int = 16,
        generator_hidden: Sequence[int] = (256, 256),
        discriminator_hidden: Sequence[int] = (256, 256),
        *,
        divergence: Divergence = "js",
        generator_loss: GeneratorLoss = "non_saturating",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.data_shape, _ = resolve_data_shape(data_dim, None, conv=False, what="GAN")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.divergence: str = check_choice(divergence, "divergence", DIVERGENCES)
        self.generator_loss_name: str = check_choice(generator_loss, "generator_loss", GENERATOR_LOSSES)
        factory = {"device": device, "dtype": dtype}
        self.generator = MLP(self.latent_dim, self.data_shape.numel(), generator_hidden, **factory)
        self.discriminator = Critic(self.data_shape, discriminator_hidden, divergence, **factory)
        # dtype/device anchor for the latent draws and the batch checks (moves with .to()).
        self.register_buffer("_anchor", torch.zeros((), **factory), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"data_shape={tuple(self.data_shape)}, latent_dim={self.latent_dim}, "
            f"divergence={self.divergence!r}, generator_loss={self.generator_loss_name!r}"
        )

    # ------------------------------------------------------------------ sampling

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``z ~ N(0, I)``, shape ``(n, latent_dim)`` on the model's device and dtype."""
        n = check_positive_int(n, "n")
        a = self._anchor
        return torch.randn((n, self.latent_dim), generator=generator, device=a.device, dtype=a.dtype)

    def forward(self, z: Tensor) -> Tensor:
        """``x = G_theta(z)``, differentiable: ``(n, latent_dim) -> (n, *data_shape)``."""
        return self.generator(z).reshape(z.shape[0], *self.data_shape)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``z ~ N(0, I)`` and return ``G_theta(z)``, without gradients.

        Parameters
        ----------
        n
            Number of samples, ``>= 1``.
        generator
            Optional :class:`torch.Generator` on the model's device, for reproducible draws.

        Returns
        -------
        Tensor
            Shape ``(n, *data_shape)``.

        Raises
        ------
        ConfigError
            ``n < 1``.
        """
        with torch.no_grad():
            return self(self.sample_latent(n, generator=generator))

    def log_prob(self, x: Any) -> Tensor:
        """Not available: a GAN defines samples, not a density.

        Raises
        ------
        NoDensityError
            Always (a :class:`NotImplementedError`).
        """
        raise NoDensityError(
            "a GAN defines samples, not a density: log_prob(x) is not available. Use a kernel density "
            "estimate on its samples, e.g. vi_models.kde.KernelDensity().fit(gan.sample(10_000)).log_prob(x), "
            "or fit a likelihood model (VAE, flow, mixture) when log-likelihoods are needed"
        )

    # ------------------------------------------------------------------ the game

    def _check(self, x: Any, name: str, *, generated: bool = False) -> Tensor:
        if generated:  # NaN fakes are a training failure, reported by the loss becoming NaN
            with pyro.validation_enabled(False):
                return check_batch(x, self.data_shape, like=self._anchor, name=name)
        return check_batch(x, self.data_shape, like=self._anchor, name=name)

    def _objective(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        """``F`` from raw critic outputs ``(B_r,)`` and ``(B_f,)``; 0-dim."""
        if self.divergence == "dv_kl":
            return v_real.mean() - logmeanexp(v_fake, dim=0)  # Donsker-Varadhan (T31)
        critic = self.discriminator
        return critic.activation(v_real).mean() - critic.conjugate(v_fake).mean()  # eq. (6)

    def objective(self, x_real: Tensor, x_fake: Tensor) -> Tensor:
        r"""The variational objective ``F = E_{p_r}[T(x)] - E_{p_g}[f*(T(x))]``, maximised by the critic.

        For ``"js"`` this is ``V(D, G) = E log D(x_real) + E log(1 - D(x_fake))``, equal to
        ``2 JS - 2 log 2`` at the optimal ``D`` (THEORY T29); for ``"dv_kl"`` the
        Donsker-Varadhan bound.

        Parameters
        ----------
        x_real
            Data, shape ``(B_r, *data_shape)``.
        x_fake
            Generated samples, shape ``(B_f, *data_shape)`` (differentiable or not).

        Returns
        -------
        Tensor
            0-dim, differentiable in the critic (and the generator through ``x_fake``).

        Raises
        ------
        DataError
            Batches of the wrong shape, dtype or device.
        """
        x_real, x_fake = self._check(x_real, "x_real"), self._check(x_fake, "x_fake", generated=True)
        return self._objective(self.discriminator.raw(x_real), self.discriminator.raw(x_fake))

    def discriminator_loss(self, x_real: Tensor, x_fake: Tensor) -> Tensor:
        """``-F``: the critic's loss (for ``"js"`` the binary cross-entropy of real vs. fake).

        Shapes as :meth:`objective`; returns a 0-dim tensor.
        """
        return -self.objective(x_real, x_fake)

    def generator_loss(self, x_fake: Tensor) -> Tensor:
        """The generator's loss on fakes ``x_fake = G(z)`` of shape ``(B, *data_shape)``; 0-dim.

        ``"minimax"``: the fake term of ``F`` (``E log(1 - D)`` for ``"js"``), whose gradient in
        the generator is that of ``F``; ``"non_saturating"``: ``-E[T(x_fake)]``
        (``-E log D`` for ``"js"``). See the module docstring.
        """
        v = self.discriminator.raw(self._check(x_fake, "x_fake", generated=True))
        if self.generator_loss_name == "non_saturating":
            return -self.discriminator.activation(v).mean()
        if self.divergence == "dv_kl":
            return -logmeanexp(v, dim=0)
        return -self.discriminator.conjugate(v).mean()

    def divergence_bound(self, objective: Tensor | float) -> Tensor:
        """The lower bound on the divergence certified by a value ``F`` of :meth:`objective`.

        ``"js"``: ``JS(p_r || p_g) >= (F + log 4) / 2`` (T29, T31); every other divergence:
        ``D_f >= F``. Takes and returns tensors of any shape.
        """
        objective = torch.as_tensor(objective)
        return _LOG2 + 0.5 * objective if self.divergence == "js" else objective

    def divergence_estimate(self, x_real: Tensor, x_fake: Tensor) -> Tensor:
        """The critic's lower bound on the divergence, without gradients (0-dim; shapes as :meth:`objective`).

        At the optimal critic it equals the divergence (THEORY T31): ``JS`` in nats for ``"js"``.
        """
        with torch.no_grad():
            return self.divergence_bound(self.objective(x_real, x_fake))

    def prob_real(self, x: Tensor) -> Tensor:
        """``D(x) = sigmoid(V(x))``: the probability that ``x`` is data, ``(B, *data_shape) -> (B,)``.

        Only for ``divergence="js"``, where ``D* = p_r / (p_r + p_g)`` (THEORY T28).

        Raises
        ------
        ConfigError
            Another divergence (its critic estimates ``f'(p_r / p_g)``, not a probability).
        """
        if self.divergence != "js":
            raise ConfigError(
                f"expected divergence='js' for a discriminator probability, got {self.divergence!r}; "
                "its critic gives T(x) = f'(p_r/p_g) through gan.discriminator(x)"
            )
        return torch.sigmoid(self.discriminator.raw(self._check(x, "x")))
