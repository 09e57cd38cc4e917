"""``vi-models fit kde``: kernel density estimation (closed-form fit, exact density)."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .base import Family, register, save_fitted


class KDEFamily(Family):
    """Kernel density estimate; its 'fit' stores the data and chooses the bandwidth."""

    name = "kde"
    help = "kernel density estimation (Gaussian and other kernels; bandwidth by Scott, Silverman or CV)"
    estimator = "exact"
    distributed = False
    distributed_reason = "its fit stores every training point and searches the bandwidth on one process"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("kde")
        group.add_argument("--kernel", default="gaussian",
                           choices=["gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine"])
        group.add_argument("--bandwidth", default="cv",
                           help="a number, or scott, silverman, cv (leave-one-out likelihood; default)")

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        bandwidth: Any = args.bandwidth
        try:
            bandwidth = float(bandwidth)
        except ValueError:
            pass
        return {"kernel": args.kernel, "bandwidth": bandwidth}

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        from vi_models import KernelDensity

        flat = bundle.train.reshape(bundle.train.shape[0], -1)
        return KernelDensity(config["kernel"], config["bandwidth"], device=device, dtype=flat.dtype), None

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        # The validation rows are data too: a KDE has no training loop to monitor.
        parts = [bundle.train] + ([fit_options["validation_data"]] if fit_options.get("validation_data") is not None else [])
        x = torch.cat(parts).reshape(sum(p.shape[0] for p in parts), -1)
        model.fit(x)
        score = float(model.score(x[: min(len(x), 5000)]))
        history = {"loss": [], "train_log_likelihood": [score], "bandwidth": [model.bandwidth_]}
        save_fitted(run, model, history=history)
        return history

    def load_state(self, model: Any, guide: Any, path: Any, device: torch.device) -> None:
        from inference.engine.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(path, map_location=device)["model"])

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int) -> torch.Tensor:
        with torch.no_grad():
            return model.log_prob(data.reshape(data.shape[0], -1))

    def sample(self, model: Any, guide: Any, n: int, config: dict[str, Any], **options: Any) -> torch.Tensor:
        return model.sample(n)


register(KDEFamily())
