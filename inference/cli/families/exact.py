"""Shared pieces of the families fitted by exact maximum likelihood with no guide (flows, MADE)."""

from __future__ import annotations

from typing import Any

import torch

from inference.engine.fit import fit

from .base import Family


class ExactDensityFamily(Family):
    """A guide-free Pyro model whose only sample site is the observed ``x``: the ELBO is ``log p(x)``.

    Subclasses implement :meth:`build` and :meth:`train` (usually a call of :meth:`fit_exact`);
    evaluation and sampling are the model's own ``log_prob`` and ``sample`` on flat rows.
    """

    estimator = "exact"

    def fit_exact(self, model: Any, x: torch.Tensor, *, run: Any, fit_options: dict[str, Any],
                  weight_decay: float, batch_transform: Any = None, jit: bool = False) -> dict[str, list[float]]:
        """``inference.fit`` of ``log p(x)`` on flat rows ``x``: AdamW, cosine decay, gradient clipping."""
        lr, epochs = fit_options["lr"], fit_options["epochs"]
        options = dict(fit_options)
        validation = options.pop("validation_data", None)
        result = fit(
            model, None, x, loss="elbo",
            optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
            scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
            clip_norm=5.0,  # exp(s) of an affine coupling can overflow mid-run otherwise
            batch_transform=batch_transform,
            validation_data=None if validation is None else validation.reshape(validation.shape[0], -1),
            checkpoint_dir=run.path, check_convergence=False, jit=jit, **options,
        )
        return result.history

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int) -> torch.Tensor:
        x = data.reshape(data.shape[0], -1)
        with torch.no_grad():
            return torch.cat([model.log_prob(chunk) for chunk in x.split(10_000)])

    def sample(self, model: Any, guide: Any, n: int, config: dict[str, Any], **options: Any) -> torch.Tensor:
        return model.sample(n).reshape(n, *config.get("data_shape", [model.dim]))
