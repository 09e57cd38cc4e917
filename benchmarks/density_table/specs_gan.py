"""The GAN row: samples only (no density), fitted by ``inference.fit_adversarial``; MMD^2 to the test split."""

from __future__ import annotations

import time
from typing import Any

import torch
from _common import budget_schedule, timed

from density_table.base import N_SAMPLE, SCALE, Context


def run_gan(ctx: Context) -> dict[str, Any]:
    from inference import fit_adversarial, mmd
    from vi_models import GAN

    torch.manual_seed(0)
    d = ctx.bundle.num_dims
    gan = GAN(d, 8 if ctx.toy else 16, (128, 128) if ctx.toy else (256, 256), (128, 128) if ctx.toy else (256, 256))
    budget = 120 * SCALE
    start = time.perf_counter()
    _, stop = budget_schedule(start, budget)
    fit_adversarial(gan, ctx.train, epochs=100_000, batch_size=256, lr_g=2e-4 if not ctx.toy else 1e-3,
                    lr_d=2e-4 if not ctx.toy else 1e-3, seed=0, progress=False, callbacks=[stop])
    fit_s = time.perf_counter() - start
    fake, sample_s = timed(lambda: gan.sample(N_SAMPLE))
    n = min(2_000, ctx.test.shape[0])
    mmd2 = float(mmd(fake[:n].reshape(n, -1), ctx.test[:n].reshape(n, -1)))
    return {"label": "GAN (non-saturating, JS)", "config": "120 s budget; samples only", "fit_s": fit_s,
            "sample_s": sample_s, "estimator": "none (no density)", "metric": "kl_nats" if ctx.toy else "bits_per_dim",
            "value": None, "se": None, "mmd2_to_test": mmd2}
