"""`fit` under torchrun (2 processes, gloo): data parallelism against the one-process fit.

Three launches (each ~5 s of start-up) run the groups of checks of ``distributed_cases.py``;
the one-process references are computed here with the same builders. The sharding of the
batches is also checked without processes, rank by rank.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from inference import ConfigError, fit
from inference.engine.batches import TensorBatches, epoch_shards, make_batches
from inference.engine.checkpoint import load_checkpoint

CASES = "tests.inference.engine.distributed_cases"  # what torchrun runs (PYTHONPATH = the repository root)


def _import_cases():
    """The builders the torchrun scripts use (pytest's importlib mode puts no test folder on sys.path)."""
    if CASES not in sys.modules:
        spec = importlib.util.spec_from_file_location(CASES, Path(__file__).with_name("distributed_cases.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[CASES] = module
        spec.loader.exec_module(module)
    return sys.modules[CASES]


cases = _import_cases()


def _launch(torchrun, scenario, out):
    proc = torchrun("", scenario, str(out), module=CASES)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


# --------------------------------------------------------------------------- without processes


@pytest.mark.parametrize(("n", "batch_size", "world"), [(45, 8, 2), (33, 8, 2), (10, 4, 3), (7, 128, 2), (5, 1, 5)])
def test_ranks_see_disjoint_shards_of_the_one_process_batches(n, batch_size, world):
    """Rank r's shards, put together, are the one-process batches of W * B; sizes differ by at most one."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    single = [s.tolist() for s in epoch_shards(order, min(world * batch_size, n))]
    per_rank = [list(epoch_shards(order, batch_size, rank, world)) for rank in range(world)]
    assert len({len(p) for p in per_rank}) == 1  # the same number of steps on every rank
    for step, batch in enumerate(single):
        parts = [per_rank[r][step] for r in range(world)]
        assert torch.cat(parts).tolist() == batch
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert sorted(torch.cat([s for p in per_rank for s in p]).tolist()) == list(range(n))


def test_a_dataset_is_sharded_like_in_memory_tensors():
    x = torch.arange(21.0).unsqueeze(-1)
    for rank in range(2):
        kwargs = {"name": "data", "batch_size": 4, "device": torch.device("cpu"), "dtype": torch.float32,
                  "shuffle": True, "rank": rank, "world": 2}
        tensors, n = make_batches(x, generator=torch.Generator().manual_seed(3), **kwargs)
        loader, m = make_batches(DataLoader(TensorDataset(x), batch_size=4, shuffle=True),
                                 generator=torch.Generator().manual_seed(3), **kwargs)
        assert isinstance(tensors, TensorBatches) and n == m == 21 and len(tensors) == len(loader) == 3
        assert [b[0].tolist() for b in tensors] == [b[0].tolist() for b in loader]


def test_a_loader_with_its_own_sampler_is_refused_on_several_ranks():
    data = TensorDataset(torch.zeros(8, 1))
    loader = DataLoader(data, batch_size=2, sampler=WeightedRandomSampler(torch.ones(8), 8))
    with pytest.raises(ConfigError, match="pass its Dataset"):
        make_batches(loader, name="data", batch_size=2, device=torch.device("cpu"), dtype=torch.float32,
                     generator=torch.Generator(), shuffle=True, rank=0, world=2)


# --------------------------------------------------------------------------- under torchrun


def test_two_ranks_equal_one_and_resume_exactly(torchrun, tmp_path, float64):
    """2 ranks x batch 8 == 1 rank x batch 16 (float64); resume == uninterrupted; rank 0 alone writes."""
    _launch(torchrun, "equivalence_and_resume", tmp_path)
    got = torch.load(tmp_path / "equivalence.pt")
    results = json.loads((tmp_path / "results.json").read_text())
    # A global latent under a plate scaled to full_size, MAP guide; the last global batch split 7 / 6.
    w, map_loss = cases.fit_map(16)
    torch.testing.assert_close(got["w"], w, rtol=1e-12, atol=1e-12)
    assert got["map_loss"] == pytest.approx(map_loss, rel=1e-12)
    # Param-store parameters, a plain sum over the batch; rank 1's last shard is empty.
    free, free_loss = cases.fit_param_store(16)
    for name, value in free.items():
        torch.testing.assert_close(got["free"][name], value, rtol=1e-12, atol=1e-12)
    assert got["free_loss"] == pytest.approx(free_loss, rel=1e-12)
    assert not torch.allclose(cases.fit_map(8)[0], w, atol=1e-3)  # the comparison can tell batch sizes apart
    assert results["same_on_ranks"] and results["vae_same_on_ranks"]
    assert results["resume_equal"] == [True, True, True] and results["histories_equal"]
    assert results["writes_per_rank"][1] == 0 and results["writes_per_rank"][0] > 0
    assert results["bars_per_rank"] == [1, 0] and results["files"] == ["checkpoint.pt"]

    # The checkpoint knows its ranks; one process refuses it, in one line, and rewrites nothing.
    ckpt = tmp_path / "resumed" / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    before = ckpt.read_bytes()
    torch.set_default_dtype(torch.float32)
    with pytest.raises(ConfigError, match=r"written by 2: restart it with torchrun --nproc_per_node=2") as err:
        fit(*cases.small_vae(), cases.digits().train[101:], loss="meanfield", epochs=6, batch_size=32,
            checkpoint_dir=ckpt.parent, resume=True, progress=False)
    assert "\n" not in str(err.value) and ckpt.read_bytes() == before


def test_vae_reaches_the_one_process_elbo_and_jit_diffusion_runs(torchrun, tmp_path):
    """The VAE's held-out ELBO on 2 ranks x 32 lies in the spread of one-process fits x 64 over seeds."""
    _launch(torchrun, "vae_and_diffusion", tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    references = torch.tensor([cases.fit_vae(64, seed) for seed in range(4)], dtype=torch.float64)
    # A 99% prediction interval for one more run from the references' mean and spread (Student t).
    k = len(references)
    half_width = stats.t.ppf(0.995, k - 1) * float(references.std()) * math.sqrt(1 + 1 / k)
    assert abs(results["vae_elbo"] - float(references.mean())) < half_width, (results["vae_elbo"], references)
    assert results["vae_elbo"] > float(references.min()) - 10.0  # and well above the untrained -68 nats
    # DiffusionELBO(jit=True): the two ranks end with bitwise the same parameters.
    assert results["ddpm_same_on_ranks"] and results["graphs_recorded"] >= 1  # the recorded loss ran
    assert all(math.isfinite(v) for v in results["ddpm_loss"])


def test_bad_input_stops_every_rank_with_one_error(torchrun, tmp_path):
    """A NaN on rank 1 only, more ranks than examples, CUDA on a CPU machine: each rank raises, nothing half-written."""
    _launch(torchrun, "errors", tmp_path)
    messages = [json.loads((tmp_path / f"errors.rank{r}.json").read_text()) for r in range(2)]
    for rank_messages in messages:
        nan = rank_messages["nan"]
        assert nan.startswith("NonFiniteLossError: the loss became nan on rank 1 at epoch 2, step 1")
        assert "rank 1: model site 'y'" in nan and "rank 0:" not in nan and "checkpoint of epoch 1" in nan
        assert rank_messages["few"].startswith("ConfigError: expected at least one training example per rank, got 1")
        if not torch.cuda.is_available():
            assert rank_messages["cuda"].startswith("ConfigError:") and "CUDA" in rank_messages["cuda"]
        assert all("\n" not in m for m in rank_messages.values() if isinstance(m, str))
    assert messages[0]["nan_checkpoint_epoch"] == 1  # the last checkpoint stays intact
    assert sorted(p.name for p in (tmp_path / "nan").iterdir()) == ["checkpoint.pt"]
    assert not (tmp_path / "few").exists() and not (tmp_path / "cuda").exists()
