r"""The exact noise predictor of a Gaussian mixture: a closed-form base for a DDPM's network.

If the data were a Gaussian mixture, x_0 ~ sum_k pi_k N(m_k, C_k), every noised marginal of the
forward process would be one too (THEORY T15 with Gaussian instead of point components):

.. code-block:: text

    q_t(x) = sum_k pi_k N(x | sqrt(abar_t) m_k, S_k(t)),    S_k(t) = abar_t C_k + (1 - abar_t) I

and the minimiser of L_simple, eps*(x, t) = E[eps | x_t = x] = -sqrt(1 - abar_t) grad log q_t(x)
(THEORY T16), is available in closed form:

.. code-block:: text

    eps*(x, t) = sqrt(1 - abar_t) sum_k r_k(x, t) S_k(t)^{-1} (x - sqrt(abar_t) m_k)
    r_k(x, t)  = pi_k N(x | sqrt(abar_t) m_k, S_k(t)) / q_t(x)

:class:`OptimalDenoiser` is the special case C_k = 0 with one component per training point.

Used as the ``base`` of :class:`vi_models.DDPM`, the network learns only the *residual*
eps_theta - eps*_GMM. This generalises the skip connection of Karras et al. (2022), whose
c_skip is the optimal denoiser of a single Gaussian with the data's variance: an untrained
model (zero output layer) *is* the mixture, its probability-flow ODE gives the mixture's exact
log-density, and training moves it towards the data from there. Each S_k(t) is diagonalised
once, S_k(t) = U_k diag(abar_t lambda_k + 1 - abar_t) U_k^T with C_k = U_k diag(lambda_k) U_k^T,
so a call costs O(n K D^2) time and O(n K D) memory.

References
----------
T. Karras, M. Aittala, T. Aila and S. Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models", NeurIPS 2022, Sec. 5 and App. B.6.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from vi_models._validation import as_data_tensor
from vi_models.diffusion.schedules import NoiseSchedule
from vi_models.errors import ConfigError

__all__ = ["GaussianMixtureDenoiser"]


class GaussianMixtureDenoiser(nn.Module):
    """eps*(x, t) = E[eps | x_t = x] when x_0 follows a given Gaussian mixture (closed form).

    Parameters
    ----------
    weights
        Mixture weights ``(K,)``, positive (normalised here).
    means
        Component means ``(K, D)`` in the data's units (``D`` = the flattened data size).
    covariances
        Component covariances in the data's units: full ``(K, D, D)``, diagonal ``(K, D)``,
        spherical ``(K,)`` or tied ``(D, D)`` (scikit-learn's layouts, as
        :attr:`vi_models.GaussianMixture.covariances`); positive semi-definite (the symmetric
        part is used). Singular ones (points, lines) are fine for t > 0; at t = 0 their
        density is degenerate.
    schedule
        The :class:`NoiseSchedule` of the DDPM it serves; its standardisation
        y = (x - data_loc) / data_scale is applied to the mixture.
    data_shape
        Shape of one observation (default ``(D,)``).
    covariance_type
        ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``; needed only where the shape is
        ambiguous (K = D).

    Attributes
    ----------
    log_weights, means, eigenvalues, eigenvectors : Tensor
        The standardised mixture: ``(K,)``, ``(K, D)``, ``(K, D)`` and ``(K, D, D)``.

    Raises
    ------
    ConfigError
        Shapes that do not agree, weights not positive, covariances not positive semi-definite.

    Examples
    --------
    >>> sched = NoiseSchedule(100, "cosine")
    >>> den = GaussianMixtureDenoiser(torch.ones(2), torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.ones(2) * 0.1, sched)
    >>> den(torch.zeros(3, 2), torch.full((3,), 50.0)).shape
    torch.Size([3, 2])
    """

    def __init__(self, weights: Any, means: Any, covariances: Any, schedule: NoiseSchedule, *,
                 data_shape: tuple[int, ...] | None = None, covariance_type: str | None = None) -> None:
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise ConfigError(f"expected schedule to be a NoiseSchedule (the DDPM's model.schedule), got {type(schedule).__name__}")
        self.schedule = schedule
        f = {"dtype": schedule.betas.dtype, "device": schedule.betas.device}
        w = as_data_tensor(weights, name="weights", **f).reshape(-1)
        m = as_data_tensor(means, name="means", **f)
        if m.dim() != 2 or m.shape[0] != w.shape[0]:
            raise ConfigError(f"expected means of shape (K, D) with K = {w.shape[0]} (the weights), got {tuple(m.shape)}")
        if not bool((w > 0).all()):
            raise ConfigError("expected positive mixture weights; drop the empty components first")
        k, d = m.shape
        self.data_shape = torch.Size(data_shape) if data_shape is not None else torch.Size((d,))
        if self.data_shape.numel() != d:
            raise ConfigError(f"expected means with D = {self.data_shape.numel()} (data_shape {tuple(self.data_shape)}), got D = {d}")
        cov = _full_covariances(as_data_tensor(covariances, name="covariances", **f), k, d, covariance_type)
        # y = (x - loc) / scale: the mixture's means and covariances in the diffusion's units.
        loc = torch.as_tensor(schedule.data_loc, **f).expand(self.data_shape).reshape(d)
        scale = torch.as_tensor(schedule.data_scale, **f).expand(self.data_shape).reshape(d)
        cov = cov / (scale[:, None] * scale[None, :])
        evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.mT))
        tol = 10 * d * torch.finfo(evals.dtype).eps * evals.abs().amax(-1, keepdim=True).clamp_min(1.0)
        if bool((evals < -tol).any()):
            raise ConfigError("expected positive semi-definite covariances, got a negative eigenvalue")
        self.register_buffer("log_weights", torch.log_softmax(w.log(), -1))
        self.register_buffer("means", (m - loc) / scale)
        self.register_buffer("eigenvalues", evals.clamp_min(0.0))
        self.register_buffer("eigenvectors", evecs)

    @classmethod
    def from_mixture(cls, mixture: Any, schedule: NoiseSchedule, *, data_shape: tuple[int, ...] | None = None) -> GaussianMixtureDenoiser:
        """From a fitted :class:`vi_models.GaussianMixture` or scikit-learn ``GaussianMixture``.

        Parameters
        ----------
        mixture
            Anything with ``weights``/``weights_``, ``means``/``means_`` and
            ``covariances``/``covariances_`` in scikit-learn's layouts; components of weight 0
            are dropped. :func:`inference.fit_mixture_denoiser` fits one by EM and calls this.
        schedule, data_shape
            As for the constructor.
        """
        def get(name: str) -> Any:
            value = getattr(mixture, name + "_", None)
            if value is None:
                value = getattr(mixture, name, None)
            if value is None:
                raise ConfigError(f"expected a fitted Gaussian mixture with {name!r}, got {type(mixture).__name__}")
            return value.detach() if isinstance(value, Tensor) else value

        kind = getattr(mixture, "covariance_type", None) or getattr(mixture, "covariance", None)
        kind = kind if isinstance(kind, str) else None
        weights, means, cov = (torch.as_tensor(get(n)) for n in ("weights", "means", "covariances"))
        keep = weights > 0  # EM can empty a component; the denoiser needs positive weights
        return cls(weights[keep], means[keep], cov if kind == "tied" else cov[keep], schedule,
                   data_shape=data_shape, covariance_type=kind)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def _abar(self, t: Tensor, like: Tensor) -> Tensor:
        return self.schedule.alphas_cumprod_at(t).to(like.dtype)

    def _responsibilities(self, y: Tensor, abar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For flat ``y`` ``(n, D)`` and ``abar`` ``(n, 1, 1)``: log-joint ``(n, K)``, rotated
        residual ``z`` ``(n, K, D)`` and component variances ``(n, K, D)`` in the eigenbasis."""
        var = abar * self.eigenvalues.to(y.dtype) + (1 - abar)  # (n, K, D)
        diff = y.unsqueeze(-2) - abar.sqrt() * self.means.to(y.dtype)  # (n, K, D)
        z = torch.einsum("nki,kij->nkj", diff, self.eigenvectors.to(y.dtype))  # U_k^T diff, (n, K, D)
        log_joint = self.log_weights.to(y.dtype) - 0.5 * ((z**2 / var) + var.log()).sum(-1) - 0.5 * y.shape[-1] * math.log(2 * math.pi)
        return log_joint, z, var

    def forward(self, y_t: Tensor, t: Tensor) -> Tensor:
        """eps*(y_t, t), shaped like ``y_t``.

        Parameters
        ----------
        y_t
            Standardised noisy data ``(..., *data_shape)``.
        t
            Integer steps (long) or real times (floating), shape ``(...)`` (broadcastable).
        """
        lead = y_t.shape[: y_t.dim() - len(self.data_shape)]
        y = y_t.reshape(-1, self.means.shape[-1])
        abar = self._abar(t.expand(lead).reshape(-1), y).reshape(-1, 1, 1)
        log_joint, z, var = self._responsibilities(y, abar)
        r = torch.softmax(log_joint, -1).unsqueeze(-1)  # (n, K, 1)
        # S_k^{-1} diff = U_k (z / var); the noise is sqrt(1 - abar) times the minus score
        precision_diff = torch.einsum("kij,nkj->nki", self.eigenvectors.to(y.dtype), r * z / var)  # (n, K, D)
        eps = (1 - abar[:, 0]).sqrt() * precision_diff.sum(-2)
        # at abar = 1 (t = 0) the noise has no weight: 0, also where a singular covariance makes S_k = 0
        eps = torch.where(abar[:, 0] < 1, eps, torch.zeros_like(eps))
        return eps.reshape(y_t.shape)

    def log_marginal(self, y_t: Tensor, t: Tensor) -> Tensor:
        """log q_t(y_t) of the standardised noised mixture; shape ``y_t.shape[:-len(data_shape)]``."""
        lead = y_t.shape[: y_t.dim() - len(self.data_shape)]
        y = y_t.reshape(-1, self.means.shape[-1])
        abar = self._abar(t.expand(lead).reshape(-1), y).reshape(-1, 1, 1)
        log_joint, _, _ = self._responsibilities(y, abar)
        return torch.logsumexp(log_joint, -1).reshape(lead)

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, data_shape={tuple(self.data_shape)}"


