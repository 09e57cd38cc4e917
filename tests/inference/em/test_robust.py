"""fit_em on real, unscaled tables, against scikit-learn's GaussianMixture from the same start; and
the components an M-step cannot go on with (on_degenerate), in memory and chunked.

The tables are scikit-learn's bundled wine (13 features from 0.1 to 1700) and breast-cancer (30
features from 1e-3 to 4000, nearly collinear radius / perimeter / area columns), not scaled. Both
libraries start from our k-means++ initialisation (scikit-learn gets its weights, means and
precisions) and use the same reg_covar, tol and max_iter; scikit-learn's lower_bound_ is the mean
log-likelihood at the parameters of its last E-step, as ours.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

from inference import DegenerateFitWarning, fit_em
from vi_models import GaussianMixture
from vi_models.errors import DataError
from vi_models.mixtures.gaussian import COVARIANCE_TYPES

TABLES = {"wine": load_wine().data, "breast_cancer": load_breast_cancer().data}


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: on tables of a few hundred rows, more only spin (10x the time on 2 cores)."""
    with threadpool_limits(1):
        yield


def _same_start(x: np.ndarray, k: int, covariance: str, seed: int) -> dict[str, np.ndarray]:
    start = GaussianMixture(k, x.shape[1], covariance, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateFitWarning)  # k-means++ seeds are single points
        fit_em(start, x, max_iter=0, seed=seed, progress=False)
    return {"weights": start.weights.detach().numpy(), "means": start.means.detach().numpy(),
            "precisions": start.precisions.numpy()}


