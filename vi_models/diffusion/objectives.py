r"""Which bound a DDPM model/guide pair computes: the objectives of Ho et al. (2020).

Every objective is the same pair of programs (:class:`vi_models.DDPM` and
:class:`guides.ForwardDiffusion`) with per-step scales on its sample sites; the table of names
is in :mod:`inference.engine.diffusion_elbo`, whose :class:`~inference.DiffusionELBO` passes one
:class:`DiffusionObjective` to both programs (keyword ``objective``) so that they cannot
disagree. The model and the guide read it; the engine chooses it.

References
----------
J. Ho, A. Jain and P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
A. Nichol and P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, Union

from torch import Tensor

from vi_models.errors import ConfigError

__all__ = ["OBJECTIVES", "DiffusionObjective", "ObjectiveName", "ObjectiveSpec", "resolve_objective"]

ObjectiveName = Literal["vlb", "vlb_sampled", "simple", "hybrid", "chain"]
OBJECTIVES: Final = ("vlb", "vlb_sampled", "simple", "hybrid", "chain")
ObjectiveSpec = Union["DiffusionObjective", ObjectiveName, None]


@dataclass(frozen=True)
class DiffusionObjective:
    """Which bound a DDPM model/guide pair computes, and how each time step is weighted.

    The per-step weight of L_{t-1} is ``a_t = simple_coef / (T w_t) + vlb_coef`` (``w_t``
    of THEORY T19); when one time step is drawn per observation, t ~ U{1, ..., T}, its term
    is scaled by ``a_t / p(t) = T a_t``, which makes the estimate unbiased.

    Attributes
    ----------
    name
        One of :data:`OBJECTIVES` (see the module docstring).
    hybrid_weight
        lambda of ``"hybrid"``: L_simple + lambda L_VLB (default 1e-3, Nichol & Dhariwal).

    Raises
    ------
    ConfigError
        Unknown name, or ``hybrid_weight`` not a positive finite number.

    Examples
    --------
    >>> DiffusionObjective("hybrid").vlb_coef
    0.001
    """

    name: ObjectiveName = "vlb_sampled"
    hybrid_weight: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(
                f"expected a diffusion objective, one of {', '.join(map(repr, OBJECTIVES))}, got {self.name!r}"
            )
        w = self.hybrid_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
            raise ConfigError(f"expected hybrid_weight to be a finite number > 0, got {w!r}; 1e-3 is the usual value")

    @property
    def samples_time(self) -> bool:
        """Whether one time step is drawn per observation (else: all of them, or the chain)."""
        return self.name in ("vlb_sampled", "simple", "hybrid")

    @property
    def simple_coef(self) -> float:
        """Weight of L_simple in the objective (1 for ``"simple"`` and ``"hybrid"``, else 0)."""
        return 1.0 if self.name in ("simple", "hybrid") else 0.0

    @property
    def vlb_coef(self) -> float:
        """Weight of L_VLB in the objective (``hybrid_weight`` for ``"hybrid"``, 0 for ``"simple"``)."""
        return {"simple": 0.0, "hybrid": float(self.hybrid_weight)}.get(self.name, 1.0)

    def step_scale(self, loss_weights: Tensor, num_steps: int) -> Tensor:
        """Scale of the term of step t: ``a_t`` (all steps) or ``T a_t`` (one drawn step).

        Parameters
        ----------
        loss_weights
            ``w_t`` of the steps, any shape (THEORY T19), > 0.
        num_steps
            ``T``.

        Returns
        -------
        Tensor
            Same shape as ``loss_weights``.
        """
        a = self.vlb_coef + self.simple_coef / (num_steps * loss_weights)
        return a * num_steps if self.samples_time else a

    def offset_scale(self, loss_weights: Tensor, num_steps: int) -> Tensor:
        """Scale of the constant ``c_t`` removed from the term of step t (0 without L_simple).

        ``L_simple`` contains ``(L_{t-1} - c_t) / w_t``; the model adds back
        ``offset_scale * c_t`` as a factor, so the reported loss is L_simple exactly.
        """
        off = self.simple_coef / (num_steps * loss_weights)
        return off * num_steps if self.samples_time else off


def resolve_objective(objective: ObjectiveSpec) -> DiffusionObjective:
    """A :class:`DiffusionObjective` from an instance, a name, or ``None`` (``"vlb_sampled"``)."""
    if objective is None:
        return DiffusionObjective()
    if isinstance(objective, DiffusionObjective):
        return objective
    if isinstance(objective, str):
        return DiffusionObjective(objective)  # type: ignore[arg-type]
    raise ConfigError(
        f"expected objective as a DiffusionObjective or one of {', '.join(map(repr, OBJECTIVES))}, "
        f"got {type(objective).__name__}"
    )
