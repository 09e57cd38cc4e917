"""EM by sufficient statistics: the E-step chunk by chunk, the sums all-reduced, one M-step everywhere.

For a model whose closed-form M-step depends on the data through additive sums (the mixtures of
:mod:`vi_models.mixtures`: ``sufficient_statistics`` / ``m_step_from_statistics``), one iteration
of :func:`~inference.em.loop.fit_em` is

.. code-block:: text

    on each rank, for each chunk x_c of its rows:          (inference.em.sources)
      for each sub-chunk x_s of x_c:                        (vi_models.mixtures.chunks)
        log p(x_i), r_ik = E-step(theta)                    (THEORY T12)
        S  += model.sufficient_statistics(x_s, r, shift=c)  (float64)
        LL += sum_i log p(x_i)
    [S, LL] = all_reduce_sum([S, LL])                       one collective, one flat vector
    theta   = model.m_step_from_statistics(S, shift=c)      the same on every rank (THEORY T11)
    theta   = mend(theta)                                   degenerate components (below)
    lower_bound = LL / N

so memory holds one chunk (read and checked a block at a time), the E-step's tables of one
sub-chunk (below half a chunk) and the statistics, and the fit equals the in-memory one up to
the order of the floating-point sums. A component the M-step cannot go on with (a covariance no
jitter makes positive definite, a point mass: ``model.degenerate_components``) is re-seeded at
the worst-explained rows of all ranks (:func:`~.degenerate.worst_rows`), kept, or an error,
as ``on_degenerate`` says. Everything the loop decides (convergence, ``n_iter_``, the best of
``n_init`` starts, a non-finite bound, a degenerate component, the degenerate-fit warnings) is
computed from reduced figures, so every rank decides the same.

Initialisation (:class:`StatisticsEM`): rank 0 reads a uniform sample without replacement of at
most ``init_sample_size`` rows (:data:`INIT_SAMPLE_SIZE` by default; seeded by ``seed``, sorted by
row; all rows in order when N is no larger), runs the initialisation on it (k-means++ and the
others, as scikit-learn does on all the data) and broadcasts the parameters; the reference point
``c`` of the Gaussian moments is the sample's mean, and the scale a collapse is judged against its
mean per-feature variance, broadcast too. The sample is dropped after the first initialisation
(read again for the next of ``n_init``), so that the iterations do not hold it beside a chunk.
A failure on one rank (a bad chunk, an error in the initialisation) is announced to all of them
(:func:`agree_on_failure`), so that no rank waits for a collective that will not come.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pyro
import torch
from torch import Tensor

from inference.engine import distributed
from vi_models.errors import ConfigError, DataError, DegenerateFitWarning, NonFiniteLossError, VIModelsError
from vi_models.mixtures.base import MixtureModel
from vi_models.mixtures.chunks import sub_chunks

from .degenerate import worst_rows
from .sources import RowSource
from .steps import e_step, raise_non_finite

__all__ = ["INIT_SAMPLE_SIZE", "StatisticsEM", "agree_on_failure", "has_statistics", "statistics_pass"]

#: Rows of the sample the initialisation of a streamed or distributed fit sees at most.
INIT_SAMPLE_SIZE = 100_000
_KNOWN_ERRORS = {cls.__name__: cls for cls in (DataError, ConfigError, NonFiniteLossError, ValueError)}


def has_statistics(model: Any) -> bool:
    """Whether the model's M-step is a closed form of additive sufficient statistics (methods of its
    own, not :class:`~vi_models.mixtures.base.MixtureModel`'s abstract ones)."""
    names = ("sufficient_statistics", "m_step_from_statistics", "set_params")
    return all(callable(getattr(model, name, None)) and getattr(type(model), name, None) is not getattr(MixtureModel, name)
               for name in names)


