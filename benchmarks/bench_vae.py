"""Held-out likelihood of the VAE on the digits, next to the peers, from one script.

Digits (17 grey levels, canonical split ``train_test_split(X, test_size=0.2, random_state=0)``):
bits/dim of the discrete data. Continuous models see dequantised x = (k + u)/17 and report
-(E[log p(x)] - 64 log 17)/(64 log 2), a bound on the discrete figure; discrete models
(categorical decoder, per-pixel categorical, mixtures of categoricals) report it exactly.

Digits-binary (pixel > 8): test negative log-likelihood in nats.

Peers, fitted here on the same split: scikit-learn KernelDensity (bandwidth by 5-fold CV),
PCA(40).score (probabilistic PCA), GaussianMixture(40, diag), an independent per-pixel
categorical (add-one), EM mixtures of 10 categoricals and of 30 Bernoullis (numpy EM written
here, independent of the package), an independent Bernoulli.

    python benchmarks/bench_vae.py               # full (several minutes on 2 cores)
    BENCH_QUICK=1 python benchmarks/bench_vae.py
"""

from __future__ import annotations

import math

import numpy as np
import torch
from _common import QUICK, categorical_mixture_log_prob, em_categorical_mixture, holdout, table, timed
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from guides import GaussianEncoder
from inference import fit, load_dataset, log_likelihood
from vi_models import VAE

LOG17 = math.log(17)
D = 64


def bpd_continuous(ll: float) -> float:
    return -(ll - D * LOG17) / (D * math.log(2))


def bpd_discrete(ll: float) -> float:
    return -ll / (D * math.log(2))


def em_mixture_test_ll(k_train: np.ndarray, k_test: np.ndarray, n_components: int, levels: int, iters: int = 200) -> float:
    """Mean test log P(k) of an EM mixture of independent categoricals (numpy, ``_common.em_categorical_mixture``)."""
    log_w, log_p = em_categorical_mixture(k_train, n_components, levels, iters=iters)
    return float(categorical_mixture_log_prob(log_w, log_p, k_test).mean())


def fit_vae(bundle, likelihood: str, epochs: int, z_dim: int, hidden: tuple[int, ...], loss: str, k: int):
    torch.manual_seed(0)
    x_dim = bundle.train.shape[1]
    model = VAE(x_dim, z_dim, hidden_dims=hidden, likelihood=likelihood, num_levels=17)
    guide = GaussianEncoder(x_dim, z_dim, hidden_dims=hidden, num_levels=17 if likelihood == "categorical" else None)
    # Hold out 10% of the training split for early stopping (the VAE overfits 1437 images).
    train, val = holdout(bundle.train, bundle.train.shape[0] // 10)
    _, seconds = timed(lambda: fit(model, guide, train, loss=loss, num_particles=k, epochs=epochs, batch_size=128, lr=1e-3,
                                   seed=0, progress=False, validation_data=val, early_stopping=20, check_convergence=False))
    return model, guide, seconds


def main() -> None:
    torch.set_num_threads(2)
    rows: list[tuple[str, str, str]] = []
    digits = load_dataset("digits")
    xtr, xte = digits.train.numpy().astype(np.float64), digits.test.numpy().astype(np.float64)
    ktr, kte = digits.train_levels.numpy(), digits.test_levels.numpy()

    bandwidths = np.logspace(-2.0, -0.5, 4 if QUICK else 12)
    kde = GridSearchCV(KernelDensity(), {"bandwidth": bandwidths}, cv=5).fit(xtr).best_estimator_
    rows.append(("sklearn KernelDensity (5-fold CV bandwidth)", f"{bpd_continuous(kde.score_samples(xte).mean()):.3f}", "dequantised bound"))
    rows.append(("sklearn PCA(40).score (PPCA)", f"{bpd_continuous(PCA(40).fit(xtr).score(xte)):.3f}", "dequantised bound"))
    gmm = GaussianMixture(40, covariance_type="diag", random_state=0, max_iter=200).fit(xtr)
    rows.append(("sklearn GaussianMixture(40, diag)", f"{bpd_continuous(gmm.score(xte)):.3f}", "dequantised bound"))
    counts = np.stack([np.bincount(ktr[:, j], minlength=17) for j in range(D)]) + 1.0
    logp = np.log(counts / counts.sum(1, keepdims=True))
    rows.append(("independent per-pixel categorical (add-one)", f"{bpd_discrete(logp[np.arange(D), kte].sum(1).mean()):.3f}", "exact"))
    rows.append(("EM mixture of 10 categoricals (numpy)",
                 f"{bpd_discrete(em_mixture_test_ll(ktr, kte, 10, 17, iters=50 if QUICK else 200)):.3f}", "exact"))

    epochs = 5 if QUICK else 300
    k_eval = 50 if QUICK else 1000
    for likelihood, label in (("categorical", "exact (IWAE bound)"), ("gaussian", "dequantised bound (IWAE)")):
        model, guide, seconds = fit_vae(digits, likelihood, epochs, 16, (512, 512), "meanfield", 1)
        torch.manual_seed(0)
        ll = log_likelihood(model, guide, digits.test, num_samples=k_eval).mean().item()
        elbo = log_likelihood(model, guide, digits.test, method="elbo", num_samples=16).mean().item()
        bpd = digits.bits_per_dim(ll, discrete=model.is_discrete)
        bpd_elbo = digits.bits_per_dim(elbo, discrete=model.is_discrete)
        rows.append((f"vi-models VAE, {likelihood} decoder (early-stopped, {seconds:.0f} s)",
                     f"{bpd:.3f} (ELBO {bpd_elbo:.3f})", f"{label}, K={k_eval}"))

    print(f"## Digits: held-out bits/dim (test split, 360 images){' [QUICK]' if QUICK else ''}\n")
    print(table(["model", "bits/dim", "kind"], rows))

    binary = load_dataset("digits-binary")
    btr, bte = binary.train.numpy(), binary.test.numpy()
    p = (btr.sum(0) + 1.0) / (len(btr) + 2.0)
    indep = (bte * np.log(p) + (1 - bte) * np.log1p(-p)).sum(1).mean()
    brows = [("independent Bernoulli (add-one)", f"{-indep:.2f}", "exact")]
    brows.append(("EM mixture of 30 Bernoullis (numpy)",
                  f"{-em_mixture_test_ll(btr.astype(int), bte.astype(int), 30, 2, iters=50 if QUICK else 200):.2f}", "exact"))
    k_bin = 100 if QUICK else 5000
    model, guide, seconds = fit_vae(binary, "bernoulli", epochs, 8, (256, 256), "meanfield", 1)
    torch.manual_seed(0)
    ll = log_likelihood(model, guide, binary.test, num_samples=k_bin).mean().item()
    elbo = log_likelihood(model, guide, binary.test, method="elbo", num_samples=16).mean().item()
    brows.append((f"vi-models VAE, Bernoulli decoder (early-stopped, {seconds:.0f} s)",
                  f"{-ll:.2f} (ELBO {-elbo:.2f}, gap {ll - elbo:.2f})", f"IWAE K={k_bin}"))
    print(f"\n## Digits-binary: test NLL (nats){' [QUICK]' if QUICK else ''}\n")
    print(table(["model", "NLL", "kind"], brows))


if __name__ == "__main__":
    main()
