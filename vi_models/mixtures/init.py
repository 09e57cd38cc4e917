"""Initial responsibilities of a mixture, as scikit-learn's ``BaseMixture._initialize_parameters``.

EM (:func:`inference.fit_em`) and the SVI start of a mixture
(:meth:`vi_models.mixtures.base.MixtureModel.init_values`) begin from the same
responsibilities: identical initial components never separate (THEORY T13).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vi_models.errors import ConfigError

__all__ = ["INIT_METHODS", "initial_responsibilities"]

INIT_METHODS: tuple[str, ...] = ("k-means++", "kmeans", "random_from_data", "random")


def initial_responsibilities(x: Tensor, n_components: int, method: str, rng: np.random.RandomState) -> Tensor:
    """Initial ``Q(z_i = k)`` ``(N, K)`` as scikit-learn's ``BaseMixture._initialize_parameters``.

    ``"k-means++"``: one-hot on the k-means++ seeds; ``"kmeans"``: one-hot on a k-means
    clustering; ``"random_from_data"``: one-hot on K distinct random observations;
    ``"random"``: uniform random rows, normalised. The same ``rng`` as scikit-learn's
    ``random_state`` gives the same initialisation.
    """
    n = x.shape[0]
    resp = np.zeros((n, n_components))
    if method in ("k-means++", "kmeans"):
        from sklearn.cluster import KMeans, kmeans_plusplus

        data = x.detach().reshape(n, -1).cpu().numpy()
        if method == "k-means++":
            _, indices = kmeans_plusplus(data, n_components, random_state=rng)
            resp[indices, np.arange(n_components)] = 1
        else:
            labels = KMeans(n_clusters=n_components, n_init=1, random_state=rng).fit(data).labels_
            resp[np.arange(n), labels] = 1
    elif method == "random":
        resp = rng.uniform(size=(n, n_components))
        resp /= resp.sum(axis=1, keepdims=True)
    elif method == "random_from_data":
        indices = rng.choice(n, size=n_components, replace=False)
        resp[indices, np.arange(n_components)] = 1
    else:
        raise ConfigError(f"expected init to be one of {', '.join(map(repr, INIT_METHODS))} or a dict of parameters, got {method!r}")
    return torch.as_tensor(resp, dtype=x.dtype if x.is_floating_point() else torch.get_default_dtype(), device=x.device)
