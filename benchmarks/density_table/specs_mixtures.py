"""The Gaussian-mixture rows: ``gmm`` (one EM fit by ``inference.fit_em``) and ``gmm-avg`` (the average of
several EM runs by ``inference.fit_em_average``); K by held-out likelihood on the toys, 40 diagonal components
on the digits."""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from _common import chunked, timed

from density_table.base import N_SAMPLE, QUICK, Context, flat, validation_split

#: Components searched on the toys (by held-out likelihood on 10% of the training draws).
TOY_COMPONENTS = (8, 16, 32, 64) if not QUICK else (8,)


def mixture_row(ctx: Context, model: Any, fit_s: float, label: str, config: str) -> dict[str, Any]:
    log_q = chunked(lambda v: model.log_prob(v).detach(), flat(ctx.test))
    _, sample_s = timed(lambda: model.sample(N_SAMPLE))
    return {"label": label, "config": config, "fit_s": fit_s, "sample_s": sample_s, "estimator": "exact",
            **ctx.score(log_q)}


def run_gmm(ctx: Context) -> dict[str, Any]:
    from inference import fit_em
    from vi_models import GaussianMixture

    x = flat(ctx.train)
    start = time.perf_counter()
    if ctx.toy:
        train, val = validation_split(x)
        best = None
        for k in TOY_COMPONENTS:
            gm = GaussianMixture(k, 2, covariance="full", dtype=torch.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit_em(gm, train, max_iter=300, seed=0, progress=False, reg_covar=1e-6)
            score = float(gm.log_prob(val).mean())
            if best is None or score > best[0]:
                best = (score, k)
        k, covariance = best[1], "full"
    else:
        k, covariance = 40, "diag"
    model = GaussianMixture(k, x.shape[1], covariance=covariance, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_em(model, x, max_iter=300, seed=0, progress=False, reg_covar=1e-6)
    fit_s = time.perf_counter() - start
    how = "K by held-out likelihood on 10% of train among 8, 16, 32, 64; refit on all" if ctx.toy else "as the sklearn peer"
    return mixture_row(ctx, model, fit_s, f"GaussianMixture({k}, {covariance}) by fit_em", how)


def run_gmm_average(ctx: Context) -> dict[str, Any]:
    """K as for the gmm row (the same held-out choice, scored on averaged fits), then the average
    of 10 EM runs from seeds 0..9 on all training data (inference.fit_em_average)."""
    from inference import fit_em_average
    from vi_models import GaussianMixture

    runs = 3 if QUICK else 10
    x = flat(ctx.train)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ctx.toy:
            train, val = validation_split(x)
            scores = {k: float(fit_em_average(GaussianMixture(k, 2, dtype=torch.float64), train, runs, max_iter=300,
                                              reg_covar=1e-6).log_prob(val).detach().mean())
                      for k in TOY_COMPONENTS}
            k, covariance = max(scores, key=scores.__getitem__), "full"
        else:
            k, covariance = 40, "diag"
        model = fit_em_average(GaussianMixture(k, x.shape[1], covariance=covariance, dtype=torch.float64), x, runs,
                               max_iter=300, reg_covar=1e-6)
    fit_s = time.perf_counter() - start
    how = (f"average of {runs} EM runs (seeds 0..{runs - 1}); K by held-out likelihood of the average on 10% of train "
           "among 8, 16, 32, 64, refit on all" if ctx.toy else f"average of {runs} EM runs of the sklearn peer's model")
    return mixture_row(ctx, model, fit_s, f"GaussianMixture({k}, {covariance}) averaged over {runs} EM runs (fit_em_average)",
                       how)
