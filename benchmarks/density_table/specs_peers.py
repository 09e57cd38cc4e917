"""The peer rows: scikit-learn KernelDensity (5-fold CV bandwidth), GaussianMixture (K by held-out likelihood
on the toys, 40 diagonal components on the digits), PCA(40).score, and a numpy EM mixture of 10 categoricals
(digits)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from _common import categorical_mixture_log_prob, em_categorical_mixture, timed

from density_table.base import N_SAMPLE, QUICK, Context, flat, toy_bandwidths


def run_sklearn_kde(ctx: Context) -> dict[str, Any]:
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity as SkKDE

    x = flat(ctx.train).numpy()
    grid = toy_bandwidths() if ctx.toy else np.logspace(-2.0, -0.5, 12)
    search, fit_s = timed(lambda: GridSearchCV(SkKDE(), {"bandwidth": grid}, cv=5).fit(x))
    kde = search.best_estimator_
    test = flat(ctx.test).numpy()
    log_q = torch.from_numpy(np.concatenate([kde.score_samples(test[i : i + 10_000]) for i in range(0, len(test), 10_000)]))
    _, sample_s = timed(lambda: kde.sample(N_SAMPLE, random_state=0))
    return {"label": f"sklearn KernelDensity (5-fold CV bandwidth {kde.bandwidth:.4g})", "config": "GridSearchCV, cv=5",
            "fit_s": fit_s, "sample_s": sample_s, "estimator": "exact", **ctx.score(log_q)}


def run_sklearn_gmm(ctx: Context) -> dict[str, Any]:
    from sklearn.mixture import GaussianMixture as SkGMM

    x = flat(ctx.train).numpy()
    start = time.perf_counter()
    if ctx.toy:
        n_val = len(x) // 10
        order = np.random.default_rng(0).permutation(len(x))
        train, val = x[order[n_val:]], x[order[:n_val]]
        ks = (8,) if QUICK else (8, 16, 32, 64, 100)
        k = max(ks, key=lambda k: SkGMM(k, covariance_type="full", random_state=0).fit(train).score(val))
        gmm, covariance = SkGMM(k, covariance_type="full", random_state=0).fit(x), "full"
    else:
        gmm, covariance = SkGMM(40, covariance_type="diag", random_state=0, max_iter=200).fit(x), "diag"
    fit_s = time.perf_counter() - start
    log_q = torch.from_numpy(gmm.score_samples(flat(ctx.test).numpy()))
    _, sample_s = timed(lambda: gmm.sample(N_SAMPLE))
    return {"label": f"sklearn GaussianMixture({gmm.n_components}, {covariance})",
            "config": "K by held-out likelihood (10% of train) among 8..100" if ctx.toy else "40 diagonal components",
            "fit_s": fit_s, "sample_s": sample_s, "estimator": "exact", **ctx.score(log_q)}


def run_sklearn_pca(ctx: Context) -> dict[str, Any]:
    from sklearn.decomposition import PCA

    x = ctx.train.double().numpy()
    pca, fit_s = timed(lambda: PCA(40).fit(x))
    log_q = torch.from_numpy(pca.score_samples(ctx.test.double().numpy()))
    rng = np.random.default_rng(0)
    _, sample_s = timed(lambda: rng.multivariate_normal(pca.mean_, pca.get_covariance(), size=N_SAMPLE))
    return {"label": "sklearn PCA(40).score (probabilistic PCA)", "config": "", "fit_s": fit_s, "sample_s": sample_s,
            "estimator": "exact", **ctx.score(log_q)}


def run_em_categorical(ctx: Context) -> dict[str, Any]:
    b = ctx.bundle
    ktr, kte = b.train_levels.numpy(), b.test_levels.numpy()
    (log_w, log_p), fit_s = timed(lambda: em_categorical_mixture(ktr, 10, b.num_levels, iters=20 if QUICK else 200))
    log_q = torch.from_numpy(categorical_mixture_log_prob(log_w, log_p, kte))

    def draw() -> np.ndarray:
        rng = np.random.default_rng(0)
        comp = rng.choice(len(log_w), size=N_SAMPLE, p=np.exp(log_w))
        cdf = np.exp(log_p[comp]).cumsum(-1)  # (n, D, L)
        return (rng.random(cdf.shape[:2])[..., None] > cdf).sum(-1)

    _, sample_s = timed(draw)
    return {"label": "EM mixture of 10 categoricals (numpy)", "config": "200 EM iterations, add-one smoothing",
            "fit_s": fit_s, "sample_s": sample_s, "estimator": "exact", **ctx.score(log_q, discrete=True)}
