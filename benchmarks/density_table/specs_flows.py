"""The normalizing-flow rows: ``flow`` (Gaussian base; toys and digits) and ``flow-mixture`` (a learned
Gaussian-mixture base; toys only), rational-quadratic spline coupling fitted through ``inference.fit``."""

from __future__ import annotations

from typing import Any

import torch
from _common import redequantize
from noise_rule import resolve_noise_std

from density_table.base import (
    FLOW_BATCH,
    FLOW_NOISE,
    FLOW_SECONDS,
    Context,
    adamw,
    budget_fit,
    exact_row,
    validation_split,
)


def fit_toy_flow(model: Any, train: torch.Tensor, std: float) -> float:
    """The toy flows' fit: the wall-clock budget, AdamW 3e-3, clipping, noise regularisation of std ``std``."""
    from inference import GaussianNoise

    return budget_fit(model, None, train, FLOW_SECONDS, loss="elbo", batch_size=FLOW_BATCH, lr=3e-3,
                      optimizer=adamw(3e-3, 1e-4), clip_norm=5.0, batch_transform=GaussianNoise(std) if std > 0 else None)


def run_flow(ctx: Context) -> dict[str, Any]:
    from inference import initialize_flow
    from vi_models import SplineFlow

    torch.manual_seed(0)
    if ctx.toy:
        std = resolve_noise_std(FLOW_NOISE, ctx.train)
        torch.manual_seed(0)
        model = initialize_flow(SplineFlow(2, 4, (64, 64), count_bins=12), ctx.train)
        fit_s = fit_toy_flow(model, ctx.train, std)
        label = "SplineFlow (4 RQ-spline coupling layers, 12 bins, 64x64)" + (f", noise std {std:.3f}" if std > 0 else "")
        config = (f"{FLOW_SECONDS:.0f} s budget, batch {FLOW_BATCH}, AdamW 3e-3, cosine; "
                  + ("noise regularisation (GaussianNoise) at 3/4 of the KDE's CV bandwidth" if std > 0 else "no noise"))
    else:
        train, val = validation_split(ctx.train)
        model = initialize_flow(SplineFlow(64, 4, (256, 256), permutation="random", domain="unit"), train)
        fit_s = budget_fit(model, None, train, 360, loss="elbo", batch_size=128, lr=1e-3,
                           optimizer=adamw(1e-3, 1e-2), batch_transform=redequantize(ctx.bundle),
                           validation_data=val, early_stopping=15)
        label, config = "SplineFlow (4 layers, 256x256, logit squash), dequantised", "360 s budget, early stopping on 10% of train"
    return exact_row(ctx, model, label, config, fit_s)


def run_flow_mixture(ctx: Context) -> dict[str, Any]:
    """The toy flow of :func:`run_flow` on a learned 16-component Gaussian-mixture base (EM start)."""
    from inference import initialize_flow
    from vi_models import SplineFlow

    if not ctx.toy:
        raise ValueError("the mixture-base flow is benchmarked on the 2-D toys only")
    std = resolve_noise_std(FLOW_NOISE, ctx.train)
    torch.manual_seed(0)
    model = initialize_flow(SplineFlow(2, 4, (64, 64), count_bins=12, base="mixture", num_components=16), ctx.train)
    fit_s = fit_toy_flow(model, ctx.train, std)
    label = f"SplineFlow on a 16-component mixture base (EM start), noise std {std:.3f}"
    config = (f"{FLOW_SECONDS:.0f} s budget, batch {FLOW_BATCH}, AdamW 3e-3, cosine; base initialised by EM on the "
              "standardised data; noise at 3/4 of the KDE's CV bandwidth")
    return exact_row(ctx, model, label, config, fit_s)
