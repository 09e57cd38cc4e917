"""Parameters and their health: discovery, optimizers, non-finite diagnostics (used by ``fit``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Union

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from torch import nn

from vi_models.errors import ConfigError

OptimizerSpec = Union[str, Callable[..., torch.optim.Optimizer]]
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def collect_params(
    elbo: ELBO, model: Callable, guide: Callable, args: tuple, modules: Sequence[Any]
) -> list[torch.Tensor]:
    """All trainable leaf tensors: module parameters plus ``pyro.param`` sites seen in a trace."""
    with torch.random.fork_rng(devices=[]), poutine.trace(param_only=True) as capture:
        elbo.loss(model, guide, *args)
    found: dict[int, torch.Tensor] = {}
    for module in modules:
        if isinstance(module, nn.Module):
            for p in module.parameters():
                if p.requires_grad:
                    found[id(p)] = p
    for site in capture.trace.nodes.values():
        value = site["value"]
        leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
        if leaf is not None and leaf.requires_grad and leaf.is_leaf:
            found.setdefault(id(leaf), leaf)
    return list(found.values())


def free_params(params: list[torch.Tensor], modules: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Parameters living in Pyro's param store rather than in a module (for checkpoints)."""
    in_modules = {id(p) for m in modules if isinstance(m, nn.Module) for p in m.parameters()}
    store = pyro.get_param_store()
    out = {}
    for name in store.keys():
        leaf = store[name].unconstrained()
        if id(leaf) not in in_modules and any(leaf is p for p in params):
            out[name] = leaf
    return out


def make_optimizer(spec: OptimizerSpec, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if isinstance(spec, str):
        if spec.lower() not in OPTIMIZERS:
            raise ConfigError(
                f"expected optimizer to be one of {', '.join(map(repr, OPTIMIZERS))} or a callable "
                f"params -> torch.optim.Optimizer, got {spec!r}"
            )
        return OPTIMIZERS[spec.lower()](params, lr=lr)
    if inspect.isclass(spec) and issubclass(spec, torch.optim.Optimizer):
        return spec(params, lr=lr)
    if callable(spec):
        opt = spec(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ConfigError(f"expected optimizer(params) to return a torch.optim.Optimizer, got {type(opt).__name__}")
        return opt
    raise ConfigError(f"expected optimizer as a name or callable, got {spec!r}")


def nonfinite_sites(model: Callable, guide: Callable, args: tuple) -> list[str]:
    """Names of sample sites whose log-density is NaN/inf on one fresh trace (for error messages)."""
    bad: list[str] = []
    try:
        with torch.no_grad():
            guide_tr = poutine.trace(guide).get_trace(*args)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args)
            for label, tr in (("model", model_tr), ("guide", guide_tr)):
                for name, site in tr.nodes.items():
                    if site["type"] == "sample":
                        lp = site["fn"].log_prob(site["value"])
                        if not bool(torch.isfinite(lp).all()):
                            bad.append(f"{label} site {name!r}")
                    elif site["type"] == "param":
                        if not bool(torch.isfinite(site["value"]).all()):
                            bad.append(f"{label} param {name!r}")
    except Exception as exc:  # a model that cannot even be traced now
        bad.append(f"(tracing failed: {type(exc).__name__}: {exc})")
    return bad


def nonfinite_params(modules: Sequence[Any], free: dict[str, torch.Tensor]) -> list[str]:
    # One fused reduction over every tensor first (the common, all-finite case costs one pass
    # and no boolean copies); names are looked up only when something is off.
    tensors = [p.detach() for m in modules if isinstance(m, nn.Module) for p in m.parameters()]
    tensors += [p.detach() for p in free.values()]
    if not tensors or bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()):
        return []
    names = []
    for label, module in zip(("model", "guide"), modules):
        if isinstance(module, nn.Module):
            for pname, p in module.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    names.append(f"{label}.{pname}")
    names += [n for n, p in free.items() if not bool(torch.isfinite(p).all())]
    return names


def end_of_epoch(callbacks: Sequence[Any], epoch: int, logs: dict[str, float], *, stop: bool = False) -> bool:
    """Call every callback (``cb.on_epoch_end(epoch, logs)`` or ``cb(epoch, logs)``); whether to stop.

    Every callback runs even when an earlier one (or ``stop``) already asks to stop, so
    loggers see the last epoch too.
    """
    for cb in callbacks:
        hook = getattr(cb, "on_epoch_end", cb)
        if hook(epoch, logs):
            stop = True
    return stop


def checkpoint_due(epoch: int, every: int, epochs: int, stop: bool) -> bool:
    """Whether a checkpoint is written after ``epoch`` (1-based): every ``every`` epochs, at the end, on a stop."""
    return epoch % every == 0 or epoch == epochs or stop
