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
