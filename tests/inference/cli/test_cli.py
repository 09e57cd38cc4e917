"""The `vi-models` command end to end on tiny runs, and its handling of user errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from inference.cli.commands import main


def run_cli(*args: str) -> int:
    return main(list(args))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    code = main(["fit", "vae", "--data", "digits", "--out", str(out), "--epochs", "2", "--z-dim", "4",
                 "--hidden-dims", "32", "--no-progress", "--seed", "0"])
    assert code == 0
    return out


def test_fit_writes_a_complete_run_directory(vae_run):
    names = set(os.listdir(vae_run))
    assert {"config.json", "checkpoint.pt", "history.json", "loss.png", "samples.png", "reconstructions.png"} <= names
    config = json.loads((vae_run / "config.json").read_text())
    assert config["model"] == "vae" and config["model_config"]["likelihood"] == "categorical"
    history = json.loads((vae_run / "history.json").read_text())
    assert len(history["loss"]) == 2


def test_evaluate_writes_metrics_with_consistent_bits_per_dim(vae_run, capsys):
    assert run_cli("evaluate", str(vae_run), "--num-samples", "8") == 0
    metrics = json.loads((vae_run / "metrics.json").read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed["test_log_likelihood"] == metrics["test_log_likelihood"]
    assert metrics["estimator"] == "iwae-8" and metrics["num_test"] == 360
    # categorical decoder: an exact discrete likelihood, bits/dim = -LL / (64 log 2)
    assert metrics["test_bits_per_dim"] == pytest.approx(-metrics["test_log_likelihood"] / (64 * math.log(2)))
    assert metrics["test_elbo"] <= metrics["test_log_likelihood"] + 1e-6  # the IWAE bound is tighter


def test_evaluate_on_a_user_file(vae_run, tmp_path, capsys):
    from inference import load_dataset

    x = load_dataset("digits").test[:20].numpy()
    np.save(tmp_path / "mine.npy", x)
    assert run_cli("evaluate", str(vae_run), "--data", str(tmp_path / "mine.npy"), "--num-samples", "4") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_test"] == 20


def test_sample_png_and_npy(vae_run, tmp_path):
    assert run_cli("sample", str(vae_run), "-n", "9", "--out", str(tmp_path / "s.png")) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli("sample", str(vae_run), "-n", "5", "--out", str(tmp_path / "s.npy")) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (5, 64) and ((samples >= 0) & (samples < 1)).all()


def test_fit_resume_continues_the_run(tmp_path):
    out = tmp_path / "r"
    common = ["--data", "moons", "--out", str(out), "--z-dim", "2", "--hidden-dims", "16", "--no-progress"]
    assert run_cli("fit", "vae", *common, "--epochs", "1") == 0
    assert run_cli("fit", "vae", *common, "--epochs", "2", "--resume") == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["fit", "vae", "--data", "no-such-dataset", "--out", "{tmp}/x"], "no-such-dataset"),
        (["evaluate", "{tmp}"], "not a vi-models run directory"),
        (["evaluate", "{tmp}/missing"], "does not exist"),
        (["sample", "{tmp}/missing"], "does not exist"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(args, fragment, tmp_path, capsys):
    code = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vi-models: error:") and fragment in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_existing_non_run_directory_is_not_touched(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    code = run_cli("fit", "vae", "--data", "moons", "--out", str(tmp_path), "--epochs", "1", "--no-progress")
    assert code == 2 and "not a vi-models run directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_existing_run_needs_resume_or_overwrite(vae_run, capsys):
    before = (vae_run / "checkpoint.pt").read_bytes()
    code = run_cli("fit", "vae", "--data", "digits", "--out", str(vae_run), "--epochs", "1", "--no-progress")
    assert code == 2 and "--resume" in capsys.readouterr().err
    assert (vae_run / "checkpoint.pt").read_bytes() == before


def test_checkpoint_from_another_model_is_refused(vae_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert run_cli("fit", "vae", "--data", "digits", "--out", str(other), "--epochs", "1", "--z-dim", "3",
                   "--hidden-dims", "32", "--no-progress") == 0
    config = json.loads((other / "config.json").read_text())
    config["model_config"]["z_dim"] = 4  # config now disagrees with the checkpoint's shapes
    (other / "config.json").write_text(json.dumps(config))
    assert run_cli("evaluate", str(other), "--num-samples", "2") == 2
    assert "another model" in capsys.readouterr().err


def test_bad_numbers_are_rejected_by_argparse(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("fit", "vae", "--out", str(tmp_path / "x"), "--batch-size", "0")
    assert info.value.code == 2 and "expected a whole number >= 1" in capsys.readouterr().err


def test_console_script_help():
    exe = os.path.join(os.path.dirname(sys.executable), "vi-models")
    if not os.path.exists(exe):
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([exe, "fit", "vae", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "usage: vi-models fit vae" in out.stdout and "--z-dim" in out.stdout


@pytest.mark.parametrize("args", [[], ["fit", "gmm"], ["evaluate"], ["sample"]])
def test_help_of_every_command(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0 and "usage: vi-models" in capsys.readouterr().out


TINY_OPTIONS = {
    "vae": ["--z-dim", "2", "--hidden-dims", "16"],
    "kde": ["--bandwidth", "scott"],
    "gan": ["--latent-dim", "2", "--hidden-dims", "16"],
    "gmm": ["-k", "3"],
}


@pytest.mark.parametrize("family", sorted(__import__("inference.cli.families", fromlist=["FAMILIES"]).FAMILIES))
def test_every_family_fits_evaluates_and_samples_a_user_file(family, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "mine.npy", rng.normal(size=(120, 2)))
    out = tmp_path / family
    assert run_cli("fit", family, "--data", str(tmp_path / "mine.npy"), "--out", str(out), "--epochs", "1",
                   "--no-progress", *TINY_OPTIONS.get(family, [])) == 0
    assert run_cli("evaluate", str(out), "--num-samples", "4") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test_log_likelihood"]) and metrics["num_test"] == 24
    assert run_cli("sample", str(out), "-n", "7", "--out", str(tmp_path / "s.npy")) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)
    # diagnose works for every family: InferenceData with a per-observation log-likelihood
    # (none for the GAN, which has no density)
    assert run_cli("diagnose", str(out), "--num-samples", "10", "--max-test", "5") == 0
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert diagnostics["num_test"] == 5
    if family == "gan":
        assert diagnostics["khat"] is None and "no density" in capsys.readouterr().out
    else:
        import arviz as az

        idata = az.from_netcdf(out / "inference_data.nc")
        (variable,) = idata.log_likelihood.data_vars
        assert idata.log_likelihood[variable].shape[-1] == 5
        assert np.isfinite(idata.log_likelihood[variable].values).all()


def test_diagnose_writes_inference_data_and_khat(vae_run, capsys):
    import arviz as az

    assert run_cli("diagnose", str(vae_run), "--num-samples", "20", "--max-test", "10") == 0
    out = capsys.readouterr().out
    assert "k-hat" in out
    diagnostics = json.loads((vae_run / "diagnostics.json").read_text())
    assert diagnostics["khat_scope"] == "per-observation" and diagnostics["num_test"] == 10
    idata = az.from_netcdf(vae_run / "inference_data.nc")
    assert idata.log_likelihood["x"].shape[-1] == 10
    assert (vae_run / "khat.png").exists()
