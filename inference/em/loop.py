"""Expectation-maximisation for Pyro models with an enumerable discrete latent per observation.

``fit_em`` is the EM twin of :func:`inference.fit`: the E-step asks Pyro for the
responsibilities by enumerating the model's assignment site (:mod:`.steps`), the
M-step is the model's own closed form or, for any other model, a few gradient steps on
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

A closed form of additive sufficient statistics (the mixtures of :mod:`vi_models.mixtures`)
runs through :class:`~.streaming.StatisticsEM`: the E-step chunk by chunk over a tensor, a
memory-mapped ``.npy`` or an iterable of chunks (:mod:`.sources`), and, under ``torchrun``,
over each rank's shard of the rows with the statistics all-reduced. Any other model runs
through :class:`~.steps.InMemoryEM` on one in-memory tensor in one process.

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
import torch
from pyro.infer.util import is_validation_enabled
from torch import Tensor, nn

from inference.engine import distributed
from inference.engine._traces import plate_depth
from inference.engine.batches import model_dtype
from vi_models._validation import check_choice, check_positive_int, resolve_device
from vi_models.errors import ConfigError, ConvergenceWarning, DataError
from vi_models.mixtures.init import seed_rows

from .degenerate import EMPTY_COMPONENT_MASS, summarise, warn_degenerate
from .result import EMResult, assignment_probs
from .sources import DEFAULT_CHUNK_SIZE, as_source, model_device
from .steps import (
    INIT_METHODS,
    InMemoryEM,
    generalized_m_step,
    initial_responsibilities,
    log_joint,
    trainable_parameters,
)
from .streaming import INIT_SAMPLE_SIZE, StatisticsEM, has_statistics

__all__ = ["DEFAULT_CHUNK_SIZE", "EMPTY_COMPONENT_MASS", "INIT_SAMPLE_SIZE", "EMResult", "assignment_probs", "fit_em"]

InitMethod = Literal["k-means++", "kmeans", "random_from_data", "random"]
InitSpec = InitMethod | Mapping[str, Any]
OnDegenerate = Literal["reseed", "keep", "raise"]
ON_DEGENERATE = ("reseed", "keep", "raise")
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
    seeds = seed_rows(x, n_components, init, rng) if closed_form else None
    if seeds is not None:
        # one-hot responsibilities on K rows: the M-step of those rows alone, without an (N, K) table
        eye = torch.eye(n_components, dtype=x.dtype if x.is_floating_point() else None, device=x.device)
        with torch.no_grad():
            model.set_params(**model.m_step(x[torch.as_tensor(seeds, device=x.device)], eye, reg_covar=reg_covar))
        return
    resp = initial_responsibilities(x, n_components, init, rng)  # (N, K)
    if closed_form:
        with torch.no_grad():
            model.set_params(**model.m_step(x, resp, reg_covar=reg_covar))
    else:
        opt = torch.optim.Adam(trainable_parameters(model), lr=gem[1])
        generalized_m_step(model, x, resp.T, opt, 10 * gem[0], max_plate_nesting=depth)


def _optional_int(value: Any, name: str) -> int | None:
    return None if value is None else check_positive_int(value, name)


def fit_em(
    model: Any,
    data: Any,
    *,
    init: InitSpec = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    on_degenerate: OnDegenerate = "reseed",
    warm_start: bool = False,
    device: torch.device | str | None = "cpu",
    seed: int | None = None,
    progress: bool = True,
    gem_steps: int = 10,
    gem_lr: float = 0.01,
    chunk_size: int | None = None,
    init_sample_size: int | None = INIT_SAMPLE_SIZE,
) -> EMResult:
    """Fit a model with an enumerable discrete latent per observation by EM.

    Args:
        model: a Pyro model ``model(x)`` with one discrete latent per observation (marked for
            enumeration or enumerable) inside ``pyro.plate("data", N, dim=-1)`` and no other
            latents, e.g. :class:`vi_models.GaussianMixture`. With ``sufficient_statistics`` /
            ``m_step_from_statistics`` / ``set_params`` (the mixtures of :mod:`vi_models.mixtures`)
            the M-step is their closed form, and the data may be streamed or distributed; with
            ``m_step`` / ``set_params`` only, the closed form on in-memory data; otherwise the
            model must be an ``nn.Module`` and the M-step takes ``gem_steps`` Adam steps on the
            expected complete-data log-likelihood (in-memory data, one process).
        data: observations ``(N, n_features)``: a tensor, an array or a DataBundle's ``train``
            (in memory); a memory-mapped ``.npy`` (``np.load(path, mmap_mode="r")``, read
            ``chunk_size`` rows at a time, 100 000 by default, never loaded whole); or chunks
            ``(n_i, n_features)`` as a list, a re-iterable object or a callable returning an
            iterable of them (a one-shot generator is refused). See :mod:`inference.em.sources`.
        init: ``"k-means++"`` (default), ``"kmeans"``, ``"random_from_data"``, ``"random"``
            (scikit-learn's ``init_params``, from responsibilities and one M-step), or a dict of
            initial parameters (``weights``, ``means`` and ``covariances`` or ``precisions`` in
            scikit-learn's layouts; ``probs`` for the discrete mixtures); parameters missing from
            the dict come from a k-means++ initialisation, as in scikit-learn.
        n_init: initialisations; the one with the highest final lower bound is kept.
        max_iter: EM iterations per initialisation (0: only initialise).
        tol: stop when the lower bound changes by less than ``tol`` (nats per observation).
        reg_covar: added to the diagonal of every covariance in the closed-form M-step, before it is
            factorised in float64 (as scikit-learn); a covariance still not positive definite is
            retried with a jitter of 1e-12, 1e-10, then 1e-8 times its mean variance
            (``NumericalJitterWarning``, naming the component and the jitter).
        on_degenerate: what an M-step does with a component that cannot go on: no jitter makes its
            covariance positive definite, its parameters are not finite, or it collapsed onto a point
            (mean variance at most 1e-12 of the data's; see :mod:`vi_models.mixtures.degenerate`).
            ``"reseed"`` (default): move it to the observation worst explained by the current fit
            (the lowest ``log p(x_i)`` over all rows and ranks) with the pooled covariance of the
            other components and a weight of at least one observation, with a
            ``DegenerateFitWarning``; ``"keep"``: keep its previous mean and covariance for that
            iteration (a generalised-EM step), with the warning; ``"raise"``: a ``DataError``, as
            scikit-learn's ``GaussianMixture``. A component held up by ``reg_covar`` alone is not
            degenerate (scikit-learn keeps it too) and is named at the end. Only models with
            ``degenerate_components`` (:class:`vi_models.GaussianMixture`) have such components; a
            tied covariance, shared by all, cannot be re-seeded.
        warm_start: start from the model's current parameters (one run, ``init`` and
            ``n_init`` ignored).
        device: where to compute (``cuda`` is ``cuda:LOCAL_RANK`` under ``torchrun``).
        seed: seeds the initialisation exactly as scikit-learn's ``random_state`` (and the
            initialisation sample, when there is one).
        progress: show a progress bar (rank 0 only).
        gem_steps, gem_lr: Adam steps and learning rate of a generalised M-step.
        chunk_size: rows per E-step (``None``: in-memory data in one piece, a memmap in chunks of
            100 000, chunks as given). Chunking changes the floating-point order of the sums
            only: the fit equals the in-memory one to rounding.
        init_sample_size: the initialisation (k-means++ or another ``init``, and the reference
            point of the Gaussian moments) sees a uniform sample without replacement of at most
            this many rows (default 100 000), seeded by ``seed`` and read by rank 0; with
            N <= init_sample_size (or ``None``) it sees every row in order, as scikit-learn does.

    Under ``torchrun`` (``inference.engine.distributed``) every rank passes the whole data; each
    E-steps its contiguous shard of the rows, the statistics and the log-likelihood are summed
    across ranks, and every rank runs the same M-step and reaches the same fitted model.

    Returns:
        An :class:`EMResult` (``converged_``, ``n_iter_``, ``lower_bound_``, ``predict``, ...;
        ``time_per_iter``, ``iteration_seconds_`` and ``elapsed`` for timings).

    Raises:
        ConfigError: bad arguments (``chunk_size`` < 1, a one-shot generator), a model with priors
            on its globals (fit it with :func:`inference.fit`), a model with continuous latents, or
            streamed / distributed data for a model without sufficient statistics.
        DataError: non-finite or mis-shaped data (a chunk that is not 2-D, chunks of different
            widths), no rows, fewer observations than components or than processes, an initial
            covariance that no jitter makes positive definite (``reg_covar=0``), or a degenerate
            component with ``on_degenerate="raise"`` (or with no healthy one to re-seed it from).

    Warns:
        ConvergenceWarning: the best initialisation hit ``max_iter`` before ``tol``.
        DegenerateFitWarning: identical components, a component collapsed onto one point (its
            variance held up by ``reg_covar`` alone), or an empty component; each is named. Also a
            component re-seeded or kept (``on_degenerate``), named with the iteration and the rows.
        NumericalJitterWarning: a covariance factorised with a jitter (a ``DegenerateFitWarning``;
            ``vi_models.mixtures.NumericalJitterWarning``).

    Example:
        >>> from vi_models import GaussianMixture
        >>> x = torch.cat([torch.randn(100, 2) - 4, torch.randn(100, 2) + 4])
        >>> result = fit_em(GaussianMixture(2, 2), x, seed=0, progress=False)
        >>> result.converged_, result.predict(x).shape
        (True, torch.Size([200]))
        >>> chunks = [x[:70], x[70:140], x[140:]]  # or np.load("x.npy", mmap_mode="r")
        >>> fit_em(GaussianMixture(2, 2), chunks, seed=0, progress=False).converged_
        True
    """
    start = time.perf_counter()
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
    gem_steps = check_positive_int(gem_steps, "gem_steps")
    chunk_size, init_sample_size = _optional_int(chunk_size, "chunk_size"), _optional_int(init_sample_size, "init_sample_size")
    tol = _check_float(tol, "tol")
    on_degenerate = check_choice(on_degenerate, "on_degenerate", ON_DEGENERATE)
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
    parallel = distributed.init(device)
    dev = distributed.rank_device(device) if parallel else resolve_device(device)
    if isinstance(model, nn.Module):
        model.to(dev)
    source = as_source(data, model, chunk_size=chunk_size, dtype=model_dtype(model), device=dev)
    n, world = source.n_rows, distributed.world_size()
    n_components = getattr(model, "n_components", None)
    if n_components is not None and n < n_components:
        raise DataError(f"expected at least n_components={n_components} observations, got {n}; lower "
                        "n_components or pass more data")
    if n < world:
        raise DataError(f"expected at least one row per process, got {n} rows for {world} processes; start "
                        "fewer processes (torchrun --nproc_per_node=...)")
    closed_form = callable(getattr(model, "m_step", None)) and callable(getattr(model, "set_params", None))
    by_statistics = has_statistics(model)
    if not by_statistics and (source.streamed or parallel):
        raise ConfigError(
            f"expected a model with sufficient_statistics and m_step_from_statistics to fit "
            f"{'streamed' if source.streamed else 'distributed'} data, got {type(model).__name__}, whose M-step "
            f"{'is a closed form on all the data' if closed_form else 'takes gradient steps on all the data'}; "
            "pass the data as one in-memory tensor without chunk_size and run one process, or give the model "
            "those two methods (see vi_models.mixtures.statistics)"
        )
    head = source.head(min(n, 8))
    depth = plate_depth(model, None, (head,))
    with torch.no_grad():
        n_components = log_joint(model, head[:1], max_plate_nesting=depth).shape[0]
    if n < n_components:
        raise DataError(f"expected at least {n_components} observations (one per component), got {n}")
    rng = np.random.RandomState(seed)
    validate = is_validation_enabled()
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if isinstance(model, nn.Module) else {}
    if by_statistics:
        em: Any = StatisticsEM(model, source, n_components=n_components, depth=depth, reg_covar=reg_covar,
                               parallel=parallel, init_sample_size=init_sample_size, seed=seed,
                               on_degenerate=on_degenerate, warm_start=warm_start)
    else:
        em = InMemoryEM(model, source.all_rows(), depth=depth, reg_covar=reg_covar, closed_form=closed_form,
                        gem=(gem_steps, gem_lr))

    def run_init(rows: Tensor) -> None:
        _initialize(model, rows, init, rng, reg_covar, n_components, closed_form, (gem_steps, gem_lr), depth)

    bar = None
    if progress and distributed.is_main_process():
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
                em.initialize(run_init)
            if hasattr(em, "begin_run"):
                em.begin_run()
            lower_bound, bounds, seconds, converged, n_iter = -math.inf, [], [], False, 0
            for n_iter in range(1, max_iter + 1):
                previous, tick = lower_bound, time.perf_counter()
                # The data are checked (support, finiteness) by the first E-step; later ones skip it.
                lower_bound = em.step(n_iter, validate and total_iters + n_iter == 1)
                bounds.append(lower_bound)
                seconds.append(time.perf_counter() - tick)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(init=run + 1, lower_bound=f"{lower_bound:.6g}", refresh=False)
                if abs(lower_bound - previous) < tol:
                    converged = True
                    break
            total_iters += n_iter
            loop_time += sum(seconds)
            init_bounds.append(lower_bound)
            if best is None or lower_bound > best["lower_bound"]:
                best = {
                    "lower_bound": lower_bound, "bounds": bounds, "converged": converged, "n_iter": n_iter,
                    "run": run, "seconds": seconds, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if isinstance(model, nn.Module) else None, "reseeds": list(getattr(em, "reseeds", [])),
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
    local = em.local if by_statistics else source
    warn_degenerate(model, summarise(model, local, n_components=n_components, depth=depth, shift=head.mean(0)),
                    reg_covar)
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
            "tol": tol, "reg_covar": reg_covar, "on_degenerate": on_degenerate, "warm_start": warm_start,
            "device": str(dev), "seed": seed,
            "m_step": ("closed-form (sufficient statistics)" if by_statistics else "closed-form" if closed_form
                       else f"generalised ({gem_steps} Adam steps, lr {gem_lr})"),
            "chunk_size": chunk_size, "init_sample_size": init_sample_size, "n_rows": n, "world_size": world,
            "streamed": source.streamed,
        },
        iteration_seconds_=best["seconds"],
        reseeds_=best["reseeds"],
        _depth=depth,
    )
