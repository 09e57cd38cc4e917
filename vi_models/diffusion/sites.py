"""Sample-site names and the time-step distribution shared by :class:`vi_models.DDPM` and
:class:`guides.ForwardDiffusion` (defined once, imported by both).

Sites of the per-step objectives (``"vlb"``, ``"vlb_sampled"``, ``"simple"``, ``"hybrid"``),
inside the observation plate ``"data"``:

======================= ======================================================================
``TIME`` ``"t"``            the step of each observation, t ~ U{1, ..., T} (sampled objectives),
                            or the plate ``TIME_PLATE`` over all T steps (``"vlb"``)
``STATE`` ``"x_t"``         x_t ~ q(x_t | x_0), the condition of the next site; masked (it enters
                            only through it)
``PREVIOUS`` ``"x_prev"``   x_{t-1}: q(x_{t-1} | x_t, x_0) in the guide, p_theta(x_{t-1} | x_t) in
                            the model; their analytic KL is L_{t-1} (masked where t = 1)
``OBSERVED`` ``"x_0"``      the data under p_theta(x_0 | x_1) (the term L_0, masked where t > 1)
``SIMPLE_OFFSET``           a parameter-free factor of the model that removes the constant c_t of
                            L_{t-1} = w_t ||eps - eps_theta||^2 + c_t for L_simple
``PRIOR`` ``"x_T"``         x_T: q(x_T | x_0) against p(x_T) = N(0, I), the term L_T
======================= ======================================================================

The ``"chain"`` objective has the literal chain instead: sites :func:`chain_site` (t) =
``"x_{t}"`` for t = T, ..., 1, then ``OBSERVED``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import register_kl

from vi_models._validation import check_positive_int

__all__ = [
    "OBSERVED",
    "PREVIOUS",
    "PRIOR",
    "SIMPLE_OFFSET",
    "STATE",
    "TIME",
    "TIME_PLATE",
    "TimeStep",
    "chain_site",
]

TIME_PLATE: Final = "time"
TIME: Final = "t"
STATE: Final = "x_t"
PREVIOUS: Final = "x_prev"
OBSERVED: Final = "x_0"
SIMPLE_OFFSET: Final = "simple_offset"
PRIOR: Final = "x_T"


def chain_site(t: int) -> str:
    """Name of the site x_t of the ``"chain"`` objective, e.g. ``"x_3"``."""
    return f"x_{t}"


class TimeStep(TorchDistribution):
    """The uniform distribution on the steps {1, ..., T} (long values).

    It has no parameters, so its pathwise ("reparameterised") gradient is exactly zero and
    ``has_rsample`` is true: analytic-KL ELBOs accept it in a guide, and KL(TimeStep ||
    TimeStep) = 0 is registered.

    Parameters
    ----------
    num_steps
        T.
    batch_shape
        Batch shape of the draws.

    Examples
    --------
    >>> TimeStep(4, (3,)).sample().shape
    torch.Size([3])
    """

    arg_constraints: ClassVar[dict] = {}
    has_rsample = True

    def __init__(self, num_steps: int, batch_shape: tuple[int, ...] | torch.Size = (), *,
                 device: torch.device | str | None = None, validate_args: bool | None = None) -> None:
        self.num_steps = check_positive_int(num_steps, "T")
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(1, self.num_steps)

    def expand(self, batch_shape, _instance=None):
        return TimeStep(self.num_steps, torch.Size(batch_shape), device=self._device, validate_args=self._validate_args)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        return torch.randint(1, self.num_steps + 1, shape, device=self._device)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        return torch.full(shape, -math.log(self.num_steps), device=value.device, dtype=torch.get_default_dtype())

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, math.log(self.num_steps), device=self._device)


@register_kl(TimeStep, TimeStep)
def _kl_timestep(p: TimeStep, q: TimeStep) -> torch.Tensor:
    if p.num_steps != q.num_steps:
        raise NotImplementedError("KL between uniform time steps of different T is infinite")
    return torch.zeros(torch.broadcast_shapes(p.batch_shape, q.batch_shape), device=p._device)

