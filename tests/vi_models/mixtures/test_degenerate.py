"""Covariances that are not positive definite (vi_models.mixtures.degenerate): float64 factors with
a jitter ladder and a typed warning, the degenerate-component rule, re-seeding; and the two pieces
that keep a fit's memory to a chunk: the sub-chunked M-step and the blocked k-means++ (against
scikit-learn's kmeans_plusplus)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import kmeans_plusplus
from sklearn.datasets import load_breast_cancer

from vi_models import GaussianMixture
from vi_models.errors import DataError, DegenerateFitWarning
from vi_models.mixtures import NumericalJitterWarning, chunks
from vi_models.mixtures.degenerate import JITTERS, degenerate_components, factorize, reseed_components
from vi_models.mixtures.gaussian import COVARIANCE_TYPES
from vi_models.mixtures.init import kmeans_plusplus_rows


def test_a_singular_covariance_gets_the_smallest_jitter_that_works_and_a_typed_warning(float64):
    cov = torch.stack([torch.eye(2), torch.ones(2, 2), torch.tensor([[1.0, 2.0], [2.0, 1.0]])])
    factor, failed, jitter = factorize(cov, "full")
    assert failed == [2]  # indefinite: eigenvalue -1, beyond any jitter of the ladder
    assert jitter == {1: pytest.approx(JITTERS[0])}  # rank one, mean variance 1
    torch.testing.assert_close(factor[1] @ factor[1].T, cov[1] + JITTERS[0] * torch.eye(2))
    assert issubclass(NumericalJitterWarning, DegenerateFitWarning)
    model = GaussianMixture(2, 2, "full")
    with pytest.warns(NumericalJitterWarning, match=r"component\(s\) \[1\].*1: 1\.0e-12"):
        model.set_params(covariances=cov[:2])
    with pytest.raises(DataError, match=r"got component\(s\) \[1\] whose covariance is not, even with a jitter"):
        model.set_params(weights=torch.tensor([0.9, 0.1]), covariances=cov[[0, 2]])
    assert model.weights.detach()[0] == pytest.approx(0.5)  # a failed factorisation writes nothing


@pytest.mark.parametrize("covariance", COVARIANCE_TYPES)
def test_a_float32_model_takes_float64_covariances_that_float32_cannot_factorise(covariance):
    # breast_cancer's worst-area variance is 3e5; reg_covar 1e-6 is below float32's resolution of it
    x = torch.as_tensor(load_breast_cancer().data[:40])
    resp = torch.zeros(40, 3, dtype=torch.float64)
    resp[torch.arange(40), torch.arange(40) % 3] = 1.0
    resp[:, 0], resp[0] = 0.0, torch.tensor([1.0, 0.0, 0.0])  # component 0 owns one point: Sigma_0 = reg_covar I
    model = GaussianMixture(3, 30, covariance, dtype=torch.float32)
    params = model.m_step(x.float(), resp.float(), reg_covar=1e-6)
    assert params["covariances"].dtype == torch.float64
    model.set_params(**params)  # the float32 M-step raised "not positive definite" for "full"
    want = GaussianMixture(3, 30, covariance).m_step(x.float().double(), resp, reg_covar=1e-6)["covariances"]
    got = model.covariances.double()  # from the float32 factor
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    if covariance != "tied":
        variances = got[0].diagonal() if covariance == "full" else got[0]
        torch.testing.assert_close(variances, torch.full_like(variances, 1e-6), rtol=1e-3, atol=0)


def test_degenerate_components_are_the_non_finite_the_point_masses_and_the_unfactorisable(float64):
    params = {"weights": torch.full((4,), 0.25), "means": torch.zeros(4, 2),
              "covariances": torch.stack([torch.eye(2), 1e-6 * torch.eye(2), 1e-20 * torch.eye(2),
                                          torch.tensor([[1.0, 2.0], [2.0, 1.0]])])}
    # reg_covar-sized (1e-6) is kept, as scikit-learn keeps it; 1e-20 is a point mass beside variance 1
    assert degenerate_components(params, "full", data_variance=1.0) == [2, 3]
    params["means"][0, 0] = float("nan")
    assert degenerate_components(params, "full", data_variance=1.0) == [0, 2, 3]
    diag = {"weights": torch.full((2,), 0.5), "means": torch.zeros(2, 2),
            "covariances": torch.tensor([[1.0, 1.0], [1.0, -1.0]])}
    assert degenerate_components(diag, "diag", data_variance=1.0) == [1]
    tied = {"weights": torch.full((2,), 0.5), "means": torch.zeros(2, 2), "covariances": torch.zeros(2, 2)}
    assert degenerate_components(tied, "tied", data_variance=1.0) == [0, 1]


def test_reseeding_pools_the_healthy_covariances_and_floors_the_weight(float64):
    params = {"weights": torch.tensor([0.6, 0.4 - 1e-9, 1e-9]), "means": torch.zeros(3, 2),
              "covariances": torch.stack([torch.eye(2), 3 * torch.eye(2), torch.zeros(2, 2)])}
    out = reseed_components(params, "full", [2], torch.tensor([[5.0, 6.0]]), min_weight=0.01,
                            current=(params["means"], params["covariances"]))
    torch.testing.assert_close(out["means"][2], torch.tensor([5.0, 6.0]))
    torch.testing.assert_close(out["covariances"][2], (0.6 * 1 + (0.4 - 1e-9) * 3) / (1 - 1e-9) * torch.eye(2))
    torch.testing.assert_close(out["weights"], torch.tensor([0.6, 0.4 - 1e-9, 0.01]) / (1.01 - 1e-9))
    with pytest.raises(DataError, match="none can be re-seeded"):
        reseed_components(params, "tied", [0, 1, 2], torch.zeros(3, 2),
                          current=(params["means"], params["covariances"]))


@pytest.mark.parametrize("covariance", [*COVARIANCE_TYPES, "bernoulli"])
def test_the_sub_chunked_m_step_is_the_one_pass_m_step(covariance, float64, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = 50 + 10 * torch.randn(300, 3, generator=g)
    resp = torch.softmax(torch.randn(300, 4, generator=g), -1)
    if covariance == "bernoulli":
        from vi_models import BernoulliMixture

        model, x = BernoulliMixture(4, 3), (x > 50).double()
    else:
        model = GaussianMixture(4, 3, covariance)
    one = model.m_step(x, resp, reg_covar=1e-6)
    monkeypatch.setattr(chunks, "MIN_SUB_CHUNK_ROWS", 16)  # 300 rows in sub-chunks of max(16, 300 // 16) = 18
    assert len(list(chunks.sub_chunks(300, 4))) == 17
    many = model.m_step(x, resp, reg_covar=1e-6)
    for name in one:
        torch.testing.assert_close(many[name], one[name], atol=1e-10, rtol=0)


def test_blocked_kmeans_plusplus_draws_the_seeds_of_sklearn():
    rng = np.random.RandomState(0)
    tables = (load_breast_cancer().data, rng.randn(3000, 4), rng.randn(2000, 3).astype(np.float32))
    for x in tables:
        for k in (2, 5, 8):
            for seed in (0, 1):
                want = kmeans_plusplus(x, k, random_state=np.random.RandomState(seed))[1]
                for block in (8192, 97):
                    got = kmeans_plusplus_rows(x, k, np.random.RandomState(seed), block=block)
                    np.testing.assert_array_equal(got, want, err_msg=f"{x.shape} {x.dtype} k={k} seed={seed}")
