"""Helpers shared by the benchmark scripts (imported as a plain module: the scripts' folder is on ``sys.path``).

Environment settings (:func:`env`, :func:`env_list`, :data:`QUICK`), the machine a figure was measured on,
timing, markdown tables, the held-out split and re-dequantisation of the digits, chunked scoring, a mean
with its standard error, and the numpy EM mixture of categoricals the scripts use as a peer.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

# ---------------------------------------------------------------------------- environment


def env(name: str, default: Any = None, cast: Callable[[Any], Any] = str) -> Any:
    """The environment variable ``name`` through ``cast``; ``default`` (also cast) when it is unset or empty.

    ``None`` when it is unset and there is no default.
    """
    value = os.environ.get(name) or default
    return None if value is None else cast(value)


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated environment variable (``default`` when unset or empty), empty items dropped."""
    return [item for item in env(name, default).split(",") if item]


#: ``BENCH_QUICK=1``: every script's smoke-test sizes.
QUICK = bool(env("BENCH_QUICK"))


# ---------------------------------------------------------------------------- machine and timing


def machine(**extra: Any) -> dict[str, Any]:
    """The machine and versions a figure was measured on, with ``extra`` entries."""
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, **extra}


def machine_line() -> str:
    """``machine: <arch>, <n> CPUs, torch <version>``: the first words of a script's header."""
    return f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def budget_schedule(start: float, seconds: float) -> tuple[Callable[[Any], Any], Callable[..., bool]]:
    """A wall-clock budget of ``seconds`` from ``start``: the scheduler factory of a cosine learning-rate decay
    over that time (down to 1% of the rate), and the fit callback that stops the fit when the time is up."""
    frac = lambda: min(1.0, (time.perf_counter() - start) / seconds)
    scheduler = lambda opt: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda _: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac())))
    return scheduler, lambda epoch, logs: time.perf_counter() - start >= seconds


# ---------------------------------------------------------------------------- tables and figures


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats as ``.4g``, anything else by ``str``."""
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    """The mean of ``x`` and its standard error ``std / sqrt(n)``."""
    return float(x.mean()), float(x.std()) / math.sqrt(x.numel())


@torch.no_grad()
def chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 10_000,
            dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``chunk`` rows, concatenated (cast to ``dtype`` unless it is ``None``)."""
    cast = (lambda t: t) if dtype is None else (lambda t: t.to(dtype))
    return torch.cat([cast(fn(x[i : i + chunk]).detach()) for i in range(0, x.shape[0], chunk)])


# ---------------------------------------------------------------------------- data


def holdout(x: torch.Tensor, n_val: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)``: ``n_val`` rows of ``x`` held out by a seeded permutation, the rest kept."""
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x[order[n_val:]], x[order[:n_val]]


def redequantize(bundle: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fresh uniform noise inside each pixel's bin for every batch (Theis et al. 2016, Sec. 3.1)."""
    return lambda x: bundle.dequantize(torch.floor(x * bundle.num_levels).clamp(0, bundle.num_levels - 1).long())


# ---------------------------------------------------------------------------- numpy peer


def em_categorical_mixture(levels: np.ndarray, n_components: int, num_levels: int, *, iters: int = 200,
                           alpha: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """EM for a mixture of independent categoricals (numpy, independent of the package).

    Returns the log weights ``(K,)`` and log probabilities ``(K, D, L)`` (add-``alpha`` smoothing).
    """
    rng = np.random.default_rng(seed)
    onehot = np.eye(num_levels)[levels]  # (N, D, L)
    resp = rng.dirichlet(np.ones(n_components), size=len(levels))  # (N, K)
    for _ in range(iters):
        nk = resp.sum(0)
        with np.errstate(divide="ignore"):  # a component that dies has log weight -inf: harmless
            log_w = np.log(nk / nk.sum())
        counts = np.einsum("nk,ndl->kdl", resp, onehot) + alpha
        log_p = np.log(counts / counts.sum(-1, keepdims=True))
        joint = log_w + np.einsum("ndl,kdl->nk", onehot, log_p)
        resp = np.exp(joint - np.logaddexp.reduce(joint, 1, keepdims=True))
    return log_w, log_p


def categorical_mixture_log_prob(log_w: np.ndarray, log_p: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``log P(k)`` ``(N,)`` of the levels ``(N, D)`` under :func:`em_categorical_mixture`'s parameters."""
    from scipy.special import logsumexp

    return logsumexp(log_w + np.einsum("ndl,kdl->nk", np.eye(log_p.shape[-1])[levels], log_p), 1)
