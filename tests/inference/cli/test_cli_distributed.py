"""`vi-models fit` under torchrun: what is refused before anything is written, and real 2-process runs."""

from __future__ import annotations

import json

import pytest

from inference.cli import main


@pytest.fixture
def two_ranks(monkeypatch):
    """The environment torchrun gives rank 0 of 2 (no process group is joined: every case here is
    refused before the engine would join one)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("family", ["kde", "gan"])
def test_families_that_cannot_be_distributed_exit_2_and_write_nothing(family, two_ranks, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", family, "--data", "moons", "--out", str(out), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"the {family} family cannot be fitted on 2 processes" in err and "without torchrun" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_more_processes_than_training_rows_exit_2(two_ranks, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1000000")  # far more processes than the training rows of moons
    out = tmp_path / "run"
    assert main(["fit", "vae", "--data", "moons", "--out", str(out), "--epochs", "1", "--no-progress",
                 "--validation-fraction", "0.5"]) == 2
    assert "at least one training row per process" in capsys.readouterr().err and not out.exists()


def test_a_cuda_request_on_a_machine_without_cuda_exits_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    assert main(["fit", "vae", "--data", "moons", "--out", str(out), "--device", "cuda", "--epochs", "1"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not out.exists()


def test_resume_with_another_number_of_processes_exits_2_and_keeps_the_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["fit", "vae", "--data", "moons", "--out", str(out), "--epochs", "1", "--hidden-dims", "8",
            "--z-dim", "2", "--no-progress"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    assert main([*args[:-3], "--epochs", "2", "--hidden-dims", "8", "--z-dim", "2", "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpointed with 1 process(es) and cannot resume on 2" in err and "--nproc_per_node=1" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing rewritten
    assert json.loads((out / "config.json").read_text())["fit"]["world_size"] == 1

