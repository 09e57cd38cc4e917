r"""A Pyro loss traced once into a TorchScript graph: the model/guide pair without Python per step.

An ELBO step through Pyro runs the model and guide programs in Python: every ``pyro.sample``
passes the handler stack, the traces are built, their log-densities and KLs collected. For a
network that costs a few milliseconds a step, that bookkeeping costs as much again. Pyro's own
answer is ``JitTrace_ELBO``: record the loss once with :func:`torch.jit.trace` and replay the
recorded graph. Pyro's JIT ELBOs read parameters from the global param store; the package's
parameters live in modules (``module_local_params``), so :class:`TracedLoss` does the same
recording with the parameters as explicit inputs of the graph.

What the recording keeps and what it does not (as Pyro's JIT ELBOs):

* every tensor operation, random draws included (a replay draws fresh noise and time steps);
  parameters are inputs, so gradients reach them; other tensors (schedule tables) are constants;
* not Python control flow on tensor *values*, nor checks: validation and shape checks run when
  a signature is first recorded. A program whose structure depends on the values of its inputs
  must not be traced.

The recorded graph is replayed by TorchScript's plain interpreter, not its optimising executor:
the operations run in C++ without Python, and autograd records the same backward nodes as in
eager mode, so gradients are those of the uncompiled programs.

A graph is recorded per signature: the shapes, dtypes and devices of the arguments (a smaller
last batch, a move to another device or dtype record a new one), the identity of the model and
guide, and whether validation is on. Up to ``max_graphs`` are kept.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from torch import Tensor

from vi_models.errors import ConfigError

__all__ = ["TracedLoss", "collecting_params"]

LossFn = Callable[[Callable, Callable, tuple], "tuple[Tensor, Tensor]"]


class TracedLoss:
    """``loss_fn(model, guide, args) -> (loss, surrogate)`` recorded once per signature and replayed.

    Parameters
    ----------
    loss_fn
        The uncompiled loss: the loss value and the differentiable surrogate, both tensors.
    params_fn
        ``params_fn(model, guide, args) -> tensors``: every tensor that requires a gradient in
        the loss (the parameters); they become inputs of the recorded graph.
    max_graphs
        Recorded graphs kept (most recently used first out).

    Examples
    --------
    >>> traced = TracedLoss(elbo._loss_and_surrogate, elbo._trainable)   # doctest: +SKIP
    >>> loss, surrogate = traced(model, guide, (batch,))                  # doctest: +SKIP
    >>> surrogate.backward()                                              # doctest: +SKIP
    """

    def __init__(self, loss_fn: LossFn, params_fn: Callable[[Callable, Callable, tuple], Sequence[Tensor]],
                 *, max_graphs: int = 4) -> None:
        if max_graphs < 1:
            raise ConfigError(f"expected max_graphs >= 1, got {max_graphs}")
        self.loss_fn = loss_fn
        self.params_fn = params_fn
        self.max_graphs = int(max_graphs)
        self._graphs: OrderedDict[tuple, tuple[Any, Any, tuple[Tensor, ...], Any]] = OrderedDict()
        #: Graphs recorded so far (for tests and diagnostics).
        self.num_traces = 0

    @staticmethod
    def supports(args: tuple, kwargs: dict) -> bool:
        """Whether a call can be recorded: tensor arguments only, no keyword arguments."""
        return not kwargs and len(args) > 0 and all(isinstance(a, Tensor) for a in args)

    def __call__(self, model: Callable, guide: Callable, args: tuple) -> tuple[Tensor, Tensor]:
        key = (id(model), id(guide), is_validation_enabled(),
               tuple((a.shape, a.dtype, a.device) for a in args))
        entry = self._graphs.get(key)
        if entry is None or entry[0] is not model or entry[1] is not guide:
            entry = self._record(model, guide, args)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        _, _, params, graph = entry
        # The plain interpreter: each recorded operation runs as in eager mode and autograd records
        # its usual backward nodes. TorchScript's optimising executor would instead differentiate
        # the graph symbolically into decomposed backward operations, which for these small graphs
        # costs more than it saves (measured: 1.25x -> 1.06x of a hand-written loop's step time).
        with torch.jit.optimized_execution(False):
            return graph(*args, *params)

    def _record(self, model: Callable, guide: Callable, args: tuple) -> tuple[Any, Any, tuple[Tensor, ...], Any]:
        params = tuple(self.params_fn(model, guide, args))
        n_args = len(args)
        loss_fn = self.loss_fn

        def run(*inputs: Tensor) -> tuple[Tensor, Tensor]:
            loss, surrogate = loss_fn(model, guide, inputs[:n_args])
            return loss, surrogate

        with torch.random.fork_rng(devices=_devices(args)), warnings.catch_warnings():
            # torch.jit.trace (what Pyro's JIT ELBOs use) warns that it is deprecated in favour of
            # torch.compile; its tracer warnings flag the value-dependent checks that are meant to
            # run once (see the module docstring).
            warnings.simplefilter("ignore")
            graph = torch.jit.trace(run, (*args, *params), check_trace=False, strict=False)
        self.num_traces += 1
        return model, guide, params, graph


def _devices(args: tuple) -> list[int]:
    """CUDA device indices among the arguments (for ``fork_rng``)."""
    return sorted({a.device.index or 0 for a in args if isinstance(a, Tensor) and a.device.type == "cuda"})


def collecting_params() -> bool:
    """Whether a handler that records param sites (``poutine.trace(param_only=True)``) is active:
    then a loss runs its programs, so that the parameters are seen, instead of a recorded graph."""
    return any(isinstance(h, TraceMessenger) and h.param_only for h in _PYRO_STACK)
