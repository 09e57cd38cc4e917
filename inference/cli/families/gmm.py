"""``vi-models fit gmm``: Gaussian mixtures by EM through Pyro's enumeration, or by SVI.

``--method em`` (default) runs :func:`inference.fit_em`; ``--method svi`` fits the Bayesian
mixture (Dirichlet weights, Normal means, inverse-Gamma/LKJ scales) with an ``AutoNormal``
guide over the globals and the assignments summed out by ``TraceEnum_ELBO``; the density
reported afterwards is the mixture at the posterior median. ``--average M`` runs EM from M
initialisations (seeds ``seed, ..., seed + M - 1``) and keeps their equal-weight average, a
mixture of M K components (:func:`inference.fit_em_average`), instead of the best run.

``--chunk-size N`` streams EM's E-step over the training rows N at a time. A ``.npy`` file is
then memory-mapped (``np.load(path, mmap_mode="r")``) and EM reads its training rows from disk
chunk by chunk: the rows the data loader's split keeps for training, i.e. all but
``sklearn.model_selection.train_test_split(np.arange(N), test_size=0.2, random_state=0)``'s test
rows (computed from the row count alone), read in file order, validation rows included as EM
always uses them. ``evaluate`` scores the same test rows, ``N`` at a time. Other sources (the
bundled datasets, ``.npz``, ``.csv``, IDX) are in memory already and are chunked as they are.
Under ``torchrun`` each process reads only its shard of those rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal

from inference.diagnostics.plots import plot_mixture_ellipses
from inference.em.average import fit_em_average
from inference.em.loop import fit_em
from inference.em.sources import as_source
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
        group.add_argument("--chunk-size", type=int, default=None, metavar="N",
                           help="EM on file data streamed in chunks of N rows (a .npy file is memory-mapped, "
                                "never loaded whole by the fit); default: all rows at once")
        group.add_argument("--jit", action="store_true", help="record the training loss once per batch shape as a TorchScript graph and replay it (fit(..., jit=True)): the same loss and gradients, less Python per step")

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"jit": bool(getattr(args, "jit", False)), "n_components": args.n_components, "covariance": args.covariance, "method": args.method,
                "n_init": args.n_init, "max_iter": args.max_iter, "tol": args.tol, "reg_covar": args.reg_covar,
                "init": args.init, "average": _check_average(args), "chunk_size": _check_chunk_size(args)}

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
        if guide is None:
            history = self._train_em(model, bundle, config, fit_options)
            save_fitted(run, model, history=history)
            return history
        x = bundle.train.reshape(bundle.train.shape[0], -1).to(torch.float64)
        options = {k: v for k, v in fit_options.items() if k not in ("validation_data", "early_stopping")}
        result = fit(model, guide, x, loss="enum", checkpoint_dir=run.path, jit=bool(config.get("jit")), **options)
        model.use_point_estimate(guide, x[:2])
        return result.history

    def _train_em(self, model: Any, bundle: Any, config: dict[str, Any], fit_options: dict[str, Any]) -> dict[str, list[float]]:
        chunk_size = config.get("chunk_size")
        data = streamed_training_rows(bundle) if chunk_size is not None else None
        if data is None:
            data = bundle.train.reshape(bundle.train.shape[0], -1).to(torch.float64)
            # EM has no training curve to watch: the validation rows are training data too.
            if fit_options.get("validation_data") is not None:
                val = fit_options["validation_data"]
                data = torch.cat([data, val.reshape(val.shape[0], -1).to(data)])
        options = {"init": config.get("init", "k-means++"), "max_iter": config.get("max_iter", 200),
                   "tol": config.get("tol", 1e-3), "reg_covar": config.get("reg_covar", 1e-6),
                   "device": fit_options["device"], "chunk_size": chunk_size}
        if int(config.get("average", 1)) > 1:
            from vi_models import GaussianMixture

            member = GaussianMixture(config["n_components"], model.n_features, covariance=config["covariance"],
                                     device=fit_options["device"], dtype=torch.float64)
            avg = fit_em_average(member, data, int(config["average"]), seed=fit_options["seed"], **options)
            with torch.no_grad():
                model.set_params(weights=avg.weights, means=avg.means, covariances=avg.covariances)
                source = as_source(data, model, chunk_size=chunk_size, dtype=torch.float64, device=fit_options["device"])
                loss = -sum(float(model.log_prob(x).sum()) for _, x in source.chunks()) / source.n_rows
            return {"loss": [loss], "converged": [float(avg.converged_)]}
        result = fit_em(model, data, n_init=config.get("n_init", 1), seed=fit_options["seed"],
                        progress=fit_options["progress"], **options)
        return {"loss": [-v for v in result.lower_bounds_], "converged": [float(result.converged_)]}

    def load_state(self, model: Any, guide: Any, path: Any, device: torch.device) -> None:
        super().load_state(model, guide, path, device)
        if guide is not None:
            model.use_point_estimate(guide)

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int) -> torch.Tensor:
        rows = data.reshape(data.shape[0], -1)
        size = config.get("chunk_size") or max(rows.shape[0], 1)
        with torch.no_grad():  # chunk by chunk: the (K, chunk) table of log-densities at a time
            return torch.cat([model.log_prob(part.to(torch.float64)) for part in rows.split(size)])

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


class TrainingRows:
    """The rows ``rows`` (sorted) of a memory-mapped array, flattened to ``(len(rows), D)``, read on demand.

    :func:`inference.fit_em` reads it as any lazily read array: ``[a:b]`` reads those rows from disk.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array, self.rows = array, rows
        self.shape = (len(rows), int(np.prod(array.shape[1:], dtype=np.int64)))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        picked = self.rows[index]
        return np.asarray(self.array[picked]).reshape(len(picked), self.shape[1])


def streamed_training_rows(bundle: Any) -> TrainingRows | None:
    """The training rows of a ``.npy`` bundle, memory-mapped (module docstring); None for other sources."""
    from sklearn.model_selection import train_test_split

    path = Path(str(getattr(bundle, "source", "")))
    split = getattr(bundle, "split", {}) or {}
    if path.suffix.lower() != ".npy" or not path.is_file() or "test_size" not in split:
        return None
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    train_rows, _ = train_test_split(np.arange(len(array)), test_size=split["test_size"],
                                     random_state=split["random_state"])
    return TrainingRows(array, np.sort(train_rows))


def _check_chunk_size(args: argparse.Namespace) -> int | None:
    if args.chunk_size is None:
        return None
    if args.chunk_size < 1:
        raise ConfigError(f"expected --chunk-size >= 1 (rows per EM chunk), got {args.chunk_size}; e.g. --chunk-size 100000")
    if args.method != "em":
        raise ConfigError("--chunk-size applies to --method em (EM streams its E-step); drop it for --method svi")
    return int(args.chunk_size)


def _check_average(args: argparse.Namespace) -> int:
    if args.average < 1:
        raise ConfigError(f"expected --average >= 1 (EM runs averaged), got {args.average}")
    if args.average > 1 and (args.method != "em" or args.n_init != 1):
        raise ConfigError("--average applies to --method em with --n-init 1 (it averages the runs instead of keeping the best)")
    return int(args.average)


register(GMMFamily())
