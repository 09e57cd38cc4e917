"""``vi-models fit flow``: normalizing flows (RealNVP, spline, MAF) fitted by exact maximum likelihood.

The flow is a guide-free Pyro model whose only sample site is the observed ``x``, so
``inference.fit(flow, None, data, loss="elbo")`` maximises the exact ``log p(x)`` (change of
variables, THEORY T22). On dequantised data (the digits) the flow lives on ``[0, 1)^D``
(``domain="unit"``), sees fresh dequantisation noise every batch, and ``evaluate`` reports the
dequantisation bound on bits/dim (Theis et al. 2016); elsewhere the density is exact.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from inference.em import initialize_flow
from inference.engine.batches import GaussianNoise
from vi_models.errors import ConfigError

from .base import register
from .exact import ExactDensityFamily
from .vae import _fresh_dequantisation

#: ``--flow`` choices and the classes of :mod:`vi_models.flows` they build.
FLOW_KINDS = ("realnvp", "spline", "maf")
#: Default number of layers per kind (RealNVP needs more affine layers than a spline flow).
DEFAULT_LAYERS = {"realnvp": 8, "spline": 4, "maf": 5}


def check_flow_config(config: dict[str, Any], dim: int) -> None:
    """Validate the flow's sizes and the data dimension before anything is built.

    Raises:
        ConfigError: a non-positive size, or data with fewer than 2 dimensions.
    """
    for key in ("num_layers", "count_bins", "num_components"):
        if key in config and (not isinstance(config[key], int) or config[key] < 1):
            raise ConfigError(f"expected --{key.replace('_', '-')} to be a whole number >= 1, got {config[key]!r}")
    if any(h < 1 for h in config.get("hidden_dims", [])):
        raise ConfigError(f"expected --hidden-dims to be widths >= 1, got {config['hidden_dims']}")
    if dim < 2:
        raise ConfigError(
            f"expected data with at least 2 dimensions for a flow (coupling layers split x), got {dim}; "
            "use `vi-models fit kde` or `gmm` for 1-D data"
        )


class FlowFamily(ExactDensityFamily):
    """Normalizing flow fitted by maximum likelihood; exact log-density by change of variables."""

    name = "flow"
    help = "normalizing flow (RealNVP affine coupling, rational-quadratic spline coupling, or MAF); exact density"
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("flow")
        group.add_argument("--flow", choices=FLOW_KINDS, default="spline",
                           help="layer type: realnvp (affine coupling), spline (rational-quadratic coupling; "
                                "default) or maf (masked autoregressive)")
        group.add_argument("--num-layers", type=int, default=None,
                           help="number of layers (default 8 realnvp, 4 spline, 5 maf)")
        group.add_argument("--hidden-dims", type=int, nargs="+", default=None,
                           help="hidden widths of each conditioner network (default 64 64 in 2-D, 256 256 otherwise)")
        group.add_argument("--count-bins", type=int, default=8, help="spline bins (spline only; default 8)")
        group.add_argument("--bound", type=float, default=4.0, help="half-width of the spline box (spline only)")
        group.add_argument("--weight-decay", type=float, default=None,
                           help="AdamW decoupled weight decay (default 1e-2 on dequantised images, 1e-4 otherwise)")
        group.add_argument("--base", choices=("normal", "mixture"), default="normal",
                           help="base distribution: normal (N(0, I); default) or mixture (a learned diagonal "
                                "Gaussian mixture started from EM on the data; for well-separated modes)")
        group.add_argument("--num-components", type=int, default=8,
                           help="components of the mixture base (--base mixture; default 8)")
        group.add_argument("--noise-std", type=float, default=0.0,
                           help="noise regularisation: Gaussian noise of this std (data units) added to every "
                                "training batch, fresh each time (inference.GaussianNoise); curbs overfitting of "
                                "small data sets at a bias of order std^2. Default 0 (off); not for dequantised data")
        group.add_argument("--jit", action="store_true", help="record the training loss once per batch shape as a TorchScript graph and replay it (fit(..., jit=True)): the same loss and gradients, less Python per step")

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"jit": bool(getattr(args, "jit", False)), "flow": args.flow, "num_layers": args.num_layers, "hidden_dims": args.hidden_dims,
                "count_bins": args.count_bins, "bound": args.bound, "weight_decay": args.weight_decay,
                "noise_std": args.noise_std, "base": args.base, "num_components": args.num_components}

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        from vi_models import MAF, RealNVP, SplineFlow

        dim = int(torch.Size(bundle.data_shape).numel())
        kind = config.get("flow", "spline")
        if kind not in FLOW_KINDS:
            raise ConfigError(f"expected --flow among {', '.join(FLOW_KINDS)}, got {kind!r}")
        # Resolve the defaults once, so config.json records what was built.
        if config.get("num_layers") is None:
            config["num_layers"] = DEFAULT_LAYERS[kind]
        if config.get("hidden_dims") is None:
            config["hidden_dims"] = [64, 64] if dim <= 2 else [256, 256]
        check_flow_config(config, dim)
        config["data_shape"] = list(bundle.data_shape)
        if kind == "spline" and not config.get("bound", 4.0) > 0:
            raise ConfigError(f"expected --bound > 0, got {config['bound']}")
        noise = config.get("noise_std", 0.0)
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ConfigError(f"expected --noise-std to be a finite number >= 0, got {noise!r}")
        if noise > 0 and bundle.kind == "dequantized":
            raise ConfigError(
                f"--noise-std {noise} applies to real-valued data, but {bundle.name!r} is dequantised levels: "
                "its training batches already get fresh uniform noise inside each level; drop --noise-std"
            )
        domain = "unit" if bundle.kind == "dequantized" else "real"
        base = config.get("base", "normal")
        if base not in ("normal", "mixture"):
            raise ConfigError(f"expected --base normal or mixture, got {base!r}")
        common = {"domain": domain, "device": device, "dtype": bundle.train.dtype, "base": base,
                  "num_components": config.get("num_components", 8)}
        hidden = tuple(config["hidden_dims"])
        permutation = "reverse" if dim <= 2 else "random"
        if kind == "realnvp":
            model = RealNVP(dim, config["num_layers"], hidden, permutation=permutation, **common)
        elif kind == "spline":
            model = SplineFlow(dim, config["num_layers"], hidden, count_bins=config.get("count_bins", 8),
                               bound=float(config.get("bound", 4.0)), permutation=permutation, **common)
        else:
            model = MAF(dim, config["num_layers"], hidden, **common)
        return model, None

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        x = bundle.train.reshape(bundle.train.shape[0], -1)
        if not fit_options.get("resume"):
            initialize_flow(model, x)  # ActNorm standardises the data on entry (Glow, Sec. 3.1); EM on a mixture base
        dequantized = bundle.kind == "dequantized"
        decay = config.get("weight_decay")
        decay = (1e-2 if dequantized else 1e-4) if decay is None else float(decay)
        return self.fit_exact(model, x, run=run, fit_options=fit_options, weight_decay=decay, jit=bool(config.get("jit")),
                              batch_transform=_batch_transform(bundle, float(config.get("noise_std", 0.0))))

    def is_discrete(self, model: Any) -> bool:
        return False  # a density: on dequantised data bits/dim is the dequantisation bound


def _batch_transform(bundle: Any, noise_std: float) -> Any:
    """Fresh dequantisation noise on levels, Gaussian noise regularisation if asked, else none."""
    if bundle.kind == "dequantized":
        return _fresh_dequantisation(bundle.num_levels)
    return GaussianNoise(noise_std) if noise_std > 0 else None


register(FlowFamily())
