r"""Exponential moving average (EMA) of a network's weights, as kept by :class:`vi_models.DDPM`.

theta_ema <- d theta_ema + (1 - d) theta after every optimizer step, with the warm-up
d = min(decay, (1 + n) / (10 + n)) (n = updates so far) so that the average forgets the random
initialisation; sampling and likelihoods use the average (Ho et al. 2020, Appendix B; Song &
Ermon 2020). :class:`NetworkEMA` is a mixin for a module with a ``network`` submodule: it adds
``ema_network`` (a frozen copy) and the buffer ``ema_updates``, so both travel with
``state_dict`` and ``.to(device)``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from vi_models.errors import ConfigError

__all__ = ["NetworkEMA"]


class NetworkEMA:
    """Mixin: an EMA copy ``ema_network`` of the module's ``network`` (see the module docstring).

    Attributes
    ----------
    ema_decay : float or None
        The decay, or ``None`` when no average is kept.
    """

    ema_decay: float | None

    def _init_ema(self, ema_decay: Any, device: torch.device) -> None:
        """Keep an average with ``ema_decay`` in (0, 1), or none for ``None`` (call after ``network``)."""
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        if self.ema_decay is not None:
            if not 0.0 < self.ema_decay < 1.0:
                raise ConfigError(f"expected ema_decay in (0, 1) such as 0.999, or None, got {ema_decay!r}")
            self.ema_network = copy.deepcopy(self._modules["network"])  # type: ignore[attr-defined]
            self.ema_network.requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long, device=device))

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step: theta_ema <- d theta_ema + (1 - d) theta, d = min(ema_decay, (1 + n) / (10 + n)).

        The warm-up ``(1 + n) / (10 + n)`` (n = updates so far) stops the average from
        remembering the random initialisation. Buffers (e.g. norms' statistics) are copied.
        """
        if self.ema_decay is None:
            raise ConfigError("this DDPM keeps no EMA; build it with ema_decay=0.999 (for instance)")
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        average, network = self._modules["ema_network"], self._modules["network"]
        for avg, p in zip(average.parameters(), network.parameters()):
            avg.lerp_(p.detach(), 1.0 - decay)
        for avg, b in zip(average.buffers(), network.buffers()):
            avg.copy_(b)
        self.ema_updates += 1

    def attach_ema(self, optimizer: Optimizer) -> Optimizer:
        """Update the EMA after every ``optimizer.step()``; returns ``optimizer``.

        Use as ``fit(..., optimizer=lambda params: model.attach_ema(torch.optim.Adam(params, lr)))``.
        """
        if self.ema_decay is None:
            raise ConfigError("this DDPM keeps no EMA; build it with ema_decay=0.999 (for instance)")
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self.update_ema())
        return optimizer

    def _net(self, use_ema: bool | None) -> nn.Module:
        if use_ema is None:
            use_ema = self.ema_decay is not None
        if use_ema and self.ema_decay is None:
            raise ConfigError("use_ema=True but this DDPM keeps no EMA; build it with ema_decay=...")
        # Read past PyroModule.__getattr__: the Pyro model announces the parameters once per run
        # (forward), not at every network call.
        return self._modules["ema_network" if use_ema else "network"]
