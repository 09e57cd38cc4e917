"""`vi-models fit/evaluate/sample ddpm` end to end on tiny runs, and its refusals of bad options."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from inference.cli.commands import _open_run, _split_validation, main
from inference.em import fit_mixture_denoiser

TINY = ["--T", "60", "--hidden-dim", "16", "--num-blocks", "1", "--steps", "20", "--ema", "0.9", "--no-progress"]


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the adaptive ODE solver's small batches are slower on more threads
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ddpm"
    assert run_cli("fit", "ddpm", "--data", "moons", "--out", out, "--objective", "hybrid", *TINY) == 0
    return out


def test_fit_writes_the_run_directory_with_diffusion_figures(moons_run):
    assert {"config.json", "checkpoint.pt", "history.json", "loss.png", "samples.png", "vlb_terms.png",
            "trajectories.png"} <= set(os.listdir(moons_run))
    full = json.loads((moons_run / "config.json").read_text())
    config = full["model_config"]
    assert config["objective"] == "hybrid" and config["T"] == 60 and config["ema"] == 0.9
    assert full["fit"]["early_stopping"] == 0  # ddpm's default: a noisy validation L_simple must not stop it
    # --steps 20 with 9000 training rows in batches of 128 is one epoch
    assert len(json.loads((moons_run / "history.json").read_text())["loss"]) == 1
    # the standardisation stored is the training split's mean and standard deviation
    from inference import load_dataset

    train = load_dataset("moons").train.double()
    assert np.allclose(config["data_loc"], train.mean(0).numpy()) and np.allclose(config["data_scale"], train.std(0).numpy())


@pytest.mark.parametrize("estimator", ["ode", "vlb"])
def test_evaluate_with_each_estimator(moons_run, estimator, capsys):
    args = ["evaluate", moons_run, "--max-test", "40"] + (["--estimator", estimator] if estimator == "vlb" else [])
    assert run_cli(*args) == 0
    metrics = json.loads((moons_run / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out)["test_log_likelihood"] == metrics["test_log_likelihood"]
    assert metrics["estimator"] == estimator and metrics["num_test"] == 40 and metrics["model"] == "ddpm"
    assert metrics["test_bits_per_dim"] == pytest.approx(-metrics["test_log_likelihood"] / (2 * math.log(2)))
    assert metrics["test_kl_to_truth"] == pytest.approx(-metrics["test_log_likelihood"] - metrics["test_true_entropy"],
                                                        abs=1e-5)
    # the same figure computed directly on the saved model
    _, _, bundle, model, _, _ = _open_run(str(moons_run), None)
    x = bundle.test[:40]
    gen = torch.Generator().manual_seed(0)
    want = model.log_prob(x, generator=gen) if estimator == "ode" else -model.vlb(x, generator=gen)
    assert metrics["test_log_likelihood"] == pytest.approx(float(want.mean()), rel=1e-5)


@pytest.mark.parametrize("options,kwargs", [
    ([], {"sampler": "ancestral"}),
    (["--sampler", "ddim", "--steps", "10", "--eta", "0.5"], {"sampler": "ddim", "steps": 10, "eta": 0.5}),
    (["--steps", "7"], {"sampler": "ddim", "steps": 7, "eta": 0.0}),
    (["--steps", "7", "--clip-x0", "0.5"], {"sampler": "ddim", "steps": 7, "eta": 0.0, "clip_x0": 0.5}),
])
def test_sample_passes_the_sampler_options(moons_run, tmp_path, options, kwargs):
    out = tmp_path / "s.npy"
    assert run_cli("sample", moons_run, "-n", "6", "--seed", "3", "--out", out, *options) == 0
    got = np.load(out)
    _, _, _, model, _, _ = _open_run(str(moons_run), None)
    torch.manual_seed(3)
    with torch.no_grad():
        want = model.sample(6, **kwargs).numpy()
    assert got.shape == (6, 2) and np.allclose(got, want)


def test_fit_evaluate_and_sample_a_user_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "my.npy", rng.normal([3.0, -1.0, 0.5], [2.0, 0.5, 1.0], size=(150, 3)))
    out = tmp_path / "run"
    assert run_cli("fit", "ddpm", "--data", tmp_path / "my.npy", "--out", out, *TINY, "--objective", "vlb") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == str((tmp_path / "my.npy").resolve())
    assert run_cli("evaluate", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test_log_likelihood"]) and metrics["num_test"] == 30
    assert run_cli("sample", out, "-n", "5", "--sampler", "ddim", "--steps", "5", "--out", tmp_path / "s.npy") == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 3)


@pytest.fixture(scope="module")
def kde_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "kde"
    path = out.parent / "pts.npy"
    np.save(path, np.random.default_rng(1).normal(size=(50, 2)))
    assert run_cli("fit", "kde", "--data", path, "--out", out, "--bandwidth", "scott", "--no-progress") == 0
    return out


@pytest.mark.parametrize("run,args,fragment", [
    ("kde", ["sample", "{run}", "--sampler", "ddim"], "--sampler is not an option of the kde family; it applies to ddpm"),
    ("kde", ["sample", "{run}", "--eta", "0"], "--eta is not an option of the kde family"),
    ("kde", ["evaluate", "{run}", "--estimator", "ode"], "expected --estimator to be one of exact"),
    ("ddpm", ["sample", "{run}", "--sampler", "euler"], "expected --sampler to be one of ancestral, ddim"),
    ("ddpm", ["sample", "{run}", "--sampler", "ancestral", "--steps", "10"], "use sampler='ddim'"),
    ("ddpm", ["sample", "{run}", "--sampler", "ancestral", "--eta", "1"], "--eta applies to --sampler ddim"),
    ("ddpm", ["sample", "{run}", "--steps", "100"], "expected steps <= T = 60"),
    ("ddpm", ["sample", "{run}", "--eta", "-1"], "expected --eta >= 0"),
    ("ddpm", ["sample", "{run}", "--mean"], "--mean has no meaning for ddpm"),
    ("ddpm", ["sample", "{run}", "--clip-x0", "1"], "--clip-x0 applies to --sampler ddim only"),
    ("kde", ["sample", "{run}", "--clip-x0", "1"], "--clip-x0 is not an option of the kde family"),
    ("ddpm", ["evaluate", "{run}", "--estimator", "iwae"], "expected --estimator to be one of ode, vlb"),
    (None, ["fit", "ddpm", "--data", "digits-binary", "--out", "{tmp}/x"], "got the binary data"),
    (None, ["fit", "ddpm", "--data", "moons", "--out", "{tmp}/x", "--ema", "1.5"], "expected --ema in (0, 1)"),
    (None, ["fit", "ddpm", "--data", "moons", "--out", "{tmp}/x", "--T", "10"], "expected T >= 51 for schedule='linear'"),
])
def test_bad_options_give_one_clear_line_and_exit_2(run, args, fragment, moons_run, kde_run, tmp_path, capsys):
    target = {"kde": kde_run, "ddpm": moons_run, None: None}[run]
    before = {p: p.read_bytes() for p in target.iterdir()} if target is not None else {}
    code = run_cli(*[a.replace("{run}", str(target)).replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("vi-models: error:") and fragment in err and err.count("\n") == 1
    assert "Traceback" not in err
    if target is not None:  # nothing in the run directory changed
        assert {p: p.read_bytes() for p in target.iterdir()} == before
    else:
        assert not (tmp_path / "x").exists()


def test_digits_run_uses_the_unet_and_reports_dequantised_bits(tmp_path):
    out = tmp_path / "digits"
    assert run_cli("fit", "ddpm", "--data", "digits", "--out", out, "--T", "60", "--channels", "8", "16",
                   "--steps", "2", "--batch-size", "64", "--validation-fraction", "0", "--no-progress") == 0
    model = _open_run(str(out), None)[3]
    assert type(model.network.net).__name__ == "UNet"
    assert float(model.schedule.data_loc) == 0.5 and float(model.schedule.data_scale) == 0.5
    assert run_cli("evaluate", out, "--max-test", "4", "--estimator", "vlb") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # a density of x = (k + u) / 17 in [0, 1]^64: bits/dim of the levels = -(LL - 64 log 17) / (64 log 2)
    want = -(metrics["test_log_likelihood"] - 64 * math.log(17)) / (64 * math.log(2))
    assert metrics["test_bits_per_dim"] == pytest.approx(want)



def test_a_mixture_base_is_fitted_once_and_reloaded_from_the_checkpoint(tmp_path, capsys):
    """--base gmm: K chosen on held-out data and stored; a reloaded run has the fitted base's
    buffers (from the checkpoint: an empty base of that size is built first), and the ODE
    likelihood of a model whose residual has barely moved is the mixture's."""

    out = tmp_path / "base"
    tiny = [a if a != "20" else "1" for a in TINY]  # one step at a tiny learning rate: the residual stays ~0
    assert run_cli("fit", "ddpm", "--data", "moons", "--out", out, "--base", "gmm", "--base-components", "2", "6",
                   "--schedule", "cosine", "--lr", "1e-9", *tiny) == 0
    config = json.loads((out / "config.json").read_text())["model_config"]
    assert config["base"] == "gmm" and config["base_fitted_components"] in (2, 6)
    _, _, bundle, model, _, _ = _open_run(str(out), "cpu")
    # fitted on the training rows fit sees (the validation rows held out), seed 0
    split, _ = _split_validation(bundle, 0.1, 0)
    again = fit_mixture_denoiser(split.train, model.schedule, [2, 6])
    assert model.base.n_components == again.n_components == config["base_fitted_components"]
    torch.testing.assert_close(model.base.means, again.means)
    torch.testing.assert_close(model.base.eigenvalues, again.eigenvalues)
    x = bundle.test[:30]
    log_q0 = again.log_marginal(model.schedule.normalise(x), torch.zeros(30)) - model.schedule.log_data_scale(torch.Size([2]))
    assert run_cli("evaluate", out, "--max-test", "30") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert abs(metrics["test_log_likelihood"] - float(log_q0.mean())) < 1e-3
    capsys.readouterr()
    assert run_cli("fit", "ddpm", "--data", "moons", "--out", tmp_path / "bad", "--base", "gmm",
                   "--base-components", "0", *TINY) == 2
    assert "--base-components" in capsys.readouterr().err and not (tmp_path / "bad").exists()
