"""The noise-regularisation std the toy benchmarks give flexible densities (flows, DDPM).

Flows and diffusion models fitted to 10 000 points of a 2-D density learn the points
themselves: their KL on the training draws falls far below their KL on fresh draws
(benchmarks/RESULTS.md). Fresh Gaussian noise on every training batch
(``inference.GaussianNoise``) trades that variance for a bias of order std^2. The std is set
from the training data only, the same way for every density: 3/4 of a Gaussian KDE's
leave-one-out bandwidth.
"""

from __future__ import annotations

import numpy as np
import torch


def kde_noise_std(x: torch.Tensor, fraction: float = 0.75) -> float:
    """``fraction`` times the leave-one-out bandwidth of a Gaussian KDE of ``x`` ``(N, D)``.

    The bandwidth is chosen by leave-one-out likelihood on 2 000 of the points and carried to
    the full sample by the kernel rate n^(-1/6) (d = 2); the model adds smoothness of its own,
    so it gets less noise than the KDE's optimal kernel.
    """
    from vi_models import KernelDensity

    sub = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:2_000]].double()
    kde = KernelDensity("gaussian", "cv", dtype=torch.float64).fit(sub, bandwidths=torch.from_numpy(np.geomspace(0.02, 0.4, 16)))
    return fraction * kde.bandwidth_ * (sub.shape[0] / x.shape[0]) ** (1 / 6)


def resolve_noise_std(spec: str, x: torch.Tensor) -> float:
    """``"kde"``: :func:`kde_noise_std` of ``x``; otherwise the number (``"0"``: no noise)."""
    return kde_noise_std(x) if spec == "kde" else float(spec)
