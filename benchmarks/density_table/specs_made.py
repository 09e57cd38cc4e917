"""The MADE row: Gaussian-mixture conditionals on the toys; on the digits an ensemble of categorical MADEs over
4 orderings, each member fitted separately."""

from __future__ import annotations

from typing import Any

import torch
from _common import redequantize

from density_table.base import Context, adamw, budget_fit, exact_row, validation_split


def run_made(ctx: Context) -> dict[str, Any]:
    from vi_models import MADE

    if ctx.toy:
        torch.manual_seed(0)
        model = MADE(2, (128, 128), conditional="gaussian_mixture", num_components=10)
        fit_s = budget_fit(model, None, ctx.train, 120, loss="elbo", batch_size=512, lr=3e-3,
                           optimizer=adamw(3e-3, 1e-4), clip_norm=5.0)
        label, config = "MADE, 10-component Gaussian-mixture conditionals, 128x128", "120 s budget"
    else:
        train, val = validation_split(ctx.train)
        members, fit_s = [], 0.0
        for m, order in enumerate(MADE(64, (64,), num_orders=4).orders):
            torch.manual_seed(m)
            member = MADE(64, (1024,), conditional="categorical", num_levels=17, order=order, skip_connections=False)
            fit_s += budget_fit(member, None, train, 180, loss="elbo", batch_size=128, lr=1e-3,
                                optimizer=adamw(1e-3, 1e-2), batch_transform=redequantize(ctx.bundle),
                                validation_data=val, early_stopping=15)
            members.append(member)
        model = MADE.from_members(members)
        label = "MADE ensemble of 4 orderings (categorical, 17 levels, 1024 hidden), members fitted separately"
        config = "180 s budget per member, early stopping on 10% of train"
    return exact_row(ctx, model, label, config, fit_s, discrete=model.is_discrete)
