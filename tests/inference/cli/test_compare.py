"""`vi-models compare`: runs ranked by held-out elpd from the per-observation values `evaluate` saves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference import compare
from inference.cli.commands import LOG_LIKELIHOOD_FILE, main


def run_cli(*args: str) -> int:
    return main(list(args))


@pytest.fixture()
def evaluated_runs(tmp_path):
    rng = np.random.default_rng(0)
    # two well-separated clusters: a 2-component mixture beats one Gaussian by a wide margin
    x = np.concatenate([rng.normal(-3.0, 0.5, size=(100, 2)), rng.normal(3.0, 0.5, size=(100, 2))])
    np.save(tmp_path / "two.npy", rng.permutation(x))
    runs = {}
    for name, k in (("one", "1"), ("two", "2")):
        out = tmp_path / name
        assert run_cli("fit", "gmm", "--data", str(tmp_path / "two.npy"), "--out", str(out), "-k", k,
                       "--no-progress") == 0
        assert run_cli("evaluate", str(out)) == 0
        runs[name] = out
    return runs


def test_evaluate_saves_the_per_observation_values(evaluated_runs):
    for out in evaluated_runs.values():
        ll = np.load(out / LOG_LIKELIHOOD_FILE)
        metrics = json.loads((out / "metrics.json").read_text())
        assert ll.shape == (metrics["num_test"],)
        assert ll.mean() == pytest.approx(metrics["test_log_likelihood"], rel=1e-6)


def test_compare_ranks_like_the_library(evaluated_runs, tmp_path, capsys):
    capsys.readouterr()
    csv = tmp_path / "table.csv"
    assert run_cli("compare", str(evaluated_runs["one"]), str(evaluated_runs["two"]), "--out", str(csv)) == 0
    printed = capsys.readouterr().out
    expected = compare({name: np.load(out / LOG_LIKELIHOOD_FILE) for name, out in evaluated_runs.items()})
    assert list(expected.index) == ["two", "one"]  # the true number of components wins
    assert printed.strip().splitlines()[1].startswith("two")
    assert csv.read_text().splitlines()[1].startswith("two")
    total = np.load(evaluated_runs["two"] / LOG_LIKELIHOOD_FILE).sum()
    assert expected.loc["two", "elpd_loo"] == pytest.approx(total)


def test_compare_needs_evaluated_runs_on_the_same_data(evaluated_runs, tmp_path, capsys):
    capsys.readouterr()
    assert run_cli("compare", str(evaluated_runs["one"])) == 2
    assert "at least two" in capsys.readouterr().err
    bare = tmp_path / "bare"
    assert run_cli("fit", "gmm", "--data", str(tmp_path / "two.npy"), "--out", str(bare), "-k", "1",
                   "--no-progress") == 0
    capsys.readouterr()
    assert run_cli("compare", str(evaluated_runs["one"]), str(bare)) == 2
    assert "vi-models evaluate" in capsys.readouterr().err
    assert run_cli("evaluate", str(bare), "--max-test", "10") == 0  # scored on fewer rows
    capsys.readouterr()
    assert run_cli("compare", str(evaluated_runs["one"]), str(bare)) == 2
    assert "same observations" in capsys.readouterr().err


def test_compare_across_families(evaluated_runs, tmp_path, capsys):
    # a VAE and a DDPM on the same file, ranked with the mixtures by their held-out elpd
    data = str(tmp_path / "two.npy")
    extra = {
        "vae": ["--z-dim", "2", "--hidden-dims", "16", "--epochs", "2"],
        "ddpm": ["--T", "60", "--hidden-dim", "16", "--num-blocks", "1", "--epochs", "1"],
    }
    runs = dict(evaluated_runs)
    for family, options in extra.items():
        out = tmp_path / family
        assert run_cli("fit", family, "--data", data, "--out", str(out), "--no-progress", *options) == 0
        assert run_cli("evaluate", str(out), "--num-samples", "20") == 0
        runs[family] = out
    capsys.readouterr()
    assert run_cli("compare", *map(str, runs.values())) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in runs)
    table = compare({name: np.load(out / LOG_LIKELIHOOD_FILE) for name, out in runs.items()})
    assert table.index[0] == "two"  # the true mixture beats one epoch of either network
    for name, out in runs.items():
        assert table.loc[name, "elpd_loo"] == pytest.approx(np.load(out / LOG_LIKELIHOOD_FILE).sum())
