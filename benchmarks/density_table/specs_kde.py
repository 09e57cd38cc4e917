"""The KDE row: the package's Gaussian ``KernelDensity`` with its leave-one-out cross-validated bandwidth."""

from __future__ import annotations

from typing import Any

import torch
from _common import chunked, timed

from density_table.base import N_SAMPLE, Context, flat, toy_bandwidths


def run_kde(ctx: Context) -> dict[str, Any]:
    from vi_models import KernelDensity

    x = flat(ctx.train)
    # On the toys the default grid (0.05-5 x Scott's rule, leave-one-out over 10k points) is slow
    # on one core: search the same range as the scikit-learn peer instead.
    grid = torch.from_numpy(toy_bandwidths()) if ctx.toy else None
    model, fit_s = timed(lambda: KernelDensity("gaussian", "cv", dtype=torch.float64).fit(x, bandwidths=grid))
    log_q = chunked(model.log_prob, flat(ctx.test), chunk=5_000)
    _, sample_s = timed(lambda: model.sample(N_SAMPLE))
    return {"label": f"KernelDensity (Gaussian, leave-one-out CV bandwidth {model.bandwidth_:.4g})",
            "config": "bandwidth by leave-one-out likelihood", "fit_s": fit_s, "sample_s": sample_s,
            "estimator": "exact", **ctx.score(log_q)}
