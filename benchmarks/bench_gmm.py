"""Gaussian mixtures: ``inference.fit_em`` against scikit-learn, EM against SVI with enumeration,
and held-out bits/dim on the digits. Prints markdown tables.

    .venv/bin/python benchmarks/bench_gmm.py              # full sizes (a few minutes on 2 cores)
    BENCH_QUICK=1 .venv/bin/python benchmarks/bench_gmm.py

Both libraries run in float64 on the CPU with one thread each (``torch.set_num_threads`` and
``threadpoolctl`` for NumPy's BLAS), from the same initial parameters and with the same ``tol``:
on a small shared machine one thread gives repeatable timings, and neither side gains from
threads the other does not use. Timings are the median of ``REPEATS`` runs.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np
import torch
from _common import QUICK, table, timed
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

from inference import ConvergenceWarning, DegenerateFitWarning, fit, fit_em, load_dataset
from vi_models import BernoulliMixture, CategoricalMixture, GaussianMixture

REPEATS = 1 if QUICK else 3
N, D, K = (20_000 if QUICK else 100_000), 10, 8
DIGITS_K = (10,) if QUICK else (10, 20, 40)
SVI_N, SVI_EPOCHS = (2_000, 40) if QUICK else (10_000, 150)


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    """K anisotropic Gaussian clusters in D dimensions, overlapping enough for tens of EM iterations."""
    rng = np.random.RandomState(seed)
    centres = 2.5 * rng.randn(K, D)
    mixing = rng.randn(K, D, D) / math.sqrt(D)
    z = rng.randint(0, K, size=n)
    return centres[z] + np.einsum("nd,nde->ne", rng.randn(n, D), mixing[z] + 0.5 * np.eye(D))


def initial_params(x: np.ndarray, covariance: str, k: int = K, seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's k-means++ initialisation (seeds, one M-step), as weights/means/precisions."""
    model = GaussianMixture(k, x.shape[1], covariance, dtype=torch.float64)
    fit_em(model, x, init="k-means++", max_iter=0, seed=seed, progress=False)
    return {"weights": model.weights.detach().numpy(), "means": model.means.detach().numpy(),
            "precisions": model.precisions.numpy()}


def time_sklearn(x: np.ndarray, covariance: str, init: dict, k: int = K, **kw) -> tuple[float, SkGaussianMixture]:
    sk, seconds = timed(lambda: SkGaussianMixture(k, covariance_type=covariance, weights_init=init["weights"],
                                                  means_init=init["means"], precisions_init=init["precisions"],
                                                  **kw).fit(x))
    return seconds, sk


def time_fit_em(x: torch.Tensor, covariance: str, init: dict, k: int = K, **kw):
    model = GaussianMixture(k, x.shape[1], covariance, dtype=torch.float64)
    result, seconds = timed(lambda: fit_em(model, x, init=init, progress=False, **kw))
    return seconds, result


def bench_speed() -> str:
    x_np = synthetic(N)
    x = torch.from_numpy(x_np)
    rows = []
    for covariance in ("full", "diag"):
        init = initial_params(x_np, covariance)
        sk_times, em_times = [], []
        for _ in range(REPEATS):  # interleaved, so that load on the machine hits both alike
            t, sk = time_sklearn(x_np, covariance, init)
            sk_times.append(t)
            t, em = time_fit_em(x, covariance, init)
            em_times.append(t)
        t_sk, t_em = statistics.median(sk_times), statistics.median(em_times)
        rows.append([covariance, N, f"{t_sk:.2f}", f"{t_em:.2f}", f"{t_em / t_sk:.2f}x",
                     f"{1e3 * t_sk / sk.n_iter_:.1f}", f"{1e3 * em.time_per_iter:.1f}", f"{sk.n_iter_} / {em.n_iter_}",
                     f"{sk.lower_bound_:.8f}", f"{em.lower_bound_:.8f}", f"{abs(sk.lower_bound_ - em.lower_bound_):.1e}"])
    return table(["covariance", "N", "sklearn s", "fit_em s", "fit_em / sklearn", "sklearn ms/iter",
                  "fit_em ms/iter", "iters sk / em", "sklearn lower bound", "fit_em lower bound", "|diff|"], rows)


