"""Shared test set-up: validation on, a clean param store and fixed seeds for every test."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("CI", "true")  # tutorials and CLI runs shrink their sizes under tests
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _pyro_state():
    """Each test starts with validation on, an empty param store and seed 0."""
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture
def float64():
    """Run a test in float64 (restores the previous default dtype afterwards)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(previous)


def pytest_collection_modifyitems(config, items):
    """Every `theory` marker must name ids of ../shared/THEORY.md (T1..T33)."""
    for item in items:
        for mark in item.iter_markers("theory"):
            for tid in mark.args:
                if not (isinstance(tid, str) and tid.startswith("T") and tid[1:].isdigit() and 1 <= int(tid[1:]) <= 33):
                    raise pytest.UsageError(f"{item.nodeid}: theory id {tid!r} is not one of T1..T33")


@pytest.fixture
def torchrun(tmp_path):
    """Run a Python script under ``torchrun --nproc_per_node=N`` (gloo, one thread a process).

    ``torchrun(code, nproc=2, *args)`` writes ``code`` to a file, runs it from the repository
    root with a free port, and returns the ``subprocess.CompletedProcess`` (stdout, stderr, rc).
    """
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def run(code: str, *args: str, nproc: int = 2, timeout: float = 120, module: str | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={port}"]
        if module is not None:
            cmd += ["-m", module]
        else:
            script = tmp_path / f"script_{port}.py"
            script.write_text(code)
            cmd.append(str(script))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root), "CI": "true", "MPLBACKEND": "Agg"}
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)

    return run
