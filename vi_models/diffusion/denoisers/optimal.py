r"""The exact minimiser of L_simple for a finite training set: a test oracle for DDPMs.

With x_0 uniform over the training points x_0^1, ..., x_0^N, the noised marginal is a mixture
(THEORY T15):

.. code-block:: text

    q_t(x) = (1/N) sum_i N(x | sqrt(abar_t) x_0^i, (1 - abar_t) I)

and the minimiser of E ||eps - eps_theta(x_t, t)||^2 over all functions is the posterior mean
of the noise (THEORY T16):

.. code-block:: text

    eps*(x, t) = E[eps | x_t = x] = sum_i w_i(x, t) (x - sqrt(abar_t) x_0^i) / sqrt(1 - abar_t)
    w_i(x, t)  = N(x | sqrt(abar_t) x_0^i, (1 - abar_t) I) / sum_j N(x | sqrt(abar_t) x_0^j, (1 - abar_t) I)

i.e. the noise implied by the posterior mean x-hat = sum_i w_i x_0^i of the data. As
abar_t -> 0 the weights flatten and eps* -> x. No network reaches a lower L_simple on that
training set; a DDPM that used eps* would only reproduce training points.

:class:`OptimalDenoiser` is an ``nn.Module`` with the network signature ``(x_t, t) -> eps``,
so it can stand in for the network of :class:`vi_models.DDPM` built on the same schedule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vi_models._validation import as_data_tensor, check_positive_int
from vi_models.diffusion.schedules import NoiseSchedule

__all__ = ["OptimalDenoiser"]


class OptimalDenoiser(nn.Module):
    """eps*(x, t) = E[eps | x_t = x] for x_0 uniform on a finite training set (THEORY T16).

    Parameters
    ----------
    train_data
        The training set ``(N, *data_shape)`` in the data's units.
    schedule
        The model's :class:`NoiseSchedule` (its standardisation is applied to ``train_data``).
    chunk_size
        Query points per pass (bounds the ``(chunk, N)`` weight matrix).

    Attributes
    ----------
    train_data : Tensor
        The standardised training set, flat: ``(N, D)``.

    Examples
    --------
    >>> sched = NoiseSchedule(10, "cosine")
    >>> den = OptimalDenoiser(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), sched)
    >>> den(torch.zeros(3, 2), torch.full((3,), 5)).shape
    torch.Size([3, 2])
    """

    def __init__(self, train_data: Tensor, schedule: NoiseSchedule, *, chunk_size: int = 1024) -> None:
        super().__init__()
        self.schedule = schedule
        data = as_data_tensor(train_data, name="train_data", dtype=schedule.betas.dtype, device=schedule.betas.device)
        self.data_shape = data.shape[1:]
        self.register_buffer("train_data", schedule.normalise(data).reshape(data.shape[0], -1))
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")

    def _abar(self, t: Tensor, like: Tensor) -> Tensor:
        return self.schedule.alphas_cumprod_at(t).to(like.dtype)

    def _log_kernels(self, y: Tensor, t: Tensor) -> Tensor:
        """log N(y | sqrt(abar_t) x_0^i, (1 - abar_t) I) for flat ``y`` ``(n, D)``, ``t`` ``(n,)``: ``(n, N)``."""
        abar = self._abar(t, y).unsqueeze(-1)  # (n, 1)
        # ||y - sqrt(abar) x_i||^2 = ||y||^2 - 2 sqrt(abar) y.x_i + abar ||x_i||^2, without an (n, N, D) tensor
        dist2 = (y**2).sum(-1, keepdim=True) - 2 * abar.sqrt() * (y @ self.train_data.T) + abar * (self.train_data**2).sum(-1)
        return -0.5 * dist2.clamp_min(0) / (1 - abar) - 0.5 * y.shape[-1] * torch.log(2 * math.pi * (1 - abar))

    def log_weights(self, y: Tensor, t: Tensor) -> Tensor:
        """log w_i(y, t) for flat standardised ``y`` ``(n, D)`` and times ``t`` ``(n,)``: ``(n, N)``."""
        return torch.log_softmax(self._log_kernels(y, t), dim=-1)

    def denoise(self, y_t: Tensor, t: Tensor) -> Tensor:
        """The posterior mean x-hat = E[x_0 | x_t] = sum_i w_i x_0^i (standardised), shaped like ``y_t``."""
        flat, tt = self._flatten(y_t, t)
        out = torch.cat(
            [self.log_weights(f, s).exp() @ self.train_data for f, s in zip(flat.split(self.chunk_size), tt.split(self.chunk_size))]
        )
        return out.reshape(y_t.shape)

    def forward(self, y_t: Tensor, t: Tensor) -> Tensor:
        """eps*(y_t, t) = (y_t - sqrt(abar_t) x-hat) / sqrt(1 - abar_t), shaped like ``y_t``.

        Parameters
        ----------
        y_t
            Standardised noisy data ``(..., *data_shape)``.
        t
            Steps (long) or real times, shape ``(...)`` (broadcastable).
        """
        x_hat = self.denoise(y_t, t)
        _, tt = self._flatten(y_t, t)
        abar = self._abar(tt, y_t).reshape(y_t.shape[: y_t.dim() - len(self.data_shape)] + (1,) * len(self.data_shape))
        return (y_t - abar.sqrt() * x_hat) / (1 - abar).sqrt()

    def log_marginal(self, y_t: Tensor, t: Tensor) -> Tensor:
        """log q_t(y_t) = log (1/N) sum_i N(y_t | sqrt(abar_t) x_0^i, (1 - abar_t) I) (THEORY T15).

        Densities of the standardised y; shape ``y_t.shape[:-len(data_shape)]``.
        """
        flat, tt = self._flatten(y_t, t)
        out = torch.logsumexp(self._log_kernels(flat, tt), dim=-1) - math.log(self.train_data.shape[0])
        return out.reshape(y_t.shape[: y_t.dim() - len(self.data_shape)])

    def _flatten(self, y_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        lead = y_t.shape[: y_t.dim() - len(self.data_shape)]
        return y_t.reshape(-1, self.train_data.shape[1]), t.expand(lead).reshape(-1)
