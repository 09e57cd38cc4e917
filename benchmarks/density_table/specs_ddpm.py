"""The DDPM row: a TimeMLP DDPM fitted by ``inference.fit_diffusion``; log p by the probability-flow ODE on the
toys (fixed epochs, noise regularisation), by the L_VLB bound on the digits (wall-clock budget)."""

from __future__ import annotations

import time
from typing import Any

import torch
from _common import budget_schedule, chunked, redequantize, timed
from noise_rule import resolve_noise_std

from density_table.base import DDPM_NOISE, DDPM_TEST, DDPM_TOY_EPOCHS, N_SAMPLE, SCALE, Context


def run_ddpm(ctx: Context) -> dict[str, Any]:
    from guides import ForwardDiffusion
    from inference import GaussianNoise, fit_diffusion
    from vi_models import DDPM

    torch.manual_seed(0)
    train = ctx.train
    start = time.perf_counter()
    if ctx.toy:
        # As benchmarks/bench_diffusion.py: a fixed number of steps with cosine decay, not a budget.
        epochs = max(2, round(DDPM_TOY_EPOCHS * SCALE))
        std = resolve_noise_std(DDPM_NOISE, train)
        torch.manual_seed(0)
        model = DDPM(2, T=1000, data_loc=train.mean(0), data_scale=train.std(0), ema_decay=0.999, hidden_dim=128, num_blocks=3)
        fit_diffusion(model, ForwardDiffusion(model.schedule), train, objective="simple", epochs=epochs, batch_size=512,
                      lr=2e-3, seed=0, progress=False, check_convergence=False, jit=True,
                      batch_transform=GaussianNoise(std) if std > 0 else None,
                      scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs))
        config = (f"{epochs} epochs of batch 512 ({epochs * -(-train.shape[0] // 512)} steps), L_simple, cosine, "
                  f"noise std {std:.3g}; samples by DDIM 100 steps")
    else:
        scheduler, stop = budget_schedule(start, 180 * SCALE)
        model = DDPM(64, T=1000, data_loc=0.5, data_scale=0.5, ema_decay=0.999, hidden_dim=256, num_blocks=3)
        fit_diffusion(model, ForwardDiffusion(model.schedule), train, objective="simple", epochs=100_000, batch_size=256,
                      lr=1e-3, seed=0, progress=False, check_convergence=False, batch_transform=redequantize(ctx.bundle),
                      scheduler=scheduler, callbacks=[stop])
        config = "180 s budget, L_simple; samples by DDIM 100 steps"
    fit_s = time.perf_counter() - start
    model.eval()
    if ctx.toy:
        test = ctx.test[:DDPM_TEST]
        log_q = torch.cat([model.log_prob(chunk, trace="exact", rtol=1e-4, atol=1e-4).detach().double()
                           for chunk in test.split(20_000)])
        estimator = f"probability-flow ODE, exact trace ({test.shape[0]} test draws)"
    else:
        log_q = -chunked(lambda x: model.vlb(x), ctx.test, chunk=60)
        estimator = "-L_VLB (a lower bound on log p)"
    _, sample_s = timed(lambda: model.sample(N_SAMPLE, sampler="ddim", steps=100))
    return {"label": "DDPM (T=1000, TimeMLP, EMA)", "config": config,
            "fit_s": fit_s, "sample_s": sample_s, "estimator": estimator, **ctx.score(log_q, discrete=False)}