def agree_on_failure(error: BaseException | None, parallel: bool) -> None:
    """Raise on every rank when any rank failed (one collective); ``error`` is this rank's, or None.

    The rank that failed raises its own exception; the others raise the same type (for the
    package's errors) with the first failing rank's message.
    """
    if not parallel:
        if error is not None:
            raise error
        return
    errors = distributed.all_gather_objects(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        r, (name, message) = failed[0]
        raise _KNOWN_ERRORS.get(name, RuntimeError)(f"rank {r} failed: {message}")


def statistics_pass(model: Any, source: RowSource, *, depth: int, shift: Tensor, template: dict[str, Tensor],
                    validate: bool, parallel: bool, n_components: int, sub_chunk: int | None = None,
                    ) -> tuple[dict[str, Tensor], float, list[int]]:
    """One E-step over this rank's chunks: the summed statistics, ``sum_i log p(x_i)`` (all ranks) and
    the first rows of this rank whose ``log p(x_i)`` is not finite.

    Each chunk is taken ``sub_chunk`` rows at a time (default
    :func:`~vi_models.mixtures.chunks.sub_chunk_rows`), so that the E-step's tables hold a fraction
    of a chunk; the sums are the same up to the order of the additions.
    """
    acc = {k: torch.zeros_like(v) for k, v in template.items()}
    total = torch.zeros(1, dtype=torch.float64, device=shift.device)
    bad: list[int] = []
    failure = None
    try:
        for offset, x in source.chunks():
            for rows in sub_chunks(x.shape[0], n_components, sub_chunk):
                with torch.no_grad(), pyro.validation_enabled(validate):
                    log_norm, resp = e_step(model, x[rows], log_space=False, max_plate_nesting=depth)
                    stats = model.sufficient_statistics(x[rows], resp.T, shift=shift)
                finite = torch.isfinite(log_norm)
                if len(bad) < 5 and not bool(finite.all()):
                    bad += (offset + rows.start + torch.nonzero(~finite).flatten()[: 5 - len(bad)]).tolist()
                total += log_norm.double().sum()
                for k, value in acc.items():
                    value += stats[k].to(value)
                del log_norm, resp, stats
            del x  # before the next chunk is read: one chunk in memory, not two
    except (VIModelsError, ValueError, RuntimeError) as exc:
        if not parallel:
            raise
        failure = exc
    if parallel:
        keys = sorted(acc)
        flat = torch.cat([acc[k].reshape(-1) for k in keys] + [total, total.new_tensor([failure is not None])])
        distributed.all_reduce_sum(flat)
        if flat[-1] > 0:
            agree_on_failure(failure, parallel)
        offset = 0
        for k in keys:
            acc[k] = flat[offset : offset + acc[k].numel()].view_as(acc[k])
            offset += acc[k].numel()
        total = flat[offset : offset + 1]
    return acc, float(total), bad


class StatisticsEM:
    """The E- and M-step of :func:`fit_em` for a model with sufficient statistics (module docstring).

    Args:
        model: the model (``sufficient_statistics``, ``m_step_from_statistics``, ``set_params``).
        source: all rows (this rank reads :meth:`RowSource.shard` of them; rank 0 also the sample).
        n_components: K, the values of the enumerated assignment.
        depth: the model's plate depth.
        reg_covar: passed to the M-step.
        parallel: whether several ranks take part.
        init_sample_size: rows of the initialisation sample at most (``None``: all).
        seed: seeds the sample.
        on_degenerate: what an M-step does with components that cannot go on (:mod:`.degenerate`).
        warm_start: no initialisation will run (the sample is not kept).

    Attributes:
        reseeds: ``(n_iter, component, row)`` of every re-seeding since the last :meth:`initialize`.
    """

    def __init__(self, model: Any, source: RowSource, *, n_components: int, depth: int, reg_covar: float,
                 parallel: bool, init_sample_size: int | None, seed: int | None,
                 on_degenerate: str = "reseed", warm_start: bool = False) -> None:
        self.model, self.depth, self.reg_covar, self.parallel = model, depth, reg_covar, parallel
        self.n_components, self.on_degenerate = n_components, on_degenerate
        self.n_rows, self.source, self.sample_size, self.seed = source.n_rows, source, init_sample_size, seed
        self.local = source.shard(distributed.rank(), distributed.world_size())
        self.reseeds: list[tuple[int, int, int]] = []
        head = source.head(1)
        # the reference point c of the moments and the data's scale (what "collapsed" is judged against)
        scale = torch.zeros(head.shape[1] + 1, dtype=torch.float64, device=head.device)
        self.sample = self._read_sample()
        if self.sample is not None:  # in float64, a sub-chunk at a time (no float64 copy of the sample)
            parts = list(sub_chunks(self.sample.shape[0], n_components))
            scale[:-1] = sum(self.sample[rows].double().sum(0) for rows in parts) / self.sample.shape[0]
            square = sum((self.sample[rows].double() - scale[:-1]).square().sum(0) for rows in parts)
            scale[-1] = (square / max(self.sample.shape[0] - 1, 1)).mean()
        distributed.broadcast_tensors([scale])
        self.shift, self.data_variance = scale[:-1].to(head.dtype), float(scale[-1])
        self._sample_kept = not warm_start
        if warm_start:
            self.sample = None
        with torch.no_grad():
            resp = torch.full((1, n_components), 1.0 / n_components, dtype=head.dtype, device=head.device)
            shapes = model.sufficient_statistics(head, resp, shift=self.shift)
        self.template = {k: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for k, v in shapes.items()}

    def _read_sample(self) -> Tensor | None:
        """Rank 0's initialisation sample (``None`` on the other ranks); a failure stops every rank."""
        sample, failure = None, None
        if distributed.rank() == 0:
            try:
                sample = self.source.sample(self.sample_size, self.seed)
            except (VIModelsError, ValueError, RuntimeError) as exc:
                failure = exc
        agree_on_failure(failure, self.parallel)
        return sample

    def initialize(self, run_init: Any) -> None:
        """``run_init(rows)`` on rank 0's sample, then every rank takes rank 0's parameters.

        The sample is dropped after the first initialisation (and read again for the next ones), so
        that the iterations hold one chunk, not a chunk and the sample.
        """
        # (a flag the same on every rank: reading the sample is a collective)
        sample = self.sample if self._sample_kept else self._read_sample()
        self.sample, self._sample_kept, self.reseeds = None, False, []
        failure = None
        if distributed.rank() == 0:
            try:
                run_init(sample)
            except (VIModelsError, ValueError, RuntimeError, TypeError) as exc:
                failure = exc
        del sample
        agree_on_failure(failure, self.parallel)
        if self.parallel:
            state = self.model.state_dict()
            distributed.broadcast_tensors([state[k] for k in sorted(state)])

    def step(self, n_iter: int, validate: bool) -> float:
        """One EM iteration; returns the lower bound at the parameters the E-step used."""
        stats, total, bad = statistics_pass(self.model, self.local, depth=self.depth, shift=self.shift,
                                            template=self.template, validate=validate, parallel=self.parallel,
                                            n_components=self.n_components)
        lower_bound = total / self.n_rows
        if not math.isfinite(lower_bound):
            raise_non_finite(lower_bound, n_iter, bad)
        with torch.no_grad():
            params = self.model.m_step_from_statistics(stats, shift=self.shift, reg_covar=self.reg_covar)
            if callable(getattr(self.model, "degenerate_components", None)):
                params = self._mend(params, n_iter)
            self.model.set_params(**params)
        return lower_bound

    def _mend(self, params: dict[str, Tensor], n_iter: int) -> dict[str, Tensor]:
        """``params`` with the degenerate components re-seeded, kept, or an error (``on_degenerate``).

        The decision is taken from reduced figures and the re-seeding points from every rank's rows,
        so every rank writes the same parameters.
        """
        components = self.model.degenerate_components(params, data_variance=self.data_variance)
        if not components:
            return params
        if self.on_degenerate == "raise":
            raise DataError(
                f"expected components an M-step can go on with (on_degenerate='raise'), got at EM iteration {n_iter}, "
                f"component(s) {components} collapsed (a covariance that is not positive definite even with jitter, "
                f"or a point mass with reg_covar={self.reg_covar:g}); increase reg_covar, scale the input data, or "
                "pass on_degenerate='reseed'"
            )
        if self.on_degenerate == "keep":
            warnings.warn(
                f"at EM iteration {n_iter}, component(s) {components} collapsed; they keep their previous means and "
                "covariances (on_degenerate='keep'); increase reg_covar or scale the input data",
                DegenerateFitWarning, stacklevel=4)
            return self.model.replace_components(params, components)
        rows, points = worst_rows(self.model, self.local, len(components), depth=self.depth,
                                  n_components=self.n_components)
        params = self.model.replace_components(params, components, points, min_weight=1.0 / self.n_rows)
        self.reseeds += [(n_iter, k, row) for k, row in zip(components, rows)]
        warnings.warn(
            f"at EM iteration {n_iter}, component(s) {components} collapsed; re-seeded at the worst-explained "
            f"observation(s) {rows} with the pooled covariance of the others (on_degenerate='reseed'; 'raise' "
            "stops instead); increase reg_covar or scale the input data",
            DegenerateFitWarning, stacklevel=4)
        return params
