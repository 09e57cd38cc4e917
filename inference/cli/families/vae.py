"""``vi-models fit vae``: the VAE of :mod:`vi_models.vae` with the encoder of :mod:`guides`."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from inference.diagnostics.plots import plot_elbo_terms, plot_latent_scatter, plot_reconstructions
from inference.engine.elbo_terms import ElboTerms
from inference.engine.fit import fit
from inference.engine.likelihood import log_likelihood

from .base import Family, register

LIKELIHOOD_FOR_KIND = {"dequantized": "categorical", "binary": "bernoulli", "continuous": "gaussian"}
#: Observations on which the ELBO terms are recorded every epoch (validation rows when given).
ELBO_TERMS_OBSERVATIONS = 512
#: Prefix of the ELBO-term curves in history.json ("elbo_terms.kl:z", "elbo_terms.epoch", ...).
ELBO_TERMS_KEY = "elbo_terms."
#: Codes drawn in the latent scatter.
LATENT_SCATTER_OBSERVATIONS = 1000


class VAEFamily(Family):
    """Variational autoencoder fitted by SVI; held-out log p(x) by importance weighting (IWAE)."""

    name = "vae"
    help = "variational autoencoder (Gaussian encoder; Gaussian, Bernoulli or categorical decoder)"
    estimator = "iwae"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("vae")
        group.add_argument("--z-dim", type=int, default=16, help="latent dimension (default 16)")
        group.add_argument("--hidden-dims", type=int, nargs="+", default=[512, 512],
                           help="hidden layer widths of encoder and decoder (default 512 512)")
        group.add_argument("--likelihood", choices=["auto", "gaussian", "bernoulli", "categorical"], default="auto",
                           help="decoder likelihood; auto: categorical for dequantised images, "
                                "bernoulli for binary data, gaussian otherwise")
        group.add_argument("--decoder", choices=["mlp", "conv"], default="mlp", help="decoder network")
        group.add_argument("--covariance", choices=["diag", "full"], default="diag", help="encoder covariance")
        group.add_argument("--loss", choices=["elbo", "meanfield", "iwae"], default="meanfield",
                           help="training objective (meanfield: ELBO with analytic KL)")
        group.add_argument("--num-particles", type=int, default=1, help="particles per step (K for iwae)")
        group.add_argument("--kl-warmup", type=int, default=0, help="epochs of linear KL annealing (0: none)")
        group.add_argument("--jit", action="store_true", help="record the training loss once per batch shape as a TorchScript graph and replay it (fit(..., jit=True)): the same loss and gradients, less Python per step")

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        return {
            "z_dim": args.z_dim,
            "hidden_dims": list(args.hidden_dims),
            "likelihood": args.likelihood,
            "decoder": args.decoder,
            "covariance": args.covariance,
            "loss": args.loss,
            "num_particles": args.num_particles,
            "kl_warmup": args.kl_warmup,
            "jit": bool(args.jit),
        }

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        from guides import GaussianEncoder
        from vi_models import VAE

        likelihood = config.get("likelihood", "auto")
        if likelihood == "auto":
            likelihood = LIKELIHOOD_FOR_KIND[bundle.kind]
            config["likelihood"] = likelihood
        x_dim = tuple(bundle.data_shape) if len(bundle.data_shape) > 1 else int(bundle.data_shape[0])
        image_shape = tuple(bundle.image_shape) if bundle.image_shape is not None else None
        decoder = config.get("decoder", "mlp")
        model = VAE(
            x_dim,
            config["z_dim"],
            hidden_dims=tuple(config["hidden_dims"]),
            likelihood=likelihood,
            num_levels=bundle.num_levels or 17,
            decoder=decoder,
            image_shape=image_shape if decoder == "conv" else None,
            device=device,
        )
        guide = GaussianEncoder(
            x_dim,
            config["z_dim"],
            hidden_dims=tuple(config["hidden_dims"]),
            covariance=config.get("covariance", "diag"),
            num_levels=bundle.num_levels if likelihood == "categorical" else None,
            device=device,
        )
        return model, guide

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        from inference.engine.losses import linear_annealing

        transform = None
        if bundle.kind == "dequantized" and config["likelihood"] != "categorical":
            transform = _fresh_dequantisation(bundle.num_levels)
        warmup = int(config.get("kl_warmup", 0))
        options = dict(fit_options)
        # reconstruction and KL per epoch (at beta = 1) on held-out rows if there are any
        probe = options.get("validation_data")
        probe = (bundle.train if probe is None else probe)[:ELBO_TERMS_OBSERVATIONS]
        recorder = ElboTerms(probe, model=model, guide=guide)
        options["callbacks"] = [*options.get("callbacks", ()), recorder]
        result = fit(
            model,
            guide,
            bundle.train,
            loss=config.get("loss", "meanfield"),
            num_particles=int(config.get("num_particles", 1)),
            beta=linear_annealing(warmup) if warmup > 0 else 1.0,
            checkpoint_dir=run.path,
            batch_transform=transform,
            jit=bool(config.get("jit", False)),
            **options,
        )
        history = dict(result.history)
        terms = _elbo_term_curves(run, recorder, resumed=bool(options.get("resume")))
        if terms:
            history.update({ELBO_TERMS_KEY + k: v for k, v in terms.items()})
            run.save_figure("elbo_terms.png", plot_elbo_terms(terms))
        return history

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int) -> torch.Tensor:
        return log_likelihood(model, guide, data, method="iwae", num_samples=num_samples)

    def extra_metrics(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                      *, num_samples: int) -> dict[str, Any]:
        elbo = log_likelihood(model, guide, data, method="elbo", num_samples=16)
        return {"test_elbo": float(elbo.mean())}

    def sample(self, model: Any, guide: Any, n: int, config: dict[str, Any], **options: Any) -> torch.Tensor:
        return model.sample(n, mean=bool(options.get("mean", False)))

    def figures(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any]) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        held_out = bundle.test is not None
        x = bundle.test if held_out else bundle.train
        labels = bundle.test_targets if held_out else bundle.train_targets
        if model.z_dim >= 2:
            rows = x[:LATENT_SCATTER_OBSERVATIONS]
            with torch.no_grad():
                codes = guide.encode(rows)[0]  # the encoder means mu_phi(x): (n, z_dim)
            figures["latent_scatter.png"] = plot_latent_scatter(
                codes, labels[: rows.shape[0]] if labels is not None else None
            )
        if bundle.image_shape is not None and held_out:
            x = bundle.test[:40]
            x_hat = model.reconstruct(x, guide, mean=True)
            figures["reconstructions.png"] = plot_reconstructions(x, x_hat, bundle.image_shape)
        return figures


def _elbo_term_curves(run: Any, recorder: ElboTerms, *, resumed: bool) -> dict[str, list[float]]:
    """``{"epoch": [...], "kl:z": [...], ...}``: this fit's records after those of the run it resumed."""
    curves: dict[str, list[float]] = {"epoch": list(recorder.epochs), **recorder.history}
    if resumed and (run.path / "history.json").exists():
        earlier = {k[len(ELBO_TERMS_KEY):]: v for k, v in run.read_json("history.json").items()
                   if k.startswith(ELBO_TERMS_KEY)}
        first = recorder.epochs[0] if recorder.epochs else float("inf")
        keep = [i for i, e in enumerate(earlier.get("epoch", [])) if e < first]
        if keep and set(earlier) == set(curves):
            curves = {k: [earlier[k][i] for i in keep] + v for k, v in curves.items()}
    return curves if curves["epoch"] else {}


def _fresh_dequantisation(num_levels: int):
    """Batch transform: new uniform noise inside each level's bin, x = (k + u) / L."""

    def transform(x: torch.Tensor) -> torch.Tensor:
        levels = torch.floor(x * num_levels).clamp_(0, num_levels - 1)
        return (levels + torch.rand_like(x)) / num_levels

    return transform


register(VAEFamily())
