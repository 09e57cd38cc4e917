"""`vi-models fit gmm --data file.npy --chunk-size N`: EM streams the memory-mapped training rows of
the file (the loader's split), and `evaluate` scores its test rows; both equal an in-memory fit_em
of the same rows."""

from __future__ import annotations

import json

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from inference import fit_em, load_dataset
from inference.cli import main
from inference.engine.checkpoint import load_checkpoint
from vi_models import GaussianMixture


def test_fit_with_chunk_size_streams_the_training_rows_and_evaluates(stream_cases, tmp_path, capsys):
    x = np.concatenate([stream_cases.data("full", n=500), stream_cases.data("diag", n=300)])
    path = tmp_path / "big.npy"
    np.save(path, x)
    out = tmp_path / "run"
    args = ["fit", "gmm", "--data", str(path), "-k", "3", "--chunk-size", "150", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert main(["evaluate", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["chunk_size"] == 150

    train_rows, _ = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0)
    want = GaussianMixture(3, 3, dtype=torch.float64)
    fit_em(want, x[np.sort(train_rows)], seed=0, max_iter=200, tol=1e-3, reg_covar=1e-6, progress=False)
    fitted = GaussianMixture(3, 3, dtype=torch.float64)
    fitted.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    for key, value in stream_cases.params(want).items():
        torch.testing.assert_close(stream_cases.params(fitted)[key], value, atol=1e-10, rtol=0)
    test = load_dataset(path).test.double()  # the rows evaluate scores, as the loader gives them
    assert metrics["num_test"] == len(test) == len(x) - len(train_rows)
    assert abs(metrics["test_log_likelihood"] - float(want.log_prob(test).detach().mean())) < 1e-10

    capsys.readouterr()
    assert main([*args[:-3], "--chunk-size", "0", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "expected --chunk-size >= 1" in capsys.readouterr().err and not (tmp_path / "bad").exists()
