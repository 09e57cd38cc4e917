"""``vi-models fit made``: MADE, an exact autoregressive density ``p(x) = prod_j p(x_j | x_<j)``.

Conditionals by data kind (``--conditional auto``): categorical over the grey levels for
dequantised images (an exact discrete model: bits/dim are exact, not a bound), Bernoulli for
binary data, a Gaussian mixture per coordinate otherwise. Fitted by exact maximum likelihood
through ``inference.fit`` (the model's only sample site is the observed one); ``--num-orders
M`` fits the uniform mixture of ``M`` MADEs over variable orderings (Germain et al. 2015,
Sec. 4.2). Sampling is ancestral, one network pass per coordinate (THEORY T25).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from vi_models.errors import ConfigError

from .base import register
from .exact import ExactDensityFamily

#: The conditional chosen by ``--conditional auto`` for each kind of data.
CONDITIONAL_FOR_KIND = {"dequantized": "categorical", "binary": "bernoulli", "continuous": "gaussian_mixture"}


class MADEFamily(ExactDensityFamily):
    """Masked autoregressive density estimator; exact log-likelihood, ancestral sampling."""

    name = "made"
    help = "MADE autoregressive density (categorical, Bernoulli or Gaussian-mixture conditionals); exact"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("made")
        group.add_argument("--conditional", default="auto",
                           choices=["auto", "categorical", "bernoulli", "gaussian_mixture"],
                           help="conditional family; auto: categorical for dequantised images, bernoulli for "
                                "binary data, gaussian_mixture otherwise")
        group.add_argument("--hidden-dims", type=int, nargs="+", default=None,
                           help="hidden widths, each >= the data dimension (default 1024 above 16 dimensions, 128 128 otherwise)")
        group.add_argument("--num-components", type=int, default=10,
                           help="Gaussian components per coordinate (gaussian_mixture; default 10)")
        group.add_argument("--num-orders", type=int, default=1,
                           help="number of variable orderings in the ensemble (default 1: the natural order)")
        group.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW decoupled weight decay (default 1e-2)")
        group.add_argument("--jit", action="store_true", help="record the training loss once per batch shape as a TorchScript graph and replay it (fit(..., jit=True)): the same loss and gradients, less Python per step")

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"jit": bool(getattr(args, "jit", False)), "conditional": args.conditional, "hidden_dims": args.hidden_dims,
                "num_components": args.num_components, "num_orders": args.num_orders,
                "weight_decay": args.weight_decay}

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        from vi_models import MADE

        dim = int(torch.Size(bundle.data_shape).numel())
        if dim < 2:
            raise ConfigError(f"expected data with at least 2 dimensions for MADE, got {dim}; use `vi-models fit kde` "
                              "or `gmm` for 1-D data")
        conditional = config.get("conditional", "auto")
        if conditional == "auto":
            conditional = config["conditional"] = CONDITIONAL_FOR_KIND[bundle.kind]
        if conditional == "categorical" and bundle.kind != "dequantized":
            raise ConfigError(
                f"expected dequantised image data for --conditional categorical, got {bundle.kind} data "
                f"({bundle.name}); use --conditional gaussian_mixture (or bernoulli for 0/1 data)"
            )
        if config.get("hidden_dims") is None:
            config["hidden_dims"] = [1024] if dim > 16 else [128, 128]
        config["data_shape"] = list(bundle.data_shape)
        for key in ("num_components", "num_orders"):
            if not isinstance(config.get(key), int) or config[key] < 1:
                raise ConfigError(f"expected --{key.replace('_', '-')} >= 1, got {config.get(key)!r}")
        model = MADE(dim, tuple(config["hidden_dims"]), conditional=conditional,
                     num_components=config["num_components"], num_levels=bundle.num_levels or 2,
                     num_orders=config["num_orders"], skip_connections=conditional != "categorical",
                     device=device, dtype=bundle.train.dtype)
        return model, None

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        x = bundle.train.reshape(bundle.train.shape[0], -1)
        return self.fit_exact(model, x, run=run, fit_options=fit_options, jit=bool(config.get("jit")),
                              weight_decay=float(config.get("weight_decay", 1e-2)))


register(MADEFamily())