def bench_em_vs_svi() -> str:
    x_np = synthetic(SVI_N, seed=1)
    x = torch.from_numpy(x_np)
    # A start both can use: random observations as means, the data's variances, equal weights
    # (k-means++'s reg_covar-sized variances would take SVI thousands of steps to grow).
    rng = np.random.RandomState(0)
    init = {"weights": np.full(K, 1 / K), "means": x_np[rng.choice(SVI_N, K, replace=False)],
            "precisions": np.tile(1 / x_np.var(0), (K, 1))}
    rows = []
    start = time.perf_counter()
    em = fit_em(GaussianMixture(K, D, "diag", dtype=torch.float64), x, init=init, progress=False)
    rows.append(["EM (fit_em, closed-form M-step)", f"{time.perf_counter() - start:.2f}", em.n_iter_,
                 f"{em.score(x):.5f}"])
    for lr in (0.01, 0.05):
        model = GaussianMixture(K, D, "diag", dtype=torch.float64)
        model.set_params(**init)
        start = time.perf_counter()
        fit(model, None, x, loss="enum", epochs=SVI_EPOCHS, batch_size=1000, lr=lr, progress=False, seed=0,
            check_convergence=False)
        elapsed = time.perf_counter() - start
        ll = float(model.log_prob(x).detach().mean())
        rows.append([f"SVI, TraceEnum_ELBO, guide=None (ML), Adam lr={lr}, batch 1000", f"{elapsed:.2f}",
                     f"{SVI_EPOCHS} epochs", f"{ll:.5f}"])
    return table([f"method (diag, K=8, d=10, N={SVI_N}, same start)", "wall s", "iterations",
                  "train mean log p(x)"], rows)


def bench_digits() -> str:
    bundle = load_dataset("digits")
    train, test = bundle.train.double(), bundle.test.double()
    train_np, test_np = train.numpy(), test.numpy()
    rows = []
    for k in DIGITS_K:
        for covariance in ("full", "diag", "spherical", "tied"):
            start = time.perf_counter()
            em = fit_em(GaussianMixture(k, 64, covariance, dtype=torch.float64), train, seed=0, progress=False)
            t_em = time.perf_counter() - start
            start = time.perf_counter()
            sk = SkGaussianMixture(k, covariance_type=covariance, init_params="k-means++", random_state=0).fit(train_np)
            t_sk = time.perf_counter() - start
            bpd_em = bundle.bits_per_dim(em.score_samples(test).mean(), discrete=False)
            bpd_sk = bundle.bits_per_dim(float(sk.score(test_np)), discrete=False)
            rows.append([k, covariance, f"{bpd_em:.4f}", f"{bpd_sk:.4f}", f"{t_em:.2f}", f"{t_sk:.2f}"])
    for k in DIGITS_K[:1]:
        cat = fit_em(CategoricalMixture(k, 64, 17, dtype=torch.float64), train, seed=0, n_init=2, tol=1e-4,
                     max_iter=300, progress=False)
        rows.append([k, "categorical (17 levels, pseudo-count 1)", f"{cat.bits_per_dim(test):.4f}",
                     "peer EM: 2.29", "", ""])
    binary = load_dataset("digits-binary")
    bern = fit_em(BernoulliMixture(30, 64, dtype=torch.float64), binary.train.double(), seed=0, n_init=2, tol=1e-4,
                  max_iter=300, progress=False)
    rows.append([30, "Bernoulli on digits-binary (pseudo-count 1): test NLL nats",
                 f"{-bern.score(binary.test.double()):.3f}", "peer EM: 18.9", "", ""])
    return table(["K", "covariance", "fit_em bits/dim", "sklearn bits/dim", "fit_em s", "sklearn s"], rows)


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.simplefilter("ignore", DegenerateFitWarning)
    with threadpool_limits(1):
        print(f"## fit_em vs scikit-learn GaussianMixture: N={N}, d={D}, K={K}, float64, CPU, 1 thread, "
              f"tol=1e-3, same initial parameters (median of {REPEATS})\n")
        print(bench_speed(), "\n")
        print("## EM vs SVI with enumeration (same mixture, same start)\n")
        print(bench_em_vs_svi(), "\n")
        print("## Digits (64 dims, 1437 train / 360 test, dequantised 17 levels): held-out bits/dim\n")
        print(bench_digits())


if __name__ == "__main__":
    main()
