"""Settings of the density table (environment overrides), the dataset context, and the scoring helpers the
family specs share."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import QUICK, budget_schedule, chunked, env, holdout, mean_se, timed

TOYS = ("moons", "8gaussians", "checkerboard", "swissroll", "pinwheel", "2spirals")
DATASETS = (*TOYS, "digits")
#: Goals of the issue: the flow's KL on each toy (nats), the best of ours on digits (bits/dim).
FLOW_GOALS = {"8gaussians": 0.01, "moons": 0.01, "swissroll": 0.02, "pinwheel": 0.03, "2spirals": 0.04, "checkerboard": 0.10}
DIGITS_GOAL = 2.10
N_SAMPLE = 10_000
SCALE = 0.05 if QUICK else 1.0  # multiplies every wall-clock budget
#: Test draws the DDPM's ODE scores on the toys (all 100k by default; each costs ~300 network calls).
DDPM_TEST = 500 if QUICK else env("BENCH_DDPM_TEST", "100000", int)
#: Training epochs (of 10k points, batch 512) of the toy DDPM: 1000 = 20 000 steps.
DDPM_TOY_EPOCHS = env("BENCH_DDPM_EPOCHS", "1000", int)
#: Wall-clock budget and batch size of the flow on each toy (environment overrides for longer runs).
FLOW_SECONDS = env("BENCH_FLOW_SECONDS", "420", float)
FLOW_BATCH = env("BENCH_FLOW_BATCH", "512", int)
#: Noise regularisation of the toy flows: "kde" (3/4 of a KDE's cross-validated bandwidth), or a std.
FLOW_NOISE = env("BENCH_FLOW_NOISE", "kde")
#: Noise regularisation of the toy DDPM, as the flows' ("0": none).
DDPM_NOISE = env("BENCH_DDPM_NOISE", "kde")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results" / "density_table.json"
OURS = ("flow", "flow-mixture", "made", "kde", "gmm", "gmm-avg", "vae", "ddpm", "gan")
#: Our normalizing flows (Gaussian base, mixture base): the flow goals take the better of them.
FLOW_MODELS = ("flow", "flow-mixture")
PEERS_TOY = ("sklearn-kde", "sklearn-gmm")
PEERS_DIGITS = ("sklearn-kde", "sklearn-gmm", "sklearn-pca", "em-categorical")


# ---------------------------------------------------------------------------- helpers


def budget_fit(model: Any, guide: Any, data: torch.Tensor, seconds: float, **kwargs: Any) -> float:
    """``inference.fit`` for ``seconds`` of wall clock, the learning rate decayed by a cosine over that time."""
    from inference import fit

    seconds = max(2.0, seconds * SCALE)
    start = time.perf_counter()
    scheduler, stop = budget_schedule(start, seconds)
    kwargs.setdefault("scheduler", scheduler)
    fit(model, guide, data, epochs=100_000, seed=0, progress=False, check_convergence=False, callbacks=[stop], **kwargs)
    return time.perf_counter() - start


def kl_row(log_p: torch.Tensor, log_q: torch.Tensor) -> dict[str, Any]:
    gap = (log_p[: log_q.shape[0]] - log_q).double()
    value, se = mean_se(gap)
    return {"value": value, "se": se, "num_test": int(gap.numel())}


def bpd_row(bundle: Any, ll: torch.Tensor, *, discrete: bool) -> dict[str, Any]:
    ll = ll.double()
    value = bundle.bits_per_dim(ll.mean(), discrete=discrete)
    se = mean_se(ll)[1] / (bundle.num_dims * math.log(2))
    return {"value": float(value), "se": se, "num_test": int(ll.numel()), "discrete": discrete}


def adamw(lr: float, weight_decay: float) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def validation_split(x: torch.Tensor, fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    return holdout(x, round(fraction * x.shape[0]))


def toy_bandwidths() -> np.ndarray:
    """Bandwidths searched on the 2-D toys (both KDEs), log-spaced."""
    return np.geomspace(0.02, 0.4, 4 if QUICK else 10)


def flat(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64, one row per point."""
    return x.double().reshape(x.shape[0], -1)


class Context:
    """One dataset: the bundle, the exact test log-density (toys), and the scorer of a model."""

    def __init__(self, name: str) -> None:
        from inference import load_dataset

        self.name = name
        self.toy = name in TOYS
        n_test = 20_000 if QUICK else None
        self.bundle = load_dataset(name, n_test=n_test) if self.toy else load_dataset(name)
        self.train, self.test = self.bundle.train, self.bundle.test
        self.log_p = self.bundle.density.log_prob(self.test).double() if self.toy else None

    def score(self, log_q: torch.Tensor, *, discrete: bool = False) -> dict[str, Any]:
        if self.toy:
            return {"metric": "kl_nats", **kl_row(self.log_p, log_q)}
        return {"metric": "bits_per_dim", **bpd_row(self.bundle, log_q, discrete=discrete)}


def exact_row(ctx: Context, model: Any, label: str, config: str, fit_s: float, *, discrete: bool = False) -> dict[str, Any]:
    """The row of a fitted ``model`` with an exact ``log_prob``: scored on the test split, 10k samples timed."""
    model.eval()
    log_q = chunked(model.log_prob, ctx.test)
    _, sample_s = timed(lambda: model.sample(N_SAMPLE))
    return {"label": label, "config": config, "fit_s": fit_s, "sample_s": sample_s, "estimator": "exact",
            **ctx.score(log_q, discrete=discrete)}
