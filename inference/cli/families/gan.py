"""``vi-models fit gan``: a GAN / f-GAN fitted by the adversarial loop of :mod:`inference.divergences.adversarial`.

A GAN defines samples, not a density. ``evaluate`` therefore reports sample-based figures
(MMD and sliced Wasserstein distance to the test data) and, so that GAN runs still sit in the
same ``metrics.json`` table, a log-likelihood *estimate* from a kernel density fitted to
generated samples (estimator ``"kde-on-samples"``: neither a bound nor exact).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from inference.divergences.adversarial import fit_adversarial

from .base import Family, register

KDE_SAMPLES = 10_000


class GANFamily(Family):
    """Generative adversarial network (any f-divergence of Nowozin et al. 2016)."""

    name = "gan"
    help = "generative adversarial network / f-GAN (samples only; density estimated by a KDE on samples)"
    estimator = "kde-on-samples"
    distributed = False
    distributed_reason = "its adversarial loop (inference.fit_adversarial) alternates two optimisers on one process"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("gan")
        group.add_argument("--latent-dim", type=int, default=16)
        group.add_argument("--hidden-dims", type=int, nargs="+", default=[256, 256])
        group.add_argument("--divergence", default="js",
                           choices=["js", "kl", "reverse_kl", "pearson", "hellinger", "dv_kl"])
        group.add_argument("--generator-loss", default="non_saturating", choices=["minimax", "non_saturating"])
        group.add_argument("--d-steps", type=int, default=1, help="critic updates per generator update")

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"latent_dim": args.latent_dim, "hidden_dims": list(args.hidden_dims), "divergence": args.divergence,
                "generator_loss": args.generator_loss, "d_steps": args.d_steps}

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        from vi_models import GAN

        shape = tuple(bundle.data_shape)
        gan = GAN(shape if len(shape) > 1 else shape[0], config["latent_dim"],
                  generator_hidden=tuple(config["hidden_dims"]), discriminator_hidden=tuple(config["hidden_dims"]),
                  divergence=config["divergence"], generator_loss=config["generator_loss"], device=device,
                  dtype=bundle.train.dtype)
        return gan, None

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        lr = fit_options["lr"]
        result = fit_adversarial(
            model, bundle.train, epochs=fit_options["epochs"], batch_size=fit_options["batch_size"], lr_g=lr,
            lr_d=lr, d_steps=int(config.get("d_steps", 1)), device=fit_options["device"], seed=fit_options["seed"],
            checkpoint_dir=run.path, resume=fit_options["resume"], progress=fit_options["progress"],
        )
        history = dict(result.history)
        history["loss"] = list(history.get("g_loss", []))  # the curve `fit` users know: the generator's loss
        return history

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int) -> torch.Tensor:
        from vi_models import KernelDensity

        samples = model.sample(KDE_SAMPLES).reshape(KDE_SAMPLES, -1)
        kde = KernelDensity("gaussian", "cv", device=samples.device, dtype=samples.dtype).fit(samples[:2000])
        kde = KernelDensity("gaussian", kde.bandwidth_, device=samples.device, dtype=samples.dtype).fit(samples)
        with torch.no_grad():
            return kde.log_prob(data.reshape(data.shape[0], -1))

    def extra_metrics(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                      *, num_samples: int) -> dict[str, Any]:
        from inference.divergences.estimators import mmd, sliced_wasserstein

        n = min(len(data), 2000)
        x = data[:n].reshape(n, -1)
        fake = model.sample(n).reshape(n, -1).to(x)
        gen = torch.Generator(device=x.device).manual_seed(0)
        return {"test_mmd2": float(mmd(fake, x)),
                "test_sliced_wasserstein": float(sliced_wasserstein(fake, x, 200, generator=gen))}

    def sample(self, model: Any, guide: Any, n: int, config: dict[str, Any], **options: Any) -> torch.Tensor:
        return model.sample(n)


register(GANFamily())
