"""``vi-models fit gmm``: Gaussian mixtures by EM through Pyro's enumeration, or by SVI.

``--method em`` (default) runs :func:`inference.fit_em`; ``--method svi`` fits the Bayesian
mixture (Dirichlet weights, Normal means, inverse-Gamma/LKJ scales) with an ``AutoNormal``
guide over the globals and the assignments summed out by ``TraceEnum_ELBO``; the density
reported afterwards is the mixture at the posterior median. ``--average M`` runs EM from M
initialisations (seeds ``seed, ..., seed + M - 1``) and keeps their equal-weight average, a
mixture of M K components (:func:`inference.fit_em_average`), instead of the best run.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal

from inference.diagnostics.plots import plot_mixture_ellipses
from inference.em.average import fit_em_average
from inference.em.loop import fit_em
from inference.engine.fit import fit
from vi_models.errors import ConfigError

from .base import Family, register, save_fitted

#: Data points drawn under the component ellipses.
ELLIPSE_OBSERVATIONS = 2000


class GMMFamily(Family):
    """Gaussian mixture model (EM or SVI with enumeration); exact log-density."""

    name = "gmm"
    help = "Gaussian mixture fitted by EM through Pyro's enumeration (or SVI with --method svi)"
    estimator = "exact"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("gmm")
        group.add_argument("-k", "--n-components", type=int, default=10, help="number of components (default 10)")
        group.add_argument("--covariance", default="full", choices=["full", "diag", "spherical", "tied"])
        group.add_argument("--method", default="em", choices=["em", "svi"], help="EM (default) or Bayesian SVI")
        group.add_argument("--n-init", type=int, default=1, help="EM restarts; the best is kept")
        group.add_argument("--average", type=int, default=1,
                           help="EM runs from M seeds whose densities are averaged (a mixture of M*K components; "
                                "lower variance than one run; default 1)")
        group.add_argument("--max-iter", type=int, default=200, help="EM iterations at most")
        group.add_argument("--tol", type=float, default=1e-3, help="EM tolerance on the lower bound")
        group.add_argument("--reg-covar", type=float, default=1e-6, help="added to covariance diagonals")
        group.add_argument("--init", default="k-means++", choices=["k-means++", "kmeans", "random_from_data", "random"])

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"n_components": args.n_components, "covariance": args.covariance, "method": args.method,
                "n_init": args.n_init, "max_iter": args.max_iter, "tol": args.tol, "reg_covar": args.reg_covar,
                "init": args.init, "average": _check_average(args)}

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        from vi_models import GaussianMixture

        d = int(torch.tensor(bundle.data_shape).prod())
        bayes = config.get("method", "em") == "svi"
        m = int(config.get("average", 1))
        if m > 1:  # the average of M fits: M K components; tied members average to full covariances
            covariance = "full" if config["covariance"] == "tied" else config["covariance"]
            return GaussianMixture(m * config["n_components"], d, covariance=covariance, device=device,
                                   dtype=torch.float64), None
        model = GaussianMixture(config["n_components"], d, covariance=config["covariance"],
                                priors=True if bayes else None, device=device, dtype=torch.float64)
        if not bayes:
            return model, None
        x = bundle.train.reshape(bundle.train.shape[0], -1).to(torch.float64)
        guide = AutoNormal(poutine.block(model, hide=["assignment"]),
                           init_loc_fn=model.init_loc_fn(x, init=config.get("init", "k-means++"), seed=0))
        guide(x[:2])  # create the guide's parameters so that a checkpoint can be loaded into them
        return model, guide

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        x = bundle.train.reshape(bundle.train.shape[0], -1).to(torch.float64)
        if guide is None:
            # EM has no training curve to watch: the validation rows are training data too.
            if fit_options.get("validation_data") is not None:
                val = fit_options["validation_data"]
                x = torch.cat([x, val.reshape(val.shape[0], -1).to(x)])
            options = {"init": config.get("init", "k-means++"), "max_iter": config.get("max_iter", 200),
                       "tol": config.get("tol", 1e-3), "reg_covar": config.get("reg_covar", 1e-6),
                       "device": fit_options["device"]}
            if int(config.get("average", 1)) > 1:
                from vi_models import GaussianMixture

                member = GaussianMixture(config["n_components"], x.shape[1], covariance=config["covariance"],
                                         device=x.device, dtype=torch.float64)
                avg = fit_em_average(member, x, int(config["average"]), seed=fit_options["seed"], **options)
                with torch.no_grad():
                    model.set_params(weights=avg.weights, means=avg.means, covariances=avg.covariances)
                    history = {"loss": [-float(model.log_prob(x).mean())], "converged": [float(avg.converged_)]}
            else:
                result = fit_em(model, x, n_init=config.get("n_init", 1), seed=fit_options["seed"],
                                progress=fit_options["progress"], **options)
                history = {"loss": [-v for v in result.lower_bounds_], "converged": [float(result.converged_)]}
            save_fitted(run, model, history=history)
            return history
        options = {k: v for k, v in fit_options.items() if k not in ("validation_data", "early_stopping")}
        result = fit(model, guide, x, loss="enum", checkpoint_dir=run.path, **options)
        model.use_point_estimate(guide, x[:2])
        return result.history

    def load_state(self, model: Any, guide: Any, path: Any, device: torch.device) -> None:
        super().load_state(model, guide, path, device)
        if guide is not None:
            model.use_point_estimate(guide)

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int) -> torch.Tensor:
        with torch.no_grad():
            return model.log_prob(data.reshape(data.shape[0], -1).to(torch.float64))

    def sample(self, model: Any, guide: Any, n: int, config: dict[str, Any], **options: Any) -> torch.Tensor:
        return model.sample(n).to(torch.get_default_dtype())

    def figures(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any]) -> dict[str, Any]:
        if model.n_features != 2:
            return {}  # ellipses need 2-D data
        x = bundle.train.reshape(bundle.train.shape[0], -1)[:ELLIPSE_OBSERVATIONS]
        with torch.no_grad():
            figure = plot_mixture_ellipses(x, model.means, model.covariances, model.weights,
                                           covariance_type=model.covariance)
        return {"mixture_ellipses.png": figure}


def _check_average(args: argparse.Namespace) -> int:
    if args.average < 1:
        raise ConfigError(f"expected --average >= 1 (EM runs averaged), got {args.average}")
    if args.average > 1 and (args.method != "em" or args.n_init != 1):
        raise ConfigError("--average applies to --method em with --n-init 1 (it averages the runs instead of keeping the best)")
    return int(args.average)


register(GMMFamily())
