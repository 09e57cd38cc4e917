"""One toy DDPM fit, scored on held-out *and* training draws: the ablations behind RESULTS.md.

Where does a 2-D DDPM's KL(p_data || model) come from? This script answers three questions
for one configuration (environment variables below):

1. ``--oracle``: is it the likelihood machinery? A DDPM whose network is the *true* noise
   predictor of eight Gaussians (eps*(x, t) = -sqrt(1 - abar_t) grad log q_t(x), exact because
   the noised density of a Gaussian mixture is a Gaussian mixture) is scored by the same
   probability-flow ODE: its KL is the solver's and the schedule's error alone.
2. Is it variance (learning the 10k training points) or bias? The fitted model's KL on fresh
   test draws and on its own training draws.
3. Where in time is the error? The VLB weight w_t times ||eps_theta - eps*||^2 against the
   true noise predictor, summed over ranges of t (eight Gaussians only).

Usage (one thread; ~10 min per fit on an idle core)::

    python benchmarks/ablate_ddpm_toy.py --oracle
    NOISE=0.0845 BATCH=1024 python benchmarks/ablate_ddpm_toy.py
    TOY=moons H=256 NB=4 STEPS=40000 OBJ=hybrid PRED=v NOISE=0 python benchmarks/ablate_ddpm_toy.py

Variables: TOY (8gaussians), H and NB (MLP width and blocks: 128, 3), STEPS (20000), BATCH (512),
OBJ (simple | hybrid | vlb_sampled), PRED (eps | x0 | v), SCHED (linear | cosine), LR (2e-3),
NOISE (GaussianNoise std on every batch, 0), N_TEST (20000), BASE (none | gmm | gmm-avg: the network
learns the residual of a GaussianMixtureDenoiser fitted by EM, K among 8, 16, 32, 64 by held-out
likelihood; gmm-avg averages 10 EM runs per K; the untrained model, i.e. the mixture, is scored too).
"""

from __future__ import annotations

import sys
import time

import torch
from _common import env, mean_se
from torch import nn

from guides import ForwardDiffusion
from inference import GaussianNoise, fit_diffusion, fit_mixture_denoiser
from inference.data import get_toy_density
from vi_models import DDPM, GaussianMixtureDenoiser
from vi_models.diffusion import probability_flow_log_prob


def kl(density, model: DDPM, x: torch.Tensor, tol: float = 1e-4) -> str:
    x = x.to(model.schedule.betas.dtype)
    value, se = mean_se(density.log_prob(x) - probability_flow_log_prob(model, x, trace="exact", rtol=tol, atol=tol))
    return f"{value:.4f} ± {se:.4f}"


def true_predictor(density, model: DDPM) -> GaussianMixtureDenoiser:
    """The exact noise predictor of eight Gaussians: equal weights, isotropic components of std sigma."""
    k = density._centers.shape[0]
    return GaussianMixtureDenoiser(torch.ones(k), density._centers, torch.full((k,), density.sigma**2), model.schedule)


def error_by_time(model: DDPM, oracle: nn.Module, x: torch.Tensor, generator: torch.Generator) -> str:
    """sum_t w_t E||eps_theta - eps*||^2 over ranges of t (40 steps per range, reweighted)."""
    s = model.schedule
    y0 = s.normalise(x)
    parts = []
    for lo, hi in ((1, 10), (10, 50), (50, 200), (200, 1001)):
        steps = torch.arange(lo, min(hi, s.num_steps + 1))
        stride = max(1, len(steps) // 40)
        total = 0.0
        with torch.no_grad():
            for t in steps[::stride]:
                tt = torch.full((x.shape[0],), int(t))
                eps = torch.randn(y0.shape, generator=generator, dtype=y0.dtype)
                y_t = s.sqrt_alphas_cumprod[tt].unsqueeze(-1) * y0 + s.sqrt_one_minus_alphas_cumprod[tt].unsqueeze(-1) * eps
                e_net, _ = model.predict(y_t, tt, use_ema=True)
                total += float(s.loss_weights[t] * ((e_net - oracle(y_t, tt)) ** 2).sum(-1).mean()) * stride
        parts.append(f"t in [{lo}, {hi - 1 if hi == 1001 else hi}): {total:.4f}")
    return "; ".join(parts)


def main() -> None:
    torch.set_num_threads(1)
    name = env("TOY", "8gaussians")
    density = get_toy_density(name)
    gen = torch.Generator().manual_seed(0)  # the draws of bench_diffusion.py: train, validation, test
    train = density.sample(10_000, generator=gen)
    density.sample(10_000, generator=gen)
    test = density.sample(int(env("N_TEST", "20000")), generator=gen)
    if "--oracle" in sys.argv:
        if name != "8gaussians":
            raise SystemExit("--oracle needs TOY=8gaussians (the noised density is known in closed form)")
        for schedule in ("linear", "cosine"):
            base = DDPM(2, T=1000, schedule=schedule, data_loc=train.mean(0), data_scale=train.std(0), dtype=torch.float64)
            oracle = DDPM(2, schedule=base.schedule, network=true_predictor(density, base))
            for tol in (1e-4, 1e-5):
                print(f"true noise predictor, {schedule} schedule, ODE rtol = atol = {tol}: KL {kl(density, oracle, test, tol)}")
        return
    h, nb, steps, batch = int(env("H", "128")), int(env("NB", "3")), int(env("STEPS", "20000")), int(env("BATCH", "512"))
    obj, pred, sched, lr, noise = env("OBJ", "simple"), env("PRED", "eps"), env("SCHED", "linear"), float(env("LR", "2e-3")), float(env("NOISE", "0"))
    epochs = steps * batch // train.shape[0]
    torch.manual_seed(0)
    model = DDPM(2, T=1000, schedule=sched, prediction=pred, data_loc=train.mean(0), data_scale=train.std(0), ema_decay=0.999,
                 hidden_dim=h, num_blocks=nb)
    if env("BASE", "none") in ("gmm", "gmm-avg"):
        base = fit_mixture_denoiser(train, model.schedule, (8, 16, 32, 64), n_average=10 if env("BASE") == "gmm-avg" else 1)
        model = DDPM(2, schedule=model.schedule, prediction=pred, ema_decay=0.999, hidden_dim=h, num_blocks=nb, base=base)
        print(f"{name}: GaussianMixtureDenoiser base {env('BASE')}, K = {base.selected_components} ({base.n_components} components); "
              f"untrained model (the mixture): "
              f"KL on {test.shape[0]} test draws {kl(density, model, test)}", flush=True)
    start = time.perf_counter()
    fit_diffusion(model, ForwardDiffusion(model.schedule), train, objective=obj, epochs=epochs, batch_size=batch, lr=lr, seed=0,
                  progress=False, check_convergence=False, jit=True, batch_transform=GaussianNoise(noise) if noise > 0 else None,
                  scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs))
    seconds = time.perf_counter() - start
    print(f"{name}: MLP {h}x{nb}, {steps} steps of batch {batch}, {obj}, {pred}, {sched}, lr {lr}, noise std {noise}, "
          f"base {env('BASE', 'none')}: "
          f"trained in {seconds:.0f} s; KL on {test.shape[0]} test draws {kl(density, model, test)}, "
          f"on the 10k training draws {kl(density, model, train)}", flush=True)
    if name == "8gaussians":
        oracle = true_predictor(density, model)
        for label, x in (("test", test[:4000]), ("train", train[:4000])):
            print(f"  VLB-weighted error against the true noise predictor ({label}): "
                  f"{error_by_time(model, oracle, x, torch.Generator().manual_seed(1))}")


if __name__ == "__main__":
    main()
