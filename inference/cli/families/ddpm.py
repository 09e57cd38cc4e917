r"""``vi-models fit ddpm``: a denoising diffusion model fitted by the engine, as a hierarchical VAE.

The model is :class:`vi_models.DDPM` (the reverse chain p(x_T) prod_t p_theta(x_{t-1} | x_t)),
the guide :class:`guides.ForwardDiffusion` (the fixed forward process), and the objective a
:class:`inference.engine.diffusion_elbo.DiffusionELBO` run by :func:`inference.fit` (through
:func:`inference.engine.diffusion_elbo.fit_diffusion`, which also keeps the EMA of the weights).

::

    vi-models fit ddpm --data moons --out runs/ddpm                 # L_simple, T = 1000, EMA 0.999
    vi-models fit ddpm --data digits --out runs/ddpm-digits --steps 20000 --objective hybrid
    vi-models evaluate runs/ddpm --max-test 5000                     # log p by the probability-flow ODE
    vi-models evaluate runs/ddpm --estimator vlb                     # the bound L_VLB (analytic KLs)
    vi-models sample runs/ddpm -n 64 --sampler ddim --steps 50 --eta 0

Choices where the issue is silent:

* ``--objective vlb`` is the *time-sampled* unbiased estimator of L_VLB (one network call per
  observation, the cost of L_simple); ``vlb-exact`` sums all T analytic terms (T network calls
  per observation: for small T only).
* ``--steps N`` counts optimizer updates and, when given, replaces ``--epochs`` by
  ceil(N / batches per epoch); early stopping on the validation loss still applies.
* The diffusion acts on standardised data: per-dimension mean and standard deviation of the
  training split for vectors, ``(x - 0.5) / 0.5`` for dequantised images; the values are stored
  in ``config.json``. Dequantised images get fresh dequantisation noise every batch.
* ``--early-stopping`` defaults to 0 (off) for ddpm: the validation L_simple is a fresh Monte
  Carlo estimate each epoch, noisier than its change between epochs, so patience-based stopping
  kept an early, under-trained epoch by chance (moons: stopped at epoch 23, best epoch 3).
* ``--jit`` (off by default, as Pyro's ``JitTrace_ELBO`` is opt-in) records the training loss
  as a TorchScript graph: the same model/guide pair and gradients without Pyro's Python
  bookkeeping per step, which is most of a step for the 2-D MLPs (see benchmarks/RESULTS.md).
* ``--base gmm`` fits a Gaussian mixture by EM to the training rows, validation rows excluded,
  seeded by ``--seed`` (K among
  ``--base-components`` by held-out likelihood on 10% of it; full covariances up to 16
  dimensions, diagonal above; dequantised images get one seeded dequantisation draw;
  ``--base-average M`` averages M EM runs per K, :func:`inference.fit_em_average`) and adds
  its closed-form noise predictor to the network's output (:class:`vi_models.GaussianMixtureDenoiser`).
  The network's output layer starts at zero, so training starts from the mixture's density.
* ``evaluate`` defaults to the ODE (``estimator`` ``"ode"``: exact divergence up to 16
  dimensions, Hutchinson above, adaptive solver at rtol = atol = 1e-5); ``--estimator vlb``
  reports -L_VLB, a lower bound on log p(x). Binary data is refused (a Gaussian diffusion is a
  density of continuous or dequantised data).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from inference.em import fit_mixture_denoiser
from vi_models import GaussianMixtureDenoiser
from vi_models.errors import ConfigError

from .base import Family, register

#: CLI name of an objective -> name of :data:`inference.engine.diffusion_elbo.OBJECTIVES`.
CLI_OBJECTIVES = {"simple": "simple", "vlb": "vlb_sampled", "vlb-exact": "vlb", "hybrid": "hybrid"}
ESTIMATORS = ("ode", "vlb")
SAMPLERS = ("ancestral", "ddim")
#: Test rows drawn in the run directory's figures.
FIGURE_ROWS = 64


class DDPMFamily(Family):
    """Denoising diffusion probabilistic model; held-out log p(x) by the probability-flow ODE or L_VLB."""

    name = "ddpm"
    help = "denoising diffusion model (DDPM) as a hierarchical VAE; L_simple, L_VLB or hybrid"
    estimator = "ode"
    #: ``vi-models evaluate --estimator`` values this family understands.
    estimators = ESTIMATORS
    #: ``vi-models sample`` options this family understands (others are refused by the CLI).
    sample_options = ("sampler", "steps", "eta", "clip_x0")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("ddpm")
        group.add_argument("--objective", choices=list(CLI_OBJECTIVES), default="simple",
                           help="simple: L_simple (Ho et al. Algorithm 1; default); vlb: unbiased time-sampled "
                                "L_VLB (one step per observation); vlb-exact: all T analytic KL terms (slow); "
                                "hybrid: L_simple + lambda L_VLB")
        group.add_argument("--hybrid-weight", type=float, default=1e-3, help="lambda of --objective hybrid (1e-3)")
        group.add_argument("--steps", type=int, default=None,
                           help="training steps (optimizer updates); replaces --epochs by "
                                "ceil(steps / batches per epoch)")
        group.add_argument("--jit", action="store_true",
                           help="record the training loss once per batch shape as a TorchScript graph and replay it "
                                "(same loss and gradients, less Python per step; pays off for small networks)")
        group.add_argument("--T", dest="num_steps", type=int, default=1000, help="diffusion steps T (default 1000)")
        group.add_argument("--schedule", choices=["linear", "cosine"], default="linear", help="noise schedule")
        group.add_argument("--prediction", choices=["eps", "x0", "v"], default="eps", help="what the network predicts")
        group.add_argument("--variance", choices=["fixed_small", "fixed_large"], default="fixed_small",
                           help="reverse variance sigma_t^2: beta-tilde_t (fixed_small) or beta_t (fixed_large)")
        group.add_argument("--ema", type=float, default=0.999,
                           help="decay of the exponential moving average of the weights used for sampling and "
                                "evaluation (default 0.999; 0: no EMA)")
        group.add_argument("--base", choices=["none", "gmm"], default="none",
                           help="gmm: a Gaussian mixture fitted by EM to the training split gives a closed-form noise "
                                "predictor and the network learns the residual (the untrained model is the mixture)")
        group.add_argument("--base-components", type=int, nargs="+", default=[8, 16, 32, 64],
                           help="K of --base gmm, or candidates chosen by held-out likelihood on 10%% of the "
                                "training split (default 8 16 32 64)")
        group.add_argument("--base-average", type=int, default=1,
                           help="--base gmm: average the densities of this many EM runs per K (default 1)")
        group.add_argument("--hidden-dim", type=int, default=128, help="width of the MLP for vectors (default 128)")
        group.add_argument("--num-blocks", type=int, default=3, help="residual blocks of the MLP (default 3)")
        group.add_argument("--channels", type=int, nargs="+", default=[32, 64],
                           help="U-Net channels per resolution for images (default 32 64)")
        # The validation L_simple is a fresh Monte Carlo draw (random t and noise) every epoch: its
        # noise exceeds its epoch-to-epoch change, so patience-based stopping restores an early,
        # under-trained epoch by chance. For ddpm, --early-stopping defaults to 0 (never); the
        # validation curve is still recorded and plotted.
        parser.set_defaults(early_stopping=0)

    def config_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        if args.steps is not None and args.steps < 1:
            raise ConfigError(f"expected --steps >= 1 (training steps), got {args.steps}")
        if not (math.isfinite(args.hybrid_weight) and args.hybrid_weight > 0):
            raise ConfigError(f"expected --hybrid-weight > 0 such as 1e-3, got {args.hybrid_weight}")
        if not (args.ema == 0 or 0 < args.ema < 1):
            raise ConfigError(f"expected --ema in (0, 1) such as 0.999, or 0 for no EMA, got {args.ema}")
        return {"objective": args.objective, "hybrid_weight": args.hybrid_weight, "steps": args.steps,
                "T": args.num_steps, "schedule": args.schedule, "prediction": args.prediction,
                "variance": args.variance, "ema": args.ema, "hidden_dim": args.hidden_dim,
                "num_blocks": args.num_blocks, "channels": list(args.channels), "jit": bool(args.jit),
                "base": args.base, "base_components": _check_components(args.base_components),
                "base_average": _check_average(args.base_average)}

    def loss_unit(self, config: dict[str, Any]) -> str:
        """Unit of the training loss in ``vi-models fit``'s summary line."""
        objective = config.get("objective", "simple")
        return {"simple": "(L_simple, squared noise error per observation)",
                "hybrid": "(L_simple + lambda L_VLB per observation)"}.get(objective, "nats/observation (L_VLB)")

    def build(self, config: dict[str, Any], bundle: Any, device: torch.device) -> tuple[Any, Any]:
        from guides import ForwardDiffusion
        from vi_models import DDPM, NoiseSchedule

        if bundle.kind == "binary":
            raise ConfigError(
                f"expected continuous or dequantised data for ddpm (a Gaussian diffusion is a density), got the "
                f"binary data {bundle.name!r}; use 'digits' (dequantised) instead of 'digits-binary'"
            )
        if "data_loc" not in config:
            config["data_loc"], config["data_scale"] = _standardisation(bundle)
        shape = tuple(bundle.data_shape)
        dtype = bundle.train.dtype
        T, variance = int(config.get("T", 1000)), config.get("variance", "fixed_small")
        loc = torch.tensor(config["data_loc"], dtype=torch.float64)
        scale = torch.tensor(config["data_scale"], dtype=torch.float64)
        schedule = NoiseSchedule(T, config.get("schedule", "linear"), variance, data_loc=loc, data_scale=scale,
                                 device=device, dtype=dtype)
        model = DDPM(
            shape if len(shape) > 1 else shape[0],
            schedule=schedule,  # T, variance and the standardisation come from it
            prediction=config.get("prediction", "eps"),
            image_shape=tuple(bundle.image_shape) if bundle.image_shape is not None else None,
            ema_decay=float(config["ema"]) if config.get("ema", 0) else None,
            base=_placeholder_base(config, bundle, schedule),
            hidden_dim=int(config.get("hidden_dim", 128)),
            num_blocks=int(config.get("num_blocks", 3)),
            unet_channels=tuple(config.get("channels", (32, 64))),
            device=device,
            dtype=dtype,
        )
        return model, ForwardDiffusion(model.schedule)

    def train(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any], *, run: Any,
              fit_options: dict[str, Any]) -> dict[str, list[float]]:
        from inference.engine.diffusion_elbo import fit_diffusion

        from .vae import _fresh_dequantisation

        options = dict(fit_options)
        if config.get("steps"):
            per_epoch = math.ceil(bundle.train.shape[0] / options["batch_size"])
            options["epochs"] = math.ceil(int(config["steps"]) / per_epoch)
        if config.get("base", "none") != "none" and model.base is None:
            model.set_base(_fit_base(config, bundle, model.schedule, int(fit_options.get("seed", 0))))
        transform = _fresh_dequantisation(bundle.num_levels) if bundle.kind == "dequantized" else None
        result = fit_diffusion(
            model, guide, bundle.train,
            objective=CLI_OBJECTIVES[config.get("objective", "simple")],
            hybrid_weight=float(config.get("hybrid_weight", 1e-3)),
            jit=bool(config.get("jit", False)),
            checkpoint_dir=run.path,
            batch_transform=transform,
            check_convergence=False,  # L_simple's minibatch noise never settles; the validation curve is the guide
            **options,
        )
        return result.history

    def log_likelihood(self, model: Any, guide: Any, data: torch.Tensor, config: dict[str, Any],
                       *, num_samples: int, estimator: str | None = None) -> torch.Tensor:
        estimator = estimator or self.estimator
        if estimator not in ESTIMATORS:
            raise ConfigError(f"expected --estimator to be one of {', '.join(ESTIMATORS)} for ddpm, got {estimator!r}")
        generator = torch.Generator(device=data.device).manual_seed(0)
        if estimator == "vlb":
            with torch.no_grad():
                return -model.vlb(data, generator=generator)
        return model.log_prob(data, generator=generator).detach()

    def sample(self, model: Any, guide: Any, n: int, config: dict[str, Any], **options: Any) -> torch.Tensor:
        if options.get("mean"):
            raise ConfigError("--mean has no meaning for ddpm (its samples are not decoder means); "
                              "use --sampler ddim --eta 0 for deterministic DDIM samples")
        steps, eta = options.get("steps"), options.get("eta")
        sampler = options.get("sampler") or ("ddim" if steps is not None or eta is not None else "ancestral")
        if sampler not in SAMPLERS:
            raise ConfigError(f"expected --sampler to be one of {', '.join(SAMPLERS)} for ddpm, got {sampler!r}")
        if sampler == "ancestral" and eta is not None:
            raise ConfigError("--eta applies to --sampler ddim only (the ancestral sampler's noise is fixed)")
        if eta is not None and not (math.isfinite(eta) and eta >= 0):
            raise ConfigError(f"expected --eta >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        clip_x0 = options.get("clip_x0")
        if clip_x0 is not None and sampler != "ddim":
            raise ConfigError("--clip-x0 applies to --sampler ddim only")
        with torch.no_grad():
            return model.sample(n, sampler=sampler, steps=steps, eta=0.0 if eta is None else float(eta), clip_x0=clip_x0)

    def figures(self, model: Any, guide: Any, bundle: Any, config: dict[str, Any]) -> dict[str, Any]:
        from inference.diagnostics.plots import plot_diffusion_trajectories, plot_vlb_terms
        from vi_models.diffusion.sampling import ancestral_trajectory

        x = (bundle.test if bundle.test is not None else bundle.train)[:FIGURE_ROWS]
        with torch.no_grad():
            terms = model.vlb_terms(x, generator=torch.Generator(device=x.device).manual_seed(0))
        figures = {"vlb_terms.png": plot_vlb_terms(terms)}
        T = model.T
        times = sorted({T, (3 * T) // 4, T // 2, T // 4, T // 10, 0}, reverse=True)
        if bundle.image_shape is not None or len(bundle.data_shape) == 2:
            n, shape = 8, tuple(bundle.image_shape or bundle.data_shape)
        elif tuple(bundle.data_shape) == (2,):
            n, shape = 300, (2,)
        else:
            return figures
        gen = torch.Generator(device=x.device).manual_seed(0)
        xs = ancestral_trajectory(model, n, times, generator=gen).reshape(len(times), n, *shape)
        figures["trajectories.png"] = plot_diffusion_trajectories(xs, times)
        return figures


def _check_components(ks: list[int]) -> list[int]:
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"expected --base-components to be integers >= 1 such as 8 16 32 64, got {ks}")
    return [int(k) for k in ks]


def _check_average(m: int) -> int:
    if m < 1:
        raise ConfigError(f"expected --base-average >= 1 (EM runs averaged per K), got {m}")
    return int(m)


def _placeholder_base(config: dict[str, Any], bundle: Any, schedule: Any) -> Any:
    """The ``--base gmm`` noise predictor of a fitted run, empty, of the size stored in the config
    (``base_fitted_components``); its buffers come from the checkpoint. ``None`` before the fit."""

    if config.get("base", "none") == "none" or "base_fitted_components" not in config:
        return None
    shape = tuple(bundle.data_shape)
    f = {"dtype": schedule.betas.dtype, "device": schedule.betas.device}
    k = int(config["base_fitted_components"])
    return GaussianMixtureDenoiser(torch.ones(k, **f), torch.zeros(k, math.prod(shape), **f), torch.ones(k, **f),
                                   schedule, data_shape=shape, covariance_type="spherical")


def _fit_base(config: dict[str, Any], bundle: Any, schedule: Any, seed: int) -> Any:
    """Fit the ``--base gmm`` noise predictor by EM on the training rows ``train`` sees (not the
    validation rows), seeded by ``--seed``; K among ``base_components`` by held-out likelihood."""
    shape = tuple(bundle.data_shape)
    d = math.prod(shape)
    x = bundle.train
    if bundle.kind == "dequantized":  # a density of continuous data: one dequantisation draw, seeded
        gen = torch.Generator(device=x.device).manual_seed(seed)
        levels = torch.floor(x * bundle.num_levels).clamp(0, bundle.num_levels - 1)
        x = (levels + torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)) / bundle.num_levels
    ks = [k for k in config.get("base_components", [8, 16, 32, 64]) if k <= x.shape[0] // 2] or [1]
    base = fit_mixture_denoiser(x, schedule, ks, covariance="full" if d <= 16 else "diag",
                                reg_covar=1e-6 if d <= 16 else 1e-3, seed=seed,
                                n_average=int(config.get("base_average", 1)))
    config["base_fitted_components"] = base.n_components
    return base


def _standardisation(bundle: Any) -> tuple[Any, Any]:
    """(data_loc, data_scale) as JSON-able numbers or lists: y = (x - loc) / scale has unit scale."""
    if bundle.kind == "dequantized":
        return 0.5, 0.5  # [0, 1] -> [-1, 1], Ho et al. Sec. 3.3
    x = bundle.train.to(torch.float64)
    if bundle.image_shape is not None or x.dim() > 2:
        std = float(x.std())
        return float(x.mean()), std if std > 0 else 1.0
    std = x.std(0)
    return x.mean(0).tolist(), torch.where(std > 0, std, torch.ones_like(std)).tolist()


register(DDPMFamily())
