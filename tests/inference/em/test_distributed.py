"""fit_em under torchrun: 2 ranks (gloo, CPU) reach the one-process fit of the four models, from a
tensor, a memory-mapped .npy and a list of chunks; a bad chunk on one rank and more ranks than
rows are refused on every rank (no rank left waiting); a component that collapses is re-seeded from
the same row on both ranks. One launch holds every case."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from inference import DegenerateFitWarning, fit_em
from vi_models import GaussianMixture

SCRIPT = '''
import sys

import numpy as np
import pyro
import torch

from inference import fit_em
from inference.engine import distributed

root = sys.argv[1]
pyro.enable_validation(True)
cases = torch.load(f"{root}/cases.pt", weights_only=False)
results = {}
for label, (model, name, source, options) in cases.items():
    x = np.load(f"{root}/{name}.npy", mmap_mode="r" if source == "memmap" else None)
    data = np.array_split(x, 3) if source == "chunks" else x
    try:
        r = fit_em(model, data, **options)
        results[label] = {"state": model.state_dict(), "lower_bound": r.lower_bound_, "n_iter": r.n_iter_,
                          "world_size": r.config["world_size"], "reseeds": r.reseeds_}
    except Exception as exc:
        results[label] = {"error": f"{type(exc).__name__}: {exc}"}
torch.save(results, f"{root}/rank{distributed.rank()}.pt")
torch.distributed.destroy_process_group()  # leave gloo cleanly (its threads abort an exiting process)
'''


def test_two_ranks_reach_the_one_process_fit(stream_cases, torchrun, tmp_path):
    cases, want = {}, {}
    for name in stream_cases.names:
        x = stream_cases.data(name)
        np.save(tmp_path / f"{name}.npy", x)
        for source in ("array", "memmap", "chunks") if name == "full" else ("array",):
            model = stream_cases.model(name)
            cases[f"{name}/{source}"] = (copy.deepcopy(model), name, source, stream_cases.fit)
            want[f"{name}/{source}"] = fit_em(model, x, **stream_cases.fit)
    # a component collapses at iteration 1 and is re-seeded at the worst row of all ranks, in rank 1's half
    x, init = stream_cases.duplicates()
    x = np.ascontiguousarray(x[::-1])
    np.save(tmp_path / "dup.npy", x)
    options = {"init": init, "reg_covar": 0.0, "max_iter": 30, "tol": 1e-8, "progress": False}
    model = GaussianMixture(4, 2, dtype=torch.float64)
    cases["dup/memmap"] = (copy.deepcopy(model), "dup", "memmap", options)
    with pytest.warns(DegenerateFitWarning, match="re-seeded"):
        want["dup/memmap"] = fit_em(model, x, **options)
    assert want["dup/memmap"].reseeds_[0][2] >= 153
    # a NaN in rank 1's half of the rows, outside rank 0's initialisation sample; one row for two processes
    bad = stream_cases.data("diag")
    sample = set(np.random.default_rng(0).choice(300, 20, replace=False).tolist())
    row = next(i for i in range(250, 300) if i not in sample)
    bad[row, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    cases["nan/memmap"] = (stream_cases.model("diag"), "nan", "memmap",
                           {**stream_cases.fit, "chunk_size": 100, "init_sample_size": 20})
    np.save(tmp_path / "one.npy", bad[:1])
    cases["one/array"] = (GaussianMixture(1, 3, dtype=torch.float64), "one", "array", stream_cases.fit)
    torch.save(cases, tmp_path / "cases.pt")

    done = torchrun(SCRIPT, str(tmp_path), nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for label, result in want.items():
        for r, got in enumerate(ranks):
            assert "error" not in got[label], (label, r, got[label])
            assert got[label]["world_size"] == 2
            fitted = copy.deepcopy(result.model)
            fitted.load_state_dict(got[label]["state"])
            stream_cases.assert_same_fit((fitted, got[label]["lower_bound"], got[label]["n_iter"]), result)
            assert got[label]["reseeds"] == result.reseeds_, (label, r)
    for r, got in enumerate(ranks):  # every rank refuses, with the failing rank's message
        assert got["nan/memmap"]["error"].startswith("DataError"), got["nan/memmap"]
        # rank 1 reads rows 150..299 in chunks of 100: 150-249, 250-299
        assert f"finite values in data rows 250 to 299, got 1 NaN/inf entries in 1 row(s) (rows {row - 250})" \
            in got["nan/memmap"]["error"]
        assert ("rank 1 failed" in got["nan/memmap"]["error"]) == (r == 0)
        assert "at least one row per process, got 1 rows for 2 processes" in got["one/array"]["error"]
