"""The four models of the streamed and distributed EM tests, their data, what a fit is compared on, and
data on which a component collapses (re-seeded by fit_em)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vi_models import BernoulliMixture, CategoricalMixture, GaussianMixture

STREAM_CASES = ("full", "diag", "bernoulli", "categorical")
#: One fit's options: several starts and a tight tolerance, so that n_iter_ is a sharp check.
STREAM_FIT = {"seed": 0, "n_init": 2, "tol": 1e-6, "max_iter": 300, "progress": False}


def _data(name: str, n: int = 300) -> np.ndarray:
    rng = np.random.RandomState({"full": 0, "diag": 1, "bernoulli": 2, "categorical": 3}[name])
    if name in ("full", "diag"):
        centres = np.array([[-4.0, 0.0, 1.0], [4.0, 1.0, 0.0], [0.0, 5.0, 2.0]])
        mix = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 0.7]])
        return centres[rng.randint(0, 3, n)] + rng.randn(n, 3) @ mix
    if name == "bernoulli":
        on = np.where(np.arange(n)[:, None] < n // 2, 0.15, 0.85) * np.ones((1, 8))
        on[:, :3] = 0.5
        return (rng.rand(n, 8) < on).astype(np.float64)
    levels = rng.randint(0, 5, (n, 6))
    levels[: n // 2, :3] = rng.randint(0, 2, (n // 2, 3))
    return (levels + rng.rand(n, 6)) / 5


def _model(name: str) -> torch.nn.Module:
    if name in ("full", "diag"):
        return GaussianMixture(3, 3, name, dtype=torch.float64)
    if name == "bernoulli":
        return BernoulliMixture(3, 8, dtype=torch.float64)
    return CategoricalMixture(3, 6, 5, dtype=torch.float64)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {"weights": model.weights.detach()}
    if isinstance(model, GaussianMixture):
        out.update(means=model.means.detach(), covariances=model.covariances)
    else:
        out["probs"] = model.probs.detach()
    return out


def _assert_same_fit(got, want, atol: float = 1e-10) -> None:
    """Two EM results (or ``(model, lower_bound, n_iter)``) agree: parameters, lower bound, iterations."""
    def parts(r):
        return (r.model, r.lower_bound_, r.n_iter_) if hasattr(r, "model") else r

    (m1, lb1, it1), (m2, lb2, it2) = parts(got), parts(want)
    assert it1 == it2
    assert abs(lb1 - lb2) <= atol
    p1, p2 = _params(m1), _params(m2)
    for key in p2:
        torch.testing.assert_close(p1[key], p2[key], atol=atol, rtol=0, msg=key)


def _duplicates() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Three blobs and six copies of one far point, with a 4th full-covariance component started on the
    copies: with reg_covar=0 it owns them alone after one E-step, and its covariance is 0."""
    rng = np.random.RandomState(0)
    centres = np.array([[-4.0, 0.0], [4.0, 1.0], [0.0, 5.0]])
    x = np.concatenate([centres[rng.randint(0, 3, 300)] + rng.randn(300, 2), np.tile([[20.0, 20.0]], (6, 1))])
    x = x[rng.permutation(len(x))]
    init = {"weights": np.array([0.3, 0.3, 0.3, 0.1]), "means": np.concatenate([centres, [[20.0, 20.0]]]),
            "covariances": np.stack([np.eye(2)] * 4)}
    return x, init


@pytest.fixture
def stream_cases():
    """``data(name)``, ``model(name)``, ``params(model)``, ``assert_same_fit(a, b)``, the fit options and
    ``duplicates()`` (data and an init on which a component collapses)."""
    return SimpleNamespace(names=STREAM_CASES, data=_data, model=_model, params=_params,
                           assert_same_fit=_assert_same_fit, fit=dict(STREAM_FIT), duplicates=_duplicates)