def _sklearn(x: np.ndarray, k: int, covariance: str, start: dict[str, np.ndarray]) -> SkGaussianMixture | None:
    sk = SkGaussianMixture(k, covariance_type=covariance, reg_covar=1e-6, tol=1e-3, max_iter=100,
                           weights_init=start["weights"], means_init=start["means"],
                           precisions_init=start["precisions"], init_params="random_from_data", random_state=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sk.fit(x)
    except ValueError:  # "ill-defined empirical covariance": nothing to match
        return None


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
@pytest.mark.parametrize("table", TABLES)
def test_unscaled_tables_fit_wherever_sklearn_does_with_at_least_its_lower_bound(table, covariance, float64):
    x = TABLES[table]
    for k in (2, 3, 5, 8):
        for seed in (0, 1, 2):
            start = _same_start(x, k, covariance, seed)
            sk = _sklearn(x, k, covariance, start)
            if sk is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = fit_em(GaussianMixture(k, x.shape[1], covariance), x, init=start, reg_covar=1e-6, tol=1e-3,
                                max_iter=100, progress=False)
            case = f"{table} {covariance} K={k} seed={seed}"
            assert result.lower_bound_ >= sk.lower_bound_ - 1e-6, (case, result.lower_bound_, sk.lower_bound_)
            assert result.n_iter_ == sk.n_iter_, case


@pytest.mark.parametrize("covariance", ["full", "tied", "spherical"])
def test_a_float32_model_fits_unscaled_tables_its_m_step_in_float64(covariance):
    # in float32 the one-pass moments and the Cholesky factor lost reg_covar (1e-6 beside variances of
    # 1e5): every K failed with "not positive definite" on breast_cancer
    for table, x in TABLES.items():
        for k in (2, 8):
            start = _same_start(x, k, covariance, 0)
            sk = _sklearn(x, k, covariance, start)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = fit_em(GaussianMixture(k, x.shape[1], covariance, dtype=torch.float32), x, init=start,
                                max_iter=100, progress=False)
            assert result.lower_bound_ == pytest.approx(sk.lower_bound_, abs=1e-4), (table, k)


# --------------------------------------------------------------------------- on_degenerate


@pytest.mark.filterwarnings("ignore::vi_models.errors.ConvergenceWarning")
def test_a_collapsed_component_is_reseeded_at_the_worst_explained_point_in_memory_and_chunked(stream_cases, float64):
    x, init = stream_cases.duplicates()
    with pytest.warns(DegenerateFitWarning, match=r"iteration 1, component\(s\) \[3\] collapsed; re-seeded"):
        one = fit_em(GaussianMixture(4, 2), x, init=init, reg_covar=0.0, max_iter=1, progress=False)
    (n_iter, component, row), = one.reseeds_
    assert (n_iter, component) == (1, 3)
    start = GaussianMixture(4, 2)
    start.set_params(**init)
    assert row == int(start.log_prob(torch.as_tensor(x)).argmin())  # the lowest log p(x_i) at the E-step's parameters
    model = one.model
    torch.testing.assert_close(model.means.detach()[3], torch.as_tensor(x[row]))
    w = model.weights.detach()
    pooled = (w[:3, None, None] * model.covariances[:3]).sum(0) / w[:3].sum()
    torch.testing.assert_close(model.covariances[3], pooled)
    assert w[3] >= 1 / len(x) - 1e-15

    options = {"init": init, "reg_covar": 0.0, "max_iter": 30, "tol": 1e-8, "progress": False}
    with pytest.warns(DegenerateFitWarning, match="re-seeded"):
        want = fit_em(GaussianMixture(4, 2), x, **options)
    assert want.reseeds_
    for data, extra in ((np.array_split(x, 3), {}), (torch.as_tensor(x), {"chunk_size": 50})):
        with pytest.warns(DegenerateFitWarning, match="re-seeded"):
            got = fit_em(GaussianMixture(4, 2), data, **options, **extra)
        assert got.config["streamed"] and got.reseeds_ == want.reseeds_
        assert got.n_iter_ == want.n_iter_ and abs(got.lower_bound_ - want.lower_bound_) <= 1e-10
        for name in ("weights", "means", "covariances"):
            torch.testing.assert_close(getattr(got.model, name).detach(), getattr(want.model, name).detach(),
                                       atol=1e-10, rtol=0)


@pytest.mark.filterwarnings("ignore::vi_models.errors.ConvergenceWarning")
def test_on_degenerate_raise_stops_and_keep_keeps_the_previous_parameters(stream_cases, float64):
    x, init = stream_cases.duplicates()
    with pytest.raises(DataError, match=r"on_degenerate='raise'.*iteration 1, component\(s\) \[3\] collapsed"):
        fit_em(GaussianMixture(4, 2, "diag"), x, init={**init, "covariances": np.ones((4, 2))}, reg_covar=0.0,
               on_degenerate="raise", progress=False)
    with pytest.warns(DegenerateFitWarning, match=r"\[3\] collapsed; they keep their previous means"):
        kept = fit_em(GaussianMixture(4, 2), x, init=init, reg_covar=0.0, on_degenerate="keep", max_iter=1,
                      progress=False)
    assert not kept.reseeds_
    torch.testing.assert_close(kept.model.means.detach()[3], torch.tensor([20.0, 20.0]))
    torch.testing.assert_close(kept.model.covariances[3], torch.eye(2))
    assert kept.model.weights.detach()[3] == pytest.approx(6 / len(x))  # the weights still take their M-step


def test_a_component_held_up_by_reg_covar_is_kept_as_sklearn_keeps_it(stream_cases, float64):
    x, init = stream_cases.duplicates()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_em(GaussianMixture(4, 2), x, init=init, reg_covar=1e-6, max_iter=20, progress=False)
    assert not result.reseeds_
    assert any("collapsed onto a single point" in str(w.message) for w in caught)
    torch.testing.assert_close(result.model.covariances[3], 1e-6 * torch.eye(2), atol=1e-12, rtol=0)


def test_every_component_collapsed_cannot_be_reseeded(float64):
    x = np.tile([[1.0, 2.0]], (4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)  # no "re-seeded" before the error
        with pytest.raises(DataError, match="none can be re-seeded"):
            fit_em(GaussianMixture(1, 2, "diag"), x, reg_covar=0.0, progress=False,
                   init={"weights": np.ones(1), "means": np.zeros((1, 2)), "covariances": np.ones((1, 2))})
