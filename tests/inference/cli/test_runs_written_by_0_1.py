"""Run directories written by 0.1 (the flat layout) load in the current tree and give the same numbers.

The fixtures (``tests/fixtures/runs_v0_1``, see its README) hold one tiny run per family with
what 0.1 printed for ``evaluate`` on fixed points and wrote for ``sample --seed 0``: the
reference here is the earlier code's own output on its own checkpoint, which is the definition
of a compatible load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "runs_v0_1"
RUNS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def test_every_family_has_a_fixture():
    from inference.cli.families import FAMILIES

    assert {name.split("-")[0] for name in RUNS} == set(FAMILIES)


@pytest.mark.parametrize("name", RUNS)
def test_a_0_1_run_evaluates_and_samples_as_it_did(name, tmp_path, capsys):
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)  # evaluate and sample may write into the run directory
    expected = FIXTURES / "_expected"
    points = expected / ("bin.npy" if name == "made" else "pts.npy")
    assert main(["evaluate", str(run), "--data", str(points), "--num-samples", "50"]) == 0
    printed = json.loads(capsys.readouterr().out)
    then = json.loads((expected / f"{name}.metrics.json").read_text())
    assert printed["estimator"] == then["estimator"] and printed["num_test"] == then["num_test"]
    assert printed["test_log_likelihood"] == pytest.approx(then["test_log_likelihood"], rel=1e-6, abs=1e-6)
    out = tmp_path / "samples.npy"
    assert main(["sample", str(run), "-n", "8", "--seed", "0", "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), np.load(expected / f"{name}.samples.npy"), rtol=1e-6, atol=1e-6)
