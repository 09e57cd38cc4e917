"""Small helpers over Pyro traces shared by the engine's modules."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample


def plate_depth(model: Callable, guide: Callable | None, args: tuple) -> int:
    """Deepest plate dimension used by the model or guide on ``args`` (at least 1)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        guide_tr = poutine.trace(guide).get_trace(*args) if guide is not None else None
        fn = poutine.replay(model, trace=guide_tr) if guide_tr is not None else model
        model_tr = poutine.trace(poutine.block(fn, hide_types=["param"])).get_trace(*args)
    depth = 0
    for tr in (model_tr, guide_tr):
        if tr is None:
            continue
        for site in tr.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized and frame.dim is not None:
                        depth = max(depth, -frame.dim)
    return max(depth, 1)
