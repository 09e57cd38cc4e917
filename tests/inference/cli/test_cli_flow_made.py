"""`vi-models fit flow` and `vi-models fit made` end to end on tiny runs, and their user errors.

Truth checks: the run's checkpoint, loaded into a fresh model, is a normalised density (a grid
integral of 1 in 2-D; probabilities summing to 1 over every configuration for MADE), the
metrics follow the bits/dim conventions (dequantisation bound for flows, exact for the
categorical MADE) and equal the reloaded model's own log-likelihood.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from inference import load_dataset
from inference.cli.commands import main
from inference.cli.families import get_family
from inference.engine.checkpoint import load_modules


def run_cli(*args: str) -> int:
    return main(list(args))


TINY_FLOW = ["--num-layers", "2", "--hidden-dims", "8", "--epochs", "1", "--no-progress", "--batch-size", "256"]
TINY_MADE = ["--hidden-dims", "64", "--epochs", "1", "--no-progress", "--batch-size", "256"]


def reload(run_dir, data: str):
    """The fitted model of a run, rebuilt from config.json and its checkpoint (float64 for integration)."""
    config = json.loads((run_dir / "config.json").read_text())
    family = get_family(config["model"])
    bundle = load_dataset(data) if data != "moons" else load_dataset(data, n_test=10)
    model, guide = family.build(dict(config["model_config"]), bundle, torch.device("cpu"))
    load_modules(run_dir / "checkpoint.pt", model, guide)
    return model.eval(), config


def grid_mass(model, n: int = 400, low: float = -8.0, high: float = 8.0) -> torch.Tensor:
    """Midpoint-rule integral of a 2-D density over [low, high]^2 (in float64)."""
    model = model.double()
    step = (high - low) / n
    centres = torch.linspace(low + step / 2, high - step / 2, n, dtype=torch.float64)
    return model.log_prob(torch.cartesian_prod(centres, centres)).exp().sum() * step**2


@pytest.fixture(scope="module")
def npy_2d(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mine.npy"
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 2))
    np.save(path, np.stack([z[:, 0], 0.5 * z[:, 0] ** 2 + 0.3 * z[:, 1]], 1))
    return path


@pytest.mark.theory("T22")
@pytest.mark.parametrize("kind", ["realnvp", "spline", "maf"])
def test_flow_on_a_user_file_is_a_normalised_density(kind, npy_2d, tmp_path, capsys):
    out = tmp_path / kind
    assert run_cli("fit", "flow", "--flow", kind, "--data", str(npy_2d), "--out", str(out), *TINY_FLOW) == 0
    assert run_cli("evaluate", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["estimator"] == "exact" and metrics["num_test"] == 60 and metrics["model"] == "flow"
    # continuous data: bits/dim = -LL / (D log 2)
    assert metrics["test_bits_per_dim"] == pytest.approx(-metrics["test_log_likelihood"] / (2 * math.log(2)))
    model, config = reload(out, str(npy_2d))
    assert config["model_config"]["flow"] == kind and config["model_config"]["num_layers"] == 2
    bundle = load_dataset(str(npy_2d))
    with torch.no_grad():
        assert float(model.log_prob(bundle.test).mean()) == pytest.approx(metrics["test_log_likelihood"], rel=1e-5)
        mass = grid_mass(model)
    assert abs(float(mass) - 1.0) < 5e-3
    assert run_cli("sample", str(out), "-n", "7", "--out", str(tmp_path / "s.npy")) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (7, 2) and np.isfinite(samples).all()


def test_flow_on_moons_reports_kl_to_the_truth(tmp_path):
    out = tmp_path / "moons"
    assert run_cli("fit", "flow", "--data", "moons", "--out", str(out), *TINY_FLOW) == 0
    assert run_cli("evaluate", str(out), "--max-test", "2000") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # KL(p || q) = E_p[log p] - E_p[log q] on the same test points
    assert metrics["test_kl_to_truth"] == pytest.approx(-metrics["test_true_entropy"] - metrics["test_log_likelihood"], abs=1e-4)
    assert metrics["test_kl_to_truth"] > 0.0  # one epoch of a tiny flow is far from the truth
    assert (out / "samples.png").exists() and (out / "loss.png").exists()


def test_flow_on_digits_reports_the_dequantisation_bound(tmp_path):
    out = tmp_path / "digits"
    assert run_cli("fit", "flow", "--flow", "realnvp", "--data", "digits", "--out", str(out), *TINY_FLOW) == 0
    assert run_cli("evaluate", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ll = metrics["test_log_likelihood"]
    assert metrics["num_test"] == 360
    assert metrics["test_bits_per_dim"] == pytest.approx(-(ll - 64 * math.log(17)) / (64 * math.log(2)))
    model, config = reload(out, "digits")
    assert model.domain == "unit" and config["model_config"]["hidden_dims"] == [8]
    assert run_cli("sample", str(out), "-n", "5", "--out", str(tmp_path / "s.npy")) == 0
    samples = np.load(tmp_path / "s.npy")
    a = model.alpha
    assert samples.shape == (5, 64) and (samples > -a / (1 - 2 * a)).all() and (samples < (1 - a) / (1 - 2 * a)).all()


@pytest.mark.theory("T25")
def test_made_on_digits_is_an_exact_discrete_model(tmp_path):
    out = tmp_path / "made"
    assert run_cli("fit", "made", "--data", "digits", "--out", str(out), *TINY_MADE) == 0
    assert run_cli("evaluate", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ll = metrics["test_log_likelihood"]
    assert metrics["estimator"] == "exact"
    assert metrics["test_bits_per_dim"] == pytest.approx(-ll / (64 * math.log(2)))  # exact, no D log L term
    model, config = reload(out, "digits")
    assert config["model_config"]["conditional"] == "categorical" and model.is_discrete
    bundle = load_dataset("digits")
    with torch.no_grad():
        # log P(k) of the levels, computed independently from the conditionals of one masked pass
        logits = model.conditionals(bundle.test_levels)  # (N, 64, 17)
        by_hand = torch.log_softmax(logits, -1).gather(-1, bundle.test_levels.unsqueeze(-1)).squeeze(-1).sum(-1)
    assert float(by_hand.mean()) == pytest.approx(ll, rel=1e-5)
    assert run_cli("sample", str(out), "-n", "4", "--out", str(tmp_path / "s.npy")) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (4, 64)
    np.testing.assert_allclose((samples * 17 - 0.5), np.round(samples * 17 - 0.5), atol=1e-5)  # bin centres


@pytest.mark.theory("T25")
def test_made_on_a_binary_file_picks_bernoulli_and_sums_to_one(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.random((200, 1)) < 0.3
    bits = np.concatenate([first, first ^ (rng.random((200, 2)) < 0.2)], 1).astype(np.float64)
    np.save(tmp_path / "bits.npy", bits)
    out = tmp_path / "made"
    assert run_cli("fit", "made", "--data", str(tmp_path / "bits.npy"), "--out", str(out), "--conditional", "bernoulli",
                   "--hidden-dims", "8", "--epochs", "2", "--no-progress") == 0
    assert run_cli("evaluate", str(out)) == 0
    model, _ = reload(out, str(tmp_path / "bits.npy"))
    configs = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)), dtype=model.nets[0].layers[0].weight.dtype)
    with torch.no_grad():
        assert float(torch.logsumexp(model.log_prob(configs), 0)) == pytest.approx(0.0, abs=1e-5)


def test_made_on_a_user_file_uses_gaussian_mixture_conditionals(npy_2d, tmp_path):
    out = tmp_path / "made"
    assert run_cli("fit", "made", "--data", str(npy_2d), "--out", str(out), *TINY_MADE, "--num-components", "3",
                   "--num-orders", "2") == 0
    assert run_cli("evaluate", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test_log_likelihood"]) and metrics["num_test"] == 60
    model, config = reload(out, str(npy_2d))
    assert config["model_config"]["conditional"] == "gaussian_mixture" and model.num_orders == 2
    assert run_cli("sample", str(out), "-n", "6", "--out", str(tmp_path / "s.npy")) == 0
    assert np.load(tmp_path / "s.npy").shape == (6, 2)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["fit", "flow", "--data", "{npy}", "--num-layers", "0"], "--num-layers"),
        (["fit", "flow", "--data", "{npy}", "--flow", "spline", "--bound", "-1"], "--bound"),
        (["fit", "flow", "--data", "{col}"], "at least 2 dimensions"),
        (["fit", "flow", "--data", "{npy}", "--noise-std", "-1"], "--noise-std"),
        (["fit", "flow", "--data", "digits", "--noise-std", "0.1"], "dequantised"),
        (["fit", "flow", "--data", "{npy}", "--base", "mixture", "--num-components", "0"], "--num-components"),
        (["fit", "made", "--data", "{npy}", "--conditional", "categorical"], "dequantised image data"),
        (["fit", "made", "--data", "digits", "--hidden-dims", "16"], "hidden width"),
        (["fit", "made", "--data", "{npy}", "--num-components", "0"], "--num-components"),
    ],
)
def test_bad_options_print_one_clear_line_and_exit_2(args, fragment, npy_2d, tmp_path, capsys):
    np.save(tmp_path / "col.npy", np.random.default_rng(0).normal(size=(50, 1)))
    filled = [a.replace("{npy}", str(npy_2d)).replace("{col}", str(tmp_path / "col.npy")) for a in args]
    code = run_cli(*filled, "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress")
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("vi-models: error:") and fragment in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written for a run that could not start


@pytest.mark.theory("T22")
@pytest.mark.parametrize(
    "options,recorded",
    [
        (["--noise-std", "0.05"], {"noise_std": 0.05, "base": "normal"}),
        (["--base", "mixture", "--num-components", "4"], {"base": "mixture", "num_components": 4}),
    ],
    ids=["noise", "mixture-base"],
)
def test_flow_options_are_recorded_and_the_density_stays_normalised(options, recorded, npy_2d, tmp_path):
    out = tmp_path / "run"
    assert run_cli("fit", "flow", "--data", str(npy_2d), "--out", str(out), *options, *TINY_FLOW) == 0
    assert run_cli("evaluate", str(out)) == 0
    model, config = reload(out, str(npy_2d))
    assert {k: config["model_config"][k] for k in recorded} == recorded
    metrics = json.loads((out / "metrics.json").read_text())
    with torch.no_grad():
        bundle = load_dataset(str(npy_2d))
        assert float(model.log_prob(bundle.test).mean()) == pytest.approx(metrics["test_log_likelihood"], rel=1e-5)
        mass = grid_mass(model)
    assert abs(float(mass) - 1.0) < 5e-3


def test_unknown_flow_kind_is_rejected_by_argparse(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "flow", "--flow", "glow", "--out", str(tmp_path / "x")])
    assert info.value.code == 2 and "invalid choice: 'glow'" in capsys.readouterr().err
