"""Loss names understood by :func:`inference.fit`, and the KL weight (beta) machinery.

The engine accepts a Pyro :class:`~pyro.infer.ELBO` instance or one of these names:

========== ==================================================================
``"elbo"``      :class:`~pyro.infer.Trace_ELBO`, E_q[log p(x, z) - log q(z | x)] (THEORY T1)
``"meanfield"`` :class:`~pyro.infer.TraceMeanField_ELBO`, reconstruction minus an analytic
                KL(q || p) wherever one is registered (THEORY T2)
``"enum"``      :class:`~pyro.infer.TraceEnum_ELBO`, discrete latents summed out exactly
``"iwae"``      :class:`~pyro.infer.RenyiELBO` with alpha = 0 and K vectorised particles:
                the importance-weighted bound of Burda et al. (2016), per observation
========== ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Union

from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from vi_models.errors import ConfigError

LossName = Literal["elbo", "meanfield", "enum", "iwae"]
LOSS_NAMES: tuple[str, ...] = ("elbo", "meanfield", "enum", "iwae")
Beta = Union[float, Callable[[int], float]]

__all__ = ["LOSS_NAMES", "LossName", "make_elbo", "scale_latents", "linear_annealing"]


def make_elbo(
    loss: str | ELBO,
    *,
    num_particles: int = 1,
    vectorize_particles: bool | None = None,
    max_plate_nesting: int | None = None,
) -> ELBO:
    """Build the Pyro ELBO object for a loss name (an ``ELBO`` instance is returned as is).

    Args:
        loss: one of :data:`LOSS_NAMES`, or a ready :class:`pyro.infer.ELBO`.
        num_particles: Monte Carlo samples per step (K importance samples for ``"iwae"``).
        vectorize_particles: draw the particles in one vectorised pass (an outer plate);
            default: True for ``"iwae"``, False otherwise.
        max_plate_nesting: the model's plate depth; guessed by Pyro when None.

    Returns:
        A :class:`pyro.infer.ELBO` instance.

    Raises:
        ConfigError: unknown loss name or ``num_particles < 1``.
    """
    if isinstance(loss, ELBO):
        return loss
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ConfigError(f"expected num_particles to be an integer >= 1, got {num_particles!r}")
    if loss not in LOSS_NAMES:
        raise ConfigError(
            f"expected loss to be a pyro.infer.ELBO or one of {', '.join(map(repr, LOSS_NAMES))}, "
            f"got {loss!r}"
        )
    vectorize = (loss == "iwae") if vectorize_particles is None else bool(vectorize_particles)
    vectorize = vectorize and num_particles > 1
    kwargs: dict = {"num_particles": num_particles, "vectorize_particles": vectorize}
    if max_plate_nesting is not None:
        kwargs["max_plate_nesting"] = max_plate_nesting
    if loss == "elbo":
        return Trace_ELBO(**kwargs)
    if loss == "meanfield":
        return TraceMeanField_ELBO(**kwargs)
    if loss == "enum":
        return TraceEnum_ELBO(**kwargs)
    return RenyiELBO(alpha=0.0, **kwargs)


class scale_latents(Messenger):
    """Multiply the log-density of every latent (non-observed) sample site by ``beta``.

    Applied to both model and guide, this turns the ELBO into
    E_q[log p(x | z)] - beta * KL(q(z | x) || p(z)), the beta-VAE objective of
    Higgins et al. (2017), and with a schedule for beta the KL annealing of Bowman et al. (2016).
    """

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = float(beta)

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


def linear_annealing(warmup_epochs: int, start: float = 0.0, end: float = 1.0) -> Callable[[int], float]:
    """A KL weight schedule rising linearly from ``start`` to ``end`` over ``warmup_epochs``.

    Example:
        >>> schedule = linear_annealing(10)
        >>> [round(schedule(e), 2) for e in (0, 5, 10, 20)]
        [0.1, 0.6, 1.0, 1.0]
    """
    if warmup_epochs < 1:
        raise ConfigError(f"expected warmup_epochs >= 1, got {warmup_epochs!r}")

    def schedule(epoch: int) -> float:
        frac = min(1.0, (epoch + 1) / warmup_epochs)
        return start + (end - start) * frac

    return schedule


def resolve_beta(beta: Beta, epoch: int) -> float:
    """The KL weight at ``epoch`` (0-based) for a constant or a schedule."""
    value = float(beta(epoch)) if callable(beta) else float(beta)
    if not value >= 0.0:
        raise ConfigError(f"expected the KL weight beta >= 0, got {value!r} at epoch {epoch}")
    return value


def wrap_beta(fn: Callable, beta: float) -> Callable:
    """``fn`` with its latent sites scaled by ``beta`` (``fn`` itself when beta == 1)."""
    return fn if beta == 1.0 else scale_latents(beta)(fn)

