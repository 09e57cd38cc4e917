"""Initial responsibilities of a mixture, as scikit-learn's ``BaseMixture._initialize_parameters``.

EM (:func:`inference.fit_em`) and the SVI start of a mixture
(:meth:`vi_models.mixtures.base.MixtureModel.init_values`) begin from the same
responsibilities: identical initial components never separate (THEORY T13).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vi_models.errors import ConfigError, DataError

__all__ = ["INIT_METHODS", "initial_responsibilities", "kmeans_plusplus_rows", "seed_rows"]

INIT_METHODS: tuple[str, ...] = ("k-means++", "kmeans", "random_from_data", "random")


def kmeans_plusplus_rows(x: np.ndarray, n_clusters: int, rng: np.random.RandomState, block: int = 8192) -> np.ndarray:
    """The rows of the k-means++ seeds of ``x`` ``(n, d)`` (Arthur & Vassilvitskii 2007), ``(n_clusters,)``.

    The draws and formulas of scikit-learn's ``kmeans_plusplus`` (unit sample weights,
    ``2 + log K`` local trials, the same calls on ``rng``), with the distances taken ``block`` rows
    at a time: its ``(trials, n)`` distance tables become ``(trials, block)``, so that seeding a
    sample costs ``O(n)`` memory beside it. The best trial's distances are computed again rather
    than kept.
    """
    from sklearn.metrics.pairwise import euclidean_distances
    from sklearn.utils.extmath import row_norms

    n, weights, norms = x.shape[0], np.ones(x.shape[0], dtype=x.dtype), row_norms(x, squared=True)
    if not np.isfinite(norms).all():
        raise DataError(
            f"expected data whose squared distances are finite in {x.dtype} for the k-means++ initialisation, got "
            f"values up to {np.abs(x).max():.3g}; scale the data (e.g. standardise each column)"
            + (" or work in torch.float64" if x.dtype != np.float64 else "")
        )
    trials = 2 + int(np.log(n_clusters))
    blocks = [slice(a, min(a + block, n)) for a in range(0, n, block)]

    def distances(centres: np.ndarray, rows: slice) -> np.ndarray:  # (m, rows) squared distances
        return euclidean_distances(centres, x[rows], Y_norm_squared=norms[rows], squared=True)

    indices = [rng.choice(n, p=weights / weights.sum())]
    closest = np.concatenate([distances(x[indices], rows)[0] for rows in blocks])  # (n,)
    potential = closest @ weights
    for _ in range(1, n_clusters):
        candidates = np.searchsorted(np.cumsum(weights * closest), rng.uniform(size=trials) * potential)
        np.clip(candidates, None, n - 1, out=candidates)
        potentials = np.zeros(trials, dtype=closest.dtype)
        for rows in blocks:
            d = distances(x[candidates], rows)
            potentials += np.minimum(closest[rows], d, out=d) @ weights[rows]
        best = int(np.argmin(potentials))
        potential = potentials[best]
        for rows in blocks:
            np.minimum(closest[rows], distances(x[candidates], rows)[best], out=closest[rows])
        indices.append(int(candidates[best]))
    return np.asarray(indices)


def seed_rows(x: Tensor, n_components: int, method: str, rng: np.random.RandomState) -> np.ndarray | None:
    """The K rows that carry the one-hot initial responsibilities of ``"k-means++"`` (the k-means++
    seeds) and ``"random_from_data"`` (K distinct random rows), ``(K,)``; ``None`` for the other
    methods, without drawing from ``rng``. Draws from ``rng`` as :func:`initial_responsibilities`.

    Every other row has zero responsibility, so an M-step on these K rows with the identity as
    responsibilities is the M-step on all of them, without the ``(N, K)`` table.
    """
    n = x.shape[0]
    if method == "k-means++":
        return kmeans_plusplus_rows(x.detach().reshape(n, -1).cpu().numpy(), n_components, rng)
    if method == "random_from_data":
        return rng.choice(n, size=n_components, replace=False)
    return None


def initial_responsibilities(x: Tensor, n_components: int, method: str, rng: np.random.RandomState) -> Tensor:
    """Initial ``Q(z_i = k)`` ``(N, K)`` as scikit-learn's ``BaseMixture._initialize_parameters``.

    ``"k-means++"``: one-hot on the k-means++ seeds; ``"kmeans"``: one-hot on a k-means
    clustering; ``"random_from_data"``: one-hot on K distinct random observations;
    ``"random"``: uniform random rows, normalised. The same ``rng`` as scikit-learn's
    ``random_state`` gives the same initialisation.
    """
    n = x.shape[0]
    resp = np.zeros((n, n_components))
    if method in ("k-means++", "random_from_data"):
        resp[seed_rows(x, n_components, method, rng), np.arange(n_components)] = 1
    elif method == "kmeans":
        from sklearn.cluster import KMeans

        data = x.detach().reshape(n, -1).cpu().numpy()
        labels = KMeans(n_clusters=n_components, n_init=1, random_state=rng).fit(data).labels_
        resp[np.arange(n), labels] = 1
    elif method == "random":
        resp = rng.uniform(size=(n, n_components))
        resp /= resp.sum(axis=1, keepdims=True)
    else:
        raise ConfigError(f"expected init to be one of {', '.join(map(repr, INIT_METHODS))} or a dict of parameters, got {method!r}")
    return torch.as_tensor(resp, dtype=x.dtype if x.is_floating_point() else torch.get_default_dtype(), device=x.device)
