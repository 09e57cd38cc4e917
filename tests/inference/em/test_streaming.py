"""Streamed EM (fit_em with chunk_size, a memory-mapped .npy, an iterable of chunks) against the
in-memory fit of the same data: the statistics add over chunks, so the two fits agree to rounding
(weights, means, covariances or probabilities, lower bound, iterations). Also: what is refused, the
initialisation sample, EMResult's methods on chunked data, averaged EM on chunks, that a
lazily read array is never read more than a chunk at a time, and that the sub-chunks a chunk's
E-step and checks take (vi_models.mixtures.chunks) change the sums only by rounding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from inference import fit_em, fit_em_average
from inference.em.sources import as_source
from inference.em.streaming import statistics_pass
from vi_models import GaussianMixture
from vi_models.errors import ConfigError, DataError
from vi_models.mixtures import chunks


class Reiterable:
    """A re-iterable over chunks (each ``iter()`` starts over), like a reader of several files."""

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)


class ReadLog:
    """A lazily read array (shape and ``[a:b]``) that records the largest read."""

    def __init__(self, array):
        self.array, self.shape, self.largest = array, array.shape, 0

    def __getitem__(self, index):
        part = self.array[index]
        self.largest = max(self.largest, len(part))
        return part


@pytest.mark.parametrize("name", ["full", "diag", "bernoulli", "categorical"])
def test_streamed_fits_equal_the_in_memory_fit(name, stream_cases, tmp_path):
    x = stream_cases.data(name)
    want = fit_em(stream_cases.model(name), x, **stream_cases.fit)
    np.save(tmp_path / "x.npy", x)
    three = np.array_split(x, 3)
    sources = {
        "3 chunks of a tensor": (torch.as_tensor(x), {"chunk_size": 100}),
        "list of 3 chunks": (three, {}),
        "re-iterable": (Reiterable(three), {"chunk_size": 70}),
        "callable": (lambda: (c for c in three), {}),
        "memmap": (np.load(tmp_path / "x.npy", mmap_mode="r"), {"chunk_size": 128}),
    }
    for label, (data, options) in sources.items():
        got = fit_em(stream_cases.model(name), data, **stream_cases.fit, **options)
        assert got.config["streamed"], label
        stream_cases.assert_same_fit(got, want)
        np.testing.assert_allclose(got.lower_bounds_, want.lower_bounds_, atol=1e-10, rtol=1e-13, err_msg=label)


def test_an_initialisation_sample_is_the_same_rows_whatever_the_source(stream_cases, tmp_path):
    x = stream_cases.data("full")
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    model = stream_cases.model("full")
    rows = np.sort(np.random.default_rng(3).choice(300, 40, replace=False))
    for data in (x, mm, np.array_split(x, 4)):
        source = as_source(data, model, chunk_size=64, dtype=torch.float64, device=torch.device("cpu"))
        np.testing.assert_array_equal(source.sample(40, seed=3).numpy(), x[rows])
        np.testing.assert_array_equal(source.sample(300, seed=3).numpy(), x)  # N <= size: all rows, in order
    fits = [fit_em(stream_cases.model("full"), data, init_sample_size=40, **stream_cases.fit)
            for data in (x, ReadLog(mm), Reiterable(np.array_split(x, 4)))]
    for got in fits[1:]:
        stream_cases.assert_same_fit(got, fits[0])
    assert fits[0].config["init_sample_size"] == 40


def test_the_sample_is_uniform_over_subsets_drawn_block_by_block(monkeypatch):
    import itertools

    from inference.em import sources

    want = np.sort(np.random.default_rng(3).choice(300, 40, replace=False))  # one block: numpy's own draw
    assert np.array_equal(sources.sample_rows(300, 40, 3), want)
    monkeypatch.setattr(sources, "SAMPLE_BLOCK", 4)  # 6 rows in blocks of 4 and 2: every 3-subset has p = 1/20
    draws = [tuple(sources.sample_rows(6, 3, seed)) for seed in range(20_000)]
    assert all(len(set(d)) == 3 and list(d) == sorted(d) for d in draws)
    counts = {subset: 0 for subset in itertools.combinations(range(6), 3)}
    for d in draws:
        counts[d] += 1
    np.testing.assert_allclose(np.array(list(counts.values())) / len(draws), 1 / 20, atol=0.006)  # 4 sigma


def test_a_lazily_read_array_is_read_one_chunk_at_a_time(stream_cases):
    x = stream_cases.data("full")
    log = ReadLog(x)
    got = fit_em(stream_cases.model("full"), log, chunk_size=50, init_sample_size=120, **stream_cases.fit)
    assert 0 < log.largest <= 50
    want = fit_em(stream_cases.model("full"), x, init_sample_size=120, **stream_cases.fit)
    stream_cases.assert_same_fit(got, want)


@pytest.mark.parametrize("name", ["full", "categorical"])
def test_the_sub_chunked_e_step_gives_the_statistics_of_one_pass(name, stream_cases, monkeypatch):
    x, model = stream_cases.data(name), stream_cases.model(name)
    source = as_source(x, model, chunk_size=128, dtype=torch.float64, device=torch.device("cpu"))
    shift = torch.as_tensor(x.mean(0))
    template = {k: torch.zeros_like(v, dtype=torch.float64)
                for k, v in model.sufficient_statistics(torch.as_tensor(x[:1]), torch.ones(1, 3), shift=shift).items()}
    options = {"depth": 1, "shift": shift, "template": template, "validate": True, "parallel": False, "n_components": 3}
    one, total_one, _ = statistics_pass(model, source, **options)  # 128 rows < MIN_SUB_CHUNK_ROWS: one sub-chunk
    many, total_many, _ = statistics_pass(model, source, sub_chunk=7, **options)
    assert total_many == pytest.approx(total_one, abs=1e-10, rel=0)
    for key in one:
        torch.testing.assert_close(many[key], one[key], atol=1e-10, rtol=0)
    # and a whole fit, with the chunks' E-steps, the summary and the checks in sub-chunks of 21 rows
    want = fit_em(stream_cases.model(name), x, chunk_size=128, **stream_cases.fit)
    monkeypatch.setattr(chunks, "MIN_SUB_CHUNK_ROWS", 16)
    got = fit_em(stream_cases.model(name), x, chunk_size=128, **stream_cases.fit)
    stream_cases.assert_same_fit(got, want)


def test_result_methods_read_chunked_data_like_a_tensor(stream_cases, tmp_path):
    x = stream_cases.data("diag")
    result = fit_em(stream_cases.model("diag"), x, **stream_cases.fit)
    np.save(tmp_path / "x.npy", x)
    xt = torch.as_tensor(x)
    for data in (np.load(tmp_path / "x.npy", mmap_mode="r"), np.array_split(x, 3)):
        assert result.score(data, chunk_size=64) == pytest.approx(result.score(xt), abs=1e-12)
        assert result.bic(data) == pytest.approx(result.bic(xt), abs=1e-9)
        assert result.aic(data) == pytest.approx(result.aic(xt), abs=1e-9)
        assert result.bits_per_dim(data) == pytest.approx(result.bits_per_dim(xt), abs=1e-12)
        torch.testing.assert_close(result.score_samples(data, chunk_size=64), result.model.log_prob(xt).detach())
        torch.testing.assert_close(result.predict_proba(data), result.predict_proba(xt))
        assert torch.equal(result.predict(data, chunk_size=7), result.predict(xt))


def test_averaged_em_on_chunks_equals_averaged_em_in_memory(stream_cases, tmp_path):
    x = stream_cases.data("full")
    np.save(tmp_path / "x.npy", x)
    options = {"n_fits": 2, "seed": 4, "max_iter": 50, "tol": 1e-6}
    want = fit_em_average(stream_cases.model("full"), x, **options)
    for data, extra in ((x, {"chunk_size": 90}), (np.load(tmp_path / "x.npy", mmap_mode="r"), {"chunk_size": 90}),
                        (np.array_split(x, 3), {})):
        got = fit_em_average(stream_cases.model("full"), data, **options, **extra)
        for key, value in stream_cases.params(want).items():
            torch.testing.assert_close(stream_cases.params(got)[key], value, atol=1e-10, rtol=0)
    with pytest.raises(ConfigError, match="bootstrap"):
        fit_em_average(stream_cases.model("full"), np.array_split(x, 3), n_fits=2, bootstrap=True)


class Poisson2(PyroModule):
    """No sufficient statistics: its M-step is gradient steps (generalised EM)."""

    def __init__(self):
        super().__init__()
        self.weights = PyroParam(torch.tensor([0.5, 0.5], dtype=torch.float64), constraint=constraints.simplex)
        self.rates = PyroParam(torch.tensor([1.0, 3.0], dtype=torch.float64), constraint=constraints.positive)

    def forward(self, x):
        import pyro
        import pyro.distributions as dist

        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(self.weights))
            pyro.sample("x", dist.Poisson(self.rates[z].unsqueeze(-1).expand(*z.shape, 2)).to_event(1), obs=x)


def _rows(n: int = 60, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, d)


@pytest.mark.parametrize(
    "data, options, error, match",
    [
        ((c for c in np.array_split(_rows(), 3)), {}, ConfigError, "one-shot generator.*pass a list of chunks"),
        (iter(np.array_split(_rows(), 3)), {}, ConfigError, "re-iterable object, or a callable"),
        ([_rows(30), _rows(30).reshape(30, 3, 1)], {}, DataError, r"chunk 1 of shape \(30, 3, 1\)"),
        ([_rows(30), _rows(30)[:, :2]], {}, DataError, "3 columns.*chunk 1 with 2"),
        ([_rows(30), np.where(np.arange(30)[:, None] == 7, np.nan, _rows(30))], {}, DataError,
         r"finite values in chunk 1 \(data rows 30 to 59\).*rows 7"),
        (_rows(), {"chunk_size": 0}, ConfigError, "chunk_size to be an integer >= 1"),
        (_rows(), {"chunk_size": 2.5}, ConfigError, "chunk_size"),
        (_rows(), {"chunk_size": True}, ConfigError, "chunk_size"),
        (_rows(), {"init_sample_size": 0}, ConfigError, "init_sample_size"),
        ([], {}, DataError, "non-empty"),
        ([np.empty((0, 3))], {}, DataError, "at least one row of data"),
        (lambda: 3, {}, ConfigError, "callable to return an iterable of chunks"),
    ],
)
def test_bad_streamed_inputs_raise_package_errors(data, options, error, match):
    with pytest.raises(error, match=match):
        fit_em(GaussianMixture(2, 3, dtype=torch.float64), data, progress=False, **options)


@pytest.mark.parametrize("min_rows, block", [(None, "50 to 99"), (16, "50 to 65")])
def test_memmap_with_nan_names_the_rows_of_the_block(min_rows, block, tmp_path, monkeypatch):
    if min_rows is not None:  # a chunk of 50 rows is converted and checked 16 rows at a time
        monkeypatch.setattr(chunks, "MIN_SUB_CHUNK_ROWS", min_rows)
    x = _rows(100)
    x[63, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=rf"data rows {block}.*rows 13"):
        fit_em(GaussianMixture(2, 3, dtype=torch.float64), np.load(tmp_path / "x.npy", mmap_mode="r"),
               chunk_size=50, init_sample_size=10, seed=0, progress=False)  # the sample misses row 63


def test_a_reiterable_that_changes_between_passes_is_refused():
    class Alternating:
        passes = 0

        def __iter__(self):  # 2 and 3 chunks on alternate passes
            self.passes += 1
            return iter(np.array_split(_rows(), 2 + self.passes % 2))

    with pytest.raises(DataError, match="same chunks on every pass"):
        fit_em(GaussianMixture(2, 3, dtype=torch.float64), Alternating(), progress=False)


def test_a_model_without_sufficient_statistics_refuses_streamed_data():
    x = np.random.RandomState(0).poisson(3.0, (40, 2)).astype(float)
    with pytest.raises(ConfigError, match="expected a model with sufficient_statistics.*Poisson2.*one in-memory"):
        fit_em(Poisson2(), x, chunk_size=10, progress=False)
    with pytest.raises(ConfigError, match="streamed"):
        fit_em(Poisson2(), np.array_split(x, 2), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fit_em(Poisson2(), x, max_iter=1, gem_steps=1, progress=False).config["m_step"].startswith("generalised")