_LAYOUTS = {"full": lambda k, d: (k, d, d), "tied": lambda k, d: (d, d), "diag": lambda k, d: (k, d),
            "spherical": lambda k, d: (k,)}


def _full_covariances(cov: Tensor, k: int, d: int, covariance_type: str | None) -> Tensor:
    """scikit-learn's covariance layouts -> full ``(K, D, D)``."""
    if covariance_type is None:
        matches = [name for name, shape in _LAYOUTS.items() if tuple(cov.shape) == shape(k, d)]
        if len(matches) > 1:
            raise ConfigError(f"covariances of shape {tuple(cov.shape)} are ambiguous with K = D = {d}; "
                              f"pass covariance_type= one of {', '.join(matches)}")
        covariance_type = matches[0] if matches else None
    if covariance_type not in _LAYOUTS or tuple(cov.shape) != _LAYOUTS[covariance_type](k, d):
        raise ConfigError(
            f"expected covariances of shape (K, D, D) full, (D, D) tied, (K, D) diag or (K,) spherical with K = {k}, "
            f"D = {d}, got {tuple(cov.shape)}" + (f" for covariance_type={covariance_type!r}" if covariance_type else "")
        )
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return cov.expand(k, d, d)
    if covariance_type == "diag":
        return torch.diag_embed(cov)
    return cov[:, None, None] * torch.eye(d, dtype=cov.dtype, device=cov.device)
