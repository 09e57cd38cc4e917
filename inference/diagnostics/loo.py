r"""PSIS-LOO: leave-one-out expected log predictive density, VI-corrected, and model comparison.

**VI-corrected PSIS-LOO** (Magnusson et al. 2019, Sec. 2.2, eq. 4): with ``theta_s ~ q`` the
leave-one-out posterior is reached by the ratios

.. code-block:: text

    r_is = p(theta_s | x_-i) / q(theta_s)  ∝  [p(theta_s, x) / q(theta_s)] / p(x_i | theta_s)
    elpd_loo_i = log sum_s w~_is p(x_i | theta_s),      w~_i = PSIS(r_i), normalised

whose Pareto k_i diagnoses both the approximation and the influence of observation i. Without
``log_p`` / ``log_q`` the draws are taken as exact posterior draws (``r_is = 1 / p(x_i | theta_s)``,
Vehtari et al. 2017).

:func:`loo` takes pointwise log-likelihoods, :func:`vi_loo` the output of
:func:`inference.to_inference_data`, and :func:`compare` ranks models by either (or by held-out
log-likelihoods) through ``az.compare``. The smoothing and the k thresholds are :mod:`.psis`'s.

References
----------
A. Vehtari, A. Gelman and J. Gabry, "Practical Bayesian model evaluation using leave-one-out
cross-validation and WAIC", Statistics and Computing 27 (2017).
M. Magnusson, M. R. Andersen, J. Jonasson and A. Vehtari, "Bayesian leave-one-out
cross-validation for large data", ICML 2019.
A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry, "Pareto smoothed importance sampling",
JMLR 25 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from vi_models.errors import ConfigError

from .arviz_io import ARVIZ_MAJOR, Group, import_arviz
from .psis import OK_K, pareto_smooth

__all__ = [
    "LooResult",
    "compare",
    "loo",
    "vi_loo",
]


@dataclass(frozen=True)
class LooResult:
    """PSIS-LOO estimate (:func:`loo`, :func:`vi_loo`).

    Attributes:
        elpd_loo: sum_i elpd_loo_i; ``se``: its standard error ``sqrt(N var_i(elpd_loo_i))``.
        p_loo: effective number of parameters, ``lppd - elpd_loo``.
        loo_i: ``(N,)`` pointwise elpd; ``pareto_k``: ``(N,)`` k-hat of each LOO ratio.
        num_samples: S; ``corrected``: whether the VI correction was applied;
        kind: ``"loo"`` or ``"test"`` (held-out log-likelihoods, no smoothing).
    """

    elpd_loo: float
    se: float
    p_loo: float
    loo_i: np.ndarray
    pareto_k: np.ndarray
    num_samples: int
    corrected: bool
    kind: Literal["loo", "test"] = "loo"

    @property
    def words(self) -> str:
        bad = int((self.pareto_k >= OK_K).sum())
        return (f"elpd_{self.kind} = {self.elpd_loo:.2f} (se {self.se:.2f}), p_loo = {self.p_loo:.2f}; "
                f"{bad} of {self.loo_i.size} observations with k-hat >= {OK_K}")

    def to_elpd_data(self) -> Any:
        """The result as ArviZ 0.x ``ELPDData`` (what ``az.compare`` takes)."""
        if ARVIZ_MAJOR >= 1:
            raise ConfigError("to_elpd_data builds ArviZ 0.x ELPDData; with ArviZ 1.x use arviz_stats.loo directly")
        import xarray as xr

        import_arviz()
        from arviz.stats.stats import ELPDData

        n = self.loo_i.size
        return ELPDData(
            data=[self.elpd_loo, self.se, self.p_loo, self.num_samples, n, bool((self.pareto_k >= OK_K).any()),
                  xr.DataArray(self.loo_i, dims=["obs"], name="loo_i"), xr.DataArray(self.pareto_k, dims=["obs"]),
                  "log", OK_K],
            index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "pareto_k",
                   "scale", "good_k"],
        )


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    return np.logaddexp.reduce(x, axis=axis)


def loo(log_lik: Any, *, log_p: Any = None, log_q: Any = None, r_eff: float = 1.0) -> LooResult:
    """PSIS-LOO from pointwise log-likelihoods, VI-corrected when ``log_p`` and ``log_q`` are given.

    Args:
        log_lik: ``(S, N)`` (or ``(chain, draw, N)``), ``log p(x_i | theta_s)``.
        log_p: ``(S,)``, ``log p(theta_s, x)``; ``log_q``: ``(S,)``, ``log q(theta_s)``
            (Magnusson et al. 2019, eq. 4). Omit both for exact posterior draws.
        r_eff: relative efficiency of the draws (1 for independent draws).

    Returns:
        :class:`LooResult`.
    """
    ll = np.asarray(log_lik, dtype=np.float64)
    ll = ll.reshape(-1, ll.shape[-1]) if ll.ndim > 2 else ll
    if ll.ndim != 2 or ll.shape[0] < 2:
        raise ConfigError(f"expected log_lik of shape (S, N) with S >= 2 draws, got {np.shape(log_lik)}")
    if (log_p is None) != (log_q is None):
        raise ConfigError("expected both log_p and log_q (VI-corrected LOO) or neither (exact posterior draws)")
    corrected = log_p is not None
    log_post = np.zeros(ll.shape[0])  # log p(theta_s | x) / q(theta_s) up to a constant
    if corrected:
        log_post = np.asarray(log_p, dtype=np.float64).reshape(-1) - np.asarray(log_q, dtype=np.float64).reshape(-1)
        if log_post.shape[0] != ll.shape[0]:
            raise ConfigError(f"expected log_p and log_q with {ll.shape[0]} draws, got {log_post.shape[0]}")
    # Magnusson et al. 2019, eq. (4): r_is ∝ p(theta_s, x) / q(theta_s) / p(x_i | theta_s)
    lw, k = pareto_smooth((log_post[:, None] - ll).T, r_eff)  # (N, S)
    loo_i = _lse(lw + ll.T, axis=1)
    # lppd under the (importance-weighted) full posterior, for p_loo
    lw_full, _ = pareto_smooth(log_post, r_eff) if corrected else (np.full(ll.shape[0], -math.log(ll.shape[0])), None)
    lppd = _lse(lw_full[:, None] + ll, axis=0).sum()
    n = loo_i.size
    return LooResult(elpd_loo=float(loo_i.sum()), se=float(math.sqrt(n * loo_i.var())), p_loo=float(lppd - loo_i.sum()),
                     loo_i=loo_i, pareto_k=k, num_samples=ll.shape[0], corrected=corrected)


def _group(idata: Any, name: str) -> Any:
    """Group ``name`` of an InferenceData (0.x), a DataTree (1.x) or a dict of Groups; None if absent."""
    if isinstance(idata, dict):  # inference_data_groups' output
        g = idata.get(name)
        return g.data if isinstance(g, Group) and g.data else None
    try:
        g = idata[name]
    except (KeyError, AttributeError):
        return None
    return getattr(g, "ds", g)


def vi_loo(idata: Any, *, var_name: str | None = None) -> LooResult:
    """VI-corrected PSIS-LOO (Magnusson et al. 2019) of :func:`inference.to_inference_data`'s output.

    Uses ``log_likelihood[var_name]`` ``(chain, draw, N)`` and ``sample_stats.lp`` /
    ``sample_stats.log_q``; chains are pooled (they are independent draws from q).

    Raises:
        ConfigError: no log_likelihood group, or ``sample_stats`` lacks ``lp`` / ``log_q``
            (a model with local latents only: compare held-out log-likelihoods instead).
    """
    ll_group, stats = _group(idata, "log_likelihood"), _group(idata, "sample_stats")
    if ll_group is None:
        raise ConfigError("expected a log_likelihood group; call to_inference_data(..., log_likelihood=True)")
    names = list(ll_group.keys()) if isinstance(ll_group, Mapping) else list(ll_group.data_vars)
    name = var_name or (names[0] if len(names) == 1 else None)
    if name is None:
        raise ConfigError(f"expected var_name, one of {names}")
    if stats is None or "lp" not in stats or "log_q" not in stats:
        raise ConfigError(
            "expected sample_stats with lp and log_q (a model with global latents); for models with local "
            "latents only, compare held-out per-observation log-likelihoods with compare({...: ll_test})"
        )
    ll = np.asarray(ll_group[name])
    return loo(ll.reshape(-1, ll.shape[-1]), log_p=np.asarray(stats["lp"]).reshape(-1),
               log_q=np.asarray(stats["log_q"]).reshape(-1))


def _as_elpd(value: Any) -> LooResult:
    if isinstance(value, LooResult):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        ll = value.detach().double().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, float)
        if ll.ndim != 1:
            raise ConfigError(f"expected held-out log-likelihoods of shape (N,), got {ll.shape}")
        n = ll.size
        return LooResult(elpd_loo=float(ll.sum()), se=float(math.sqrt(n * ll.var())), p_loo=0.0, loo_i=ll,
                         pareto_k=np.zeros(n), num_samples=1, corrected=False, kind="test")
    return vi_loo(value)


def compare(models: Mapping[str, Any], *, method: str = "stacking", **kwargs: Any) -> Any:
    """``az.compare`` over models or model families by their expected log predictive density.

    Args:
        models: name -> one of: ``to_inference_data`` output (VI-corrected PSIS-LOO), a
            :class:`LooResult`, or held-out per-observation log-likelihoods ``(N,)`` (e.g.
            :func:`inference.log_likelihood` on a test split; the elpd is then their sum).
            Do not mix held-out and LOO values: they estimate elpd on different data.
        method, **kwargs: passed to ``az.compare``.

    Returns:
        ``az.compare``'s DataFrame (ranked by elpd, with weights).
    """
    if len(models) < 2:
        raise ConfigError(f"expected at least two models to compare, got {len(models)}")
    results = {name: _as_elpd(v) for name, v in models.items()}
    kinds = {r.kind for r in results.values()}
    if len(kinds) > 1:
        raise ConfigError("expected all held-out log-likelihoods or all LOO estimates, got a mix; they are "
                          "not comparable")
    sizes = {r.loo_i.size for r in results.values()}
    if len(sizes) > 1:
        raise ConfigError(f"expected every model evaluated on the same observations, got sizes {sorted(sizes)}")
    az = import_arviz()
    return az.compare({name: r.to_elpd_data() for name, r in results.items()}, ic="loo", method=method, **kwargs)
