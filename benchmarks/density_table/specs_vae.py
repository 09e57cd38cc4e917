"""The VAE row: a Gaussian decoder on the toys, a categorical decoder on the digits; log p by the IWAE bound."""

from __future__ import annotations

from typing import Any

import torch
from _common import timed

from density_table.base import N_SAMPLE, Context, budget_fit, validation_split


def run_vae(ctx: Context) -> dict[str, Any]:
    from guides import GaussianEncoder
    from inference import log_likelihood
    from vi_models import VAE

    torch.manual_seed(0)
    if ctx.toy:
        model = VAE(2, 2, hidden_dims=(128, 128), likelihood="gaussian")
        guide = GaussianEncoder(2, 2, hidden_dims=(128, 128))
        fit_s = budget_fit(model, guide, ctx.train, 120, loss="meanfield", batch_size=512, lr=3e-3)
        num_samples, test = (100, ctx.test[:20_000])
        label = "VAE (z=2, 128x128, Gaussian decoder)"
    else:
        train, val = validation_split(ctx.train)
        model = VAE(64, 16, hidden_dims=(512, 512), likelihood="categorical", num_levels=17)
        guide = GaussianEncoder(64, 16, hidden_dims=(512, 512), num_levels=17)
        fit_s = budget_fit(model, guide, train, 360, loss="meanfield", batch_size=128, lr=1e-3,
                           validation_data=val, early_stopping=20)
        num_samples, test = 1000, ctx.test
        label = "VAE (z=16, 512x512, categorical decoder)"
    model.eval()
    guide.eval()
    torch.manual_seed(0)
    log_q = log_likelihood(model, guide, test, method="iwae", num_samples=num_samples).double()
    _, sample_s = timed(lambda: model.sample(N_SAMPLE))
    return {"label": label, "config": f"IWAE K={num_samples}", "fit_s": fit_s, "sample_s": sample_s,
            "estimator": f"iwae-{num_samples} (a lower bound on log p: KL overstated)",
            **ctx.score(log_q, discrete=model.is_discrete)}
