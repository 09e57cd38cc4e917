"""Expectation-maximisation for Pyro models with an enumerable discrete latent per observation.

``fit_em`` is the EM twin of :func:`inference.fit`: the E-step asks Pyro for the
responsibilities by enumerating the model's assignment site (:mod:`.steps`), the
M-step is the model's own closed form (``model.m_step(x, resp, reg_covar=...)``, as the
mixtures of :mod:`vi_models.mixtures.gaussian` have) or, for any other model, a few gradient steps on
the expected complete-data log-likelihood (generalised EM). The loop, its stopping rule and
its attributes follow scikit-learn's ``BaseMixture.fit`` so that the two can be compared
number for number:

    for each of n_init initialisations:
        for n_iter in 1..max_iter:
            log p(x_i), log r_ik = E-step(theta)                  # THEORY T12: ELBO = log-likelihood
            theta = M-step(x, r)                                  # THEORY T11
            lower_bound = mean_i log p(x_i)  (at the theta the E-step used)
            stop if |lower_bound - previous| < tol
    keep the initialisation with the highest lower bound

The fitted model comes back in an :class:`~.result.EMResult` (scikit-learn's attributes and
``predict`` / ``score`` / ``bic`` methods).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyro
import torch
from pyro.infer.util import is_validation_enabled
from torch import Tensor, nn

from inference.engine._traces import plate_depth
from inference.engine.batches import model_dtype
from vi_models._validation import check_positive_int, resolve_device
from vi_models.errors import (
    ConfigError,
    ConvergenceWarning,
    DataError,
    DegenerateFitWarning,
    NonFiniteLossError,
)

from .result import EMResult, as_model_data, assignment_probs, model_device
from .steps import (
    INIT_METHODS,
    e_step,
    generalized_m_step,
    identical_component_groups,
    initial_responsibilities,
    log_joint,
    trainable_parameters,
)

__all__ = ["EMResult", "assignment_probs", "fit_em"]

InitMethod = Literal["k-means++", "kmeans", "random_from_data", "random"]
InitSpec = InitMethod | Mapping[str, Any]
#: A component whose total responsibility is below this many observations counts as empty.
EMPTY_COMPONENT_MASS = 1e-6
_COVARIANCE_KEYS = ("covariances", "precisions", "scale_tril", "variances")


def _check_float(value: Any, name: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"expected {name} to be a finite number >= {minimum}, got {value!r}")
    return float(value)


def _initialize(model: Any, x: Tensor, init: InitSpec, rng: np.random.RandomState, reg_covar: float,
                n_components: int, closed_form: bool, gem: tuple[int, float], depth: int) -> None:
    if isinstance(init, Mapping):
        alias = lambda name: "cov" if name in _COVARIANCE_KEYS else name
        needed = {alias(n) for n in getattr(model, "param_names", ())}
        if not needed <= {alias(n) for n in init}:
            # scikit-learn's rule: the parameters not given come from a k-means++ initialisation
            _initialize(model, x, "k-means++", rng, reg_covar, n_components, closed_form, gem, depth)
        try:
            if closed_form:
                model.set_params(**dict(init))
            else:
                with torch.no_grad():
                    for name, value in init.items():
                        setattr(model, name, torch.as_tensor(value).to(model_device(model), model_dtype(model)))
        except TypeError as exc:
            raise ConfigError(f"init has parameters the model does not know ({exc}); expected names among "
                              f"{getattr(model, 'param_names', ())} (and covariances/precisions)") from None
        return
    resp = initial_responsibilities(x, n_components, init, rng)  # (N, K)
    if closed_form:
        with torch.no_grad():
            model.set_params(**model.m_step(x, resp, reg_covar=reg_covar))
    else:
        opt = torch.optim.Adam(trainable_parameters(model), lr=gem[1])
        generalized_m_step(model, x, resp.T, opt, 10 * gem[0], max_plate_nesting=depth)


def fit_em(
    model: Any,
    data: Any,
    *,
    init: InitSpec = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    warm_start: bool = False,
    device: torch.device | str | None = "cpu",
    seed: int | None = None,
    progress: bool = True,
    gem_steps: int = 10,
    gem_lr: float = 0.01,
) -> EMResult:
    """Fit a model with an enumerable discrete latent per observation by EM.

    Args:
        model: a Pyro model ``model(x)`` with one discrete latent per observation (marked for
            enumeration or enumerable) inside ``pyro.plate("data", N, dim=-1)`` and no other
            latents, e.g. :class:`vi_models.GaussianMixture`. With ``m_step`` / ``set_params``
            methods the M-step is their closed form; otherwise the model must be an
            ``nn.Module`` and the M-step takes ``gem_steps`` Adam steps on the expected
            complete-data log-likelihood.
        data: observations ``(N, n_features)`` (tensor, array or a DataBundle's ``train``).
        init: ``"k-means++"`` (default), ``"kmeans"``, ``"random_from_data"``, ``"random"``
            (scikit-learn's ``init_params``, from responsibilities and one M-step), or a dict of
            initial parameters (``weights``, ``means`` and ``covariances`` or ``precisions`` in
            scikit-learn's layouts; ``probs`` for the discrete mixtures); parameters missing from
            the dict come from a k-means++ initialisation, as in scikit-learn.
        n_init: initialisations; the one with the highest final lower bound is kept.
        max_iter: EM iterations per initialisation (0: only initialise).
        tol: stop when the lower bound changes by less than ``tol`` (nats per observation).
        reg_covar: added to the diagonal of every covariance in the closed-form M-step.
        warm_start: start from the model's current parameters (one run, ``init`` and
            ``n_init`` ignored).
        device: where to compute.
        seed: seeds the initialisation exactly as scikit-learn's ``random_state``.
        progress: show a progress bar.
        gem_steps, gem_lr: Adam steps and learning rate of a generalised M-step.

    Returns:
        An :class:`EMResult` (``converged_``, ``n_iter_``, ``lower_bound_``, ``predict``, ...).

    Raises:
        ConfigError: bad arguments, a model with priors on its globals (fit it with
            :func:`inference.fit`), or a model with continuous latents.
        DataError: non-finite or mis-shaped data, fewer observations than components, or a
            covariance that stops being positive definite (``reg_covar=0``).

    Warns:
        ConvergenceWarning: the best initialisation hit ``max_iter`` before ``tol``.
        DegenerateFitWarning: identical components, a component collapsed onto one point (its
            variance held up by ``reg_covar`` alone), or an empty component; each is named.

    Example:
        >>> from vi_models import GaussianMixture
        >>> x = torch.cat([torch.randn(100, 2) - 4, torch.randn(100, 2) + 4])
        >>> result = fit_em(GaussianMixture(2, 2), x, seed=0, progress=False)
        >>> result.converged_, result.predict(x).shape
        (True, torch.Size([200]))
    """
    start = time.perf_counter()
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
    gem_steps = check_positive_int(gem_steps, "gem_steps")
    tol = _check_float(tol, "tol")
    gem_lr = _check_float(gem_lr, "gem_lr")
    if not isinstance(reg_covar, (int, float)) or isinstance(reg_covar, bool) or not reg_covar >= 0 or not math.isfinite(reg_covar):
        raise ConfigError(f"expected reg_covar >= 0, got {reg_covar!r}; 1e-6 is a safe floor on the variances")
    if not isinstance(init, Mapping) and init not in INIT_METHODS:
        raise ConfigError(f"expected init to be one of {', '.join(map(repr, INIT_METHODS))} or a dict of "
                          f"parameters, got {init!r}")
    if getattr(model, "has_priors", False):
        raise ConfigError(
            "fit_em finds maximum-likelihood parameters, but this model has priors on its globals; build it "
            "with priors=None, or fit the Bayesian mixture with inference.fit(model, guide, data, loss='enum')"
        )
    dev = resolve_device(device)
    if isinstance(model, nn.Module):
        model.to(dev)
    x = as_model_data(data, model, device=dev)
    n = x.shape[0]
    n_components = getattr(model, "n_components", None)
    if n_components is not None and n < n_components:
        raise DataError(f"expected at least n_components={n_components} observations, got {n}; lower "
                        "n_components or pass more data")
    closed_form = callable(getattr(model, "m_step", None)) and callable(getattr(model, "set_params", None))
    depth = plate_depth(model, None, (x[: min(n, 8)],))
    with torch.no_grad():
        n_components = log_joint(model, x[:1], max_plate_nesting=depth).shape[0]
    if n < n_components:
        raise DataError(f"expected at least {n_components} observations (one per component), got {n}")
    rng = np.random.RandomState(seed)
    validate = is_validation_enabled()
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if isinstance(model, nn.Module) else {}
    gem_opt = None if closed_form else (lambda: torch.optim.Adam(trainable_parameters(model), lr=gem_lr))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=(1 if warm_start else n_init) * max_iter, desc="fit_em", unit="iter", leave=True)
    best: dict[str, Any] | None = None
    init_bounds: list[float] = []
    total_iters, loop_time = 0, 0.0
    try:
        for run in range(1 if warm_start else n_init):
            if not warm_start:
                if initial_state and not closed_form:
                    model.load_state_dict(initial_state)
                _initialize(model, x, init, rng, reg_covar, n_components, closed_form, (gem_steps, gem_lr), depth)
            opt = gem_opt() if gem_opt is not None else None
            lower_bound, bounds, converged, n_iter = -math.inf, [], False, 0
            loop_start = time.perf_counter()
            for n_iter in range(1, max_iter + 1):
                previous = lower_bound
                # The data are checked (support, finiteness) by the first E-step; later ones skip it.
                with torch.no_grad(), pyro.validation_enabled(validate and total_iters + n_iter == 1):
                    log_norm, resp = e_step(model, x, log_space=False, max_plate_nesting=depth)
                lower_bound = float(log_norm.mean())
                if not math.isfinite(lower_bound):
                    bad = torch.nonzero(~torch.isfinite(log_norm)).flatten()[:5].tolist()
                    raise NonFiniteLossError(
                        f"log p(x) became {lower_bound} at iteration {n_iter} (observations {bad}): no component "
                        "gives them a positive density; increase reg_covar (or pseudo_count), or scale the data"
                    )
                with pyro.validation_enabled(validate and total_iters + n_iter == 1):
                    if closed_form:
                        with torch.no_grad():
                            model.set_params(**model.m_step(x, resp.T, reg_covar=reg_covar))
                    else:
                        generalized_m_step(model, x, resp, opt, gem_steps, max_plate_nesting=depth)
                bounds.append(lower_bound)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(init=run + 1, lower_bound=f"{lower_bound:.6g}", refresh=False)
                if abs(lower_bound - previous) < tol:
                    converged = True
                    break
            total_iters += n_iter
            loop_time += time.perf_counter() - loop_start
            init_bounds.append(lower_bound)
            if best is None or lower_bound > best["lower_bound"]:
                best = {
                    "lower_bound": lower_bound, "bounds": bounds, "converged": converged, "n_iter": n_iter,
                    "run": run, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if isinstance(model, nn.Module) else None,
                }
    finally:
        if bar is not None:
            bar.close()
    if best is None:  # unreachable: n_init >= 1 is validated above
        raise ConfigError(f"expected n_init >= 1, got {n_init!r}")
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    if not best["converged"] and max_iter > 0:
        warnings.warn(
            f"EM did not converge in max_iter={max_iter} iterations (best of {len(init_bounds)} initialisation(s); "
            f"last lower bound {best['lower_bound']:.6g}); increase max_iter or tol, try other init parameters, "
            "or check for degenerate data",
            ConvergenceWarning,
            stacklevel=2,
        )
    with torch.no_grad():
        _, log_resp = e_step(model, x, max_plate_nesting=depth)
    _warn_degenerate(model, x, log_resp, reg_covar)
    return EMResult(
        model=model,
        converged_=best["converged"],
        n_iter_=best["n_iter"],
        lower_bound_=best["lower_bound"],
        lower_bounds_=best["bounds"],
        init_lower_bounds_=init_bounds,
        best_init_=best["run"],
        n_components=n_components,
        elapsed=time.perf_counter() - start,
        time_per_iter=loop_time / max(total_iters, 1),
        config={
            "init": init if isinstance(init, str) else "given", "n_init": n_init, "max_iter": max_iter,
            "tol": tol, "reg_covar": reg_covar, "warm_start": warm_start, "device": str(dev), "seed": seed,
            "m_step": "closed-form" if closed_form else f"generalised ({gem_steps} Adam steps, lr {gem_lr})",
        },
        _depth=depth,
    )


def _warn_degenerate(model: Any, x: Tensor, log_resp: Tensor, reg_covar: float) -> None:
    """Name the identical, collapsed and empty components of a fitted model (THEORY T13)."""
    groups = identical_component_groups(log_resp)
    if groups:
        warnings.warn(
            f"components {groups} are identical (every observation gives them proportional responsibilities); "
            "components that start identical stay identical under EM. Initialise with init='k-means++' or "
            "'random_from_data', or give distinct initial means",
            DegenerateFitWarning,
            stacklevel=3,
        )
    mass = log_resp.exp().sum(-1)  # N_k
    empty = torch.nonzero(mass < EMPTY_COMPONENT_MASS).flatten().tolist()
    if empty:
        warnings.warn(
            f"component(s) {empty} are empty (total responsibility below {EMPTY_COMPONENT_MASS:g} observations): "
            "their weight is ~0 and their parameters are not informed by the data; lower n_components or use "
            "n_init > 1",
            DegenerateFitWarning,
            stacklevel=3,
        )
    collapsed = getattr(model, "collapsed_components", None)
    if callable(collapsed) and x.shape[0] > 1:
        names = [k for k in collapsed(reg_covar, data_variance=float(x.var(0).mean())) if k not in empty]
        if names:
            warnings.warn(
                f"component(s) {names} collapsed onto a single point: their variance "
                + (f"sits at the reg_covar={reg_covar:g} floor" if reg_covar > 0 else "went to 0")
                + " (the likelihood would grow without bound); increase reg_covar, lower n_components, or "
                "initialise away from outliers",
                DegenerateFitWarning,
                stacklevel=3,
            )
