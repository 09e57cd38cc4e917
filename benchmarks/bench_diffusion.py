"""DDPM benchmarks: likelihood on the 2-D densities and the digits, samplers, oracle gap, speed.

Everything is fitted through the package's engine (``inference.fit`` via
``inference.fit_diffusion``) and printed as markdown tables:

1. 2-D densities with an exact log density: KL(p_data || model) = E_p[log p - log q], with
   log q the probability-flow ODE likelihood of the DDPM (exact divergence), 10k training
   samples and fresh test samples, next to the best scikit-learn GaussianMixture (K chosen on a
   validation set) and KernelDensity (bandwidth chosen on it) on the same data.
2. Digits (8x8, 17 levels, dequantised): held-out bits/dim by L_VLB (a bound) and by the ODE
   (Hutchinson), next to scikit-learn peers, the package's GMM (EM) and VAE; the share of
   samples whose nearest training image is closer than a third of the second nearest.
3. The trained model's L_simple against the optimal denoiser's (the smallest any network can
   reach) on the training set, with common random numbers.
4. DDIM at 10/50/100 steps against 1000-step ancestral sampling: sliced Wasserstein distance
   and MMD to held-out data, and seconds per sample batch.
5. Training step time: ``inference.fit`` against a hand-written PyTorch L_simple loop with the
   same network and batches.

    python benchmarks/bench_diffusion.py             # full (hours on 2 shared CPU cores)
    BENCH_QUICK=1 python benchmarks/bench_diffusion.py
    BENCH_ONLY=toys,digits python benchmarks/bench_diffusion.py   # a subset: toys, digits, gap, speed
    BENCH_TOYS=moons,2spirals python benchmarks/bench_diffusion.py  # a subset of the densities
    BENCH_TEST=20000 python benchmarks/bench_diffusion.py         # fewer fresh test samples (default 100k)
    BENCH_TOY_EPOCHS=300 BENCH_TOY_BATCH=512 BENCH_DIGIT_EPOCHS=200 ...   # shorter training
    BENCH_DIGIT_SAMPLES=200 ...                                   # fewer digit samples per sampler
    BENCH_ONLY=speed BENCH_SPEED_CONFIGS=0 ...                    # step time of the first network only
    BENCH_TOY_NOISE=0 ...                                         # toys without noise regularisation (default: kde rule)

``gap`` needs the trained models: the moons row comes with ``toys``, the digits row with
``digits``.
"""

from __future__ import annotations

import copy
import math
import platform
import statistics
import time
import warnings

import numpy as np
import pyro
import torch
from _common import QUICK, env, env_list, holdout, mean_se, table, timed
from noise_rule import resolve_noise_std
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity

from guides import ForwardDiffusion
from inference import GaussianNoise, fit_diffusion, load_dataset
from inference.data import get_toy_density
from vi_models import DDPM, OptimalDenoiser
from vi_models.diffusion import probability_flow_log_prob

LEAN = bool(env("BENCH_LEAN"))  # smaller peer grids and bound sample (a busy machine)
ONLY = set(env_list("BENCH_ONLY"))
SPEED_CONFIGS = set(env_list("BENCH_SPEED_CONFIGS"))  # e.g. "0,1" of bench_speed
GOALS = {"8gaussians": 0.01, "moons": 0.01, "swissroll": 0.02, "pinwheel": 0.03, "2spirals": 0.04,
         "checkerboard": 0.10, "circles": None}  # circles: no goal in the issue, compared with the peers only
TOYS = env_list("BENCH_TOYS", ",".join(GOALS))
N_TRAIN = 10_000
N_TEST = env("BENCH_TEST", 2_000 if QUICK else 100_000, int)
TOY_EPOCHS = env("BENCH_TOY_EPOCHS", 15 if QUICK else 400, int)
TOY_BATCH = env("BENCH_TOY_BATCH", 256, int)
#: Noise regularisation of the toy DDPMs: "kde" (3/4 of a KDE's cross-validated bandwidth, as the flows of
#: bench_density_table.py), a std, or "0" (none).
TOY_NOISE = env("BENCH_TOY_NOISE", "kde")
DIGIT_EPOCHS = env("BENCH_DIGIT_EPOCHS", 10 if QUICK else 400, int)
T = 1000


def toy_model(train: torch.Tensor, ema: bool = True) -> DDPM:
    return DDPM(2, T=T, data_loc=train.mean(0), data_scale=train.std(0), ema_decay=0.999 if ema else None,
                hidden_dim=128, num_blocks=3)


def train_toy(train: torch.Tensor, epochs: int, seed: int = 0, noise_std: float = 0.0) -> tuple[DDPM, float]:
    torch.manual_seed(seed)
    model = toy_model(train)
    _, seconds = timed(lambda: fit_diffusion(
        model, ForwardDiffusion(model.schedule), train, objective="simple", epochs=epochs, batch_size=TOY_BATCH,
        lr=2e-3, seed=seed, progress=False, check_convergence=False, jit=True,
        batch_transform=GaussianNoise(noise_std) if noise_std > 0 else None,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)))
    return model, seconds


def kl_with_se(log_p: torch.Tensor, log_q: torch.Tensor) -> tuple[float, float]:
    return mean_se((log_p - log_q).double())


def best_gmm(train: np.ndarray, val: np.ndarray) -> tuple[GaussianMixture, int]:
    grid = (1, 8, 32) if QUICK else (4, 8, 16, 32, 64) if LEAN else (1, 2, 4, 8, 16, 32, 64, 100)
    fits = [GaussianMixture(k, covariance_type="full", random_state=0, n_init=1 if QUICK or LEAN else 2).fit(train)
            for k in grid]
    best = max(fits, key=lambda g: g.score(val))
    return best, best.n_components


def best_kde(train: np.ndarray, val: np.ndarray) -> tuple[KernelDensity, float]:
    val = val[:2000]
    fits = [KernelDensity(bandwidth=h).fit(train) for h in np.geomspace(0.02, 0.5, 5 if QUICK else 7 if LEAN else 13)]
    best = max(fits, key=lambda k: k.score_samples(val).mean())
    return best, best.bandwidth


def bench_toys() -> tuple[str, dict[str, tuple[DDPM, torch.Tensor]]]:
    rows, models = [], {}
    for name in TOYS:
        goal = GOALS[name]
        density = get_toy_density(name)
        gen = torch.Generator().manual_seed(0)
        train = density.sample(N_TRAIN, generator=gen)
        val = density.sample(N_TRAIN, generator=gen)
        test = density.sample(N_TEST, generator=gen)
        log_p = density.log_prob(test)
        noise_std = resolve_noise_std(TOY_NOISE, train)
        model, seconds = train_toy(train, TOY_EPOCHS, noise_std=noise_std)
        models[name] = (model, train)
        start = time.perf_counter()
        log_q, nfe = probability_flow_log_prob(model, test, trace="exact", rtol=1e-4, atol=1e-4, return_nfe=True)
        ode_s = time.perf_counter() - start
        kl, se = kl_with_se(log_p, log_q)
        n_vlb = 300 if QUICK or LEAN else 2000
        vlb_kl, _ = kl_with_se(log_p[:n_vlb], -model.vlb(test[:n_vlb]))  # the bound's gap, for reference
        gmm, k = best_gmm(train.numpy(), val.numpy())
        gmm_kl, _ = kl_with_se(log_p, torch.from_numpy(gmm.score_samples(test.numpy())))
        kde, bw = best_kde(train.numpy(), val.numpy())
        kde_kl, _ = kl_with_se(log_p, torch.from_numpy(kde.score_samples(test.numpy())))
        met = (goal is None or kl <= goal) and kl <= min(gmm_kl, kde_kl)
        rows.append([name, f"{noise_std:.3g}", f"{kl:.4f} ± {se:.4f}", f"{vlb_kl:.3f}", f"{gmm_kl:.4f} (K={k})", f"{kde_kl:.4f} (h={bw:.3f})",
                     "-" if goal is None else f"<= {goal}", "yes" if met else "no", f"{seconds:.0f}",
                     f"{ode_s:.0f} ({nfe} calls)"])
        print("  row: | " + " | ".join(map(str, rows[-1])) + " |", flush=True)  # partial results survive a kill
    return table(["density", "noise std", "DDPM KL by ODE (nats)", "KL by L_VLB bound", "best GMM KL", "best KDE KL", "goal",
                  "met (goal and <= peers)", "train s", "ODE s"], rows), models


# ---------------------------------------------------------------------------- digits


def digits_model(ema: bool = True) -> DDPM:
    return DDPM((64,), T=T, image_shape=(8, 8), data_loc=0.5, data_scale=0.5, ema_decay=0.999 if ema else None,
                unet_channels=(16, 32))


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    n = min(a.shape[0], b.shape[0])
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], projections, generator=gen, dtype=a.dtype)
    dirs = dirs / dirs.norm(dim=0)
    pa, pb = (a[:n] @ dirs).sort(0).values, (b[:n] @ dirs).sort(0).values
    return float((pa - pb).abs().mean())


def mmd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD^2 with a Gaussian kernel of median-heuristic bandwidth."""
    joint = torch.cat([a, b])
    d2 = torch.cdist(joint, joint) ** 2
    h2 = d2[d2 > 0].median()
    k = torch.exp(-d2 / h2)
    n, m = a.shape[0], b.shape[0]
    kaa, kbb, kab = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kaa.sum() - kaa.diag().sum()) / (n * (n - 1)) + (kbb.sum() - kbb.diag().sum()) / (m * (m - 1))
                 - 2 * kab.mean())


def bench_digits() -> tuple[str, str, str, DDPM]:
    bundle = load_dataset("digits")
    train, test = bundle.train, bundle.test
    torch.manual_seed(0)
    model = digits_model()
    start = time.perf_counter()
    result = fit_diffusion(model, ForwardDiffusion(model.schedule), train, objective="simple", epochs=DIGIT_EPOCHS,
                           batch_size=128, lr=1e-3, seed=0, progress=False, check_convergence=False,
                           scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, DIGIT_EPOCHS))
    train_s = time.perf_counter() - start
    held = test[:64] if QUICK else test
    start = time.perf_counter()
    vlb = model.vlb(held, generator=torch.Generator().manual_seed(0))
    vlb_s = time.perf_counter() - start
    start = time.perf_counter()
    ode, nfe = probability_flow_log_prob(model, held, trace="hutchinson", rtol=1e-4, atol=1e-4, return_nfe=True,
                              generator=torch.Generator().manual_seed(0))
    ode_s = time.perf_counter() - start
    rows = [
        [f"vi-models DDPM, U-Net, L_simple, {DIGIT_EPOCHS} epochs ({train_s:.0f} s): L_VLB", f"{bundle.bits_per_dim(-vlb.mean(), discrete=False):.3f}",
         f"bound; T = {T} analytic KL terms ({vlb_s:.0f} s, {held.shape[0]} test images)"],
        ["vi-models DDPM, same model: probability-flow ODE", f"{bundle.bits_per_dim(ode.mean(), discrete=False):.3f}",
         f"Hutchinson trace, rtol 1e-4 ({ode_s:.0f} s, {nfe} calls)"],
    ]
    rows += digit_peers(bundle)
    likelihood = table(["model (digits, dequantised, held-out)", "bits/dim", "notes"], rows)

    # samples: memorisation share and sampler quality against held-out images
    n_samples = env("BENCH_DIGIT_SAMPLES", 100 if QUICK else 360, int)
    gen = torch.Generator().manual_seed(1)
    quality = []
    samples = {}
    for label, kw in [("ancestral, 1000 steps", {"sampler": "ancestral"})] + [
        (f"DDIM eta=0, {s} steps", {"sampler": "ddim", "steps": s, "eta": 0.0}) for s in (10, 50, 100)
    ]:
        start = time.perf_counter()
        xs = model.sample(n_samples, generator=gen, **kw).clamp(0, 1)
        seconds = time.perf_counter() - start
        samples[label] = xs
        quality.append([label, f"{sliced_wasserstein(xs, test):.4f}", f"{mmd(xs, test[:n_samples]):.4f}",
                        f"{seconds:.1f}"])
    quality.append(["held-out train images (reference)", f"{sliced_wasserstein(train[:360], test):.4f}",
                    f"{mmd(train[:n_samples], test[:n_samples]):.4f}", "-"])
    samplers = table([f"sampler ({n_samples} digit samples)", "sliced W1 to test", "MMD^2 to test", "seconds"], quality)

    xs = samples["ancestral, 1000 steps"]
    d = torch.cdist(xs, train)
    two = d.topk(2, largest=False).values
    share = float((two[:, 0] < two[:, 1] / 3).double().mean())
    d_test = torch.cdist(test, train).topk(2, largest=False).values
    share_test = float((d_test[:, 0] < d_test[:, 1] / 3).double().mean())
    memo = table(["digits samples", "share with nearest training image < 1/3 of the second nearest"],
                 [["DDPM ancestral samples", f"{share:.3f}"], ["held-out test images (reference)", f"{share_test:.3f}"]])
    del result
    return likelihood, samplers, memo, model


def digit_peers(bundle) -> list[list[str]]:
    xtr, xte = bundle.train.double().numpy(), bundle.test.double().numpy()
    rows = []
    bws = np.geomspace(0.02, 0.3, 8)
    best = max((KernelDensity(bandwidth=h).fit(xtr[:1100]) for h in bws), key=lambda k: k.score(xtr[1100:]))
    kde = KernelDensity(bandwidth=best.bandwidth).fit(xtr)
    rows.append(["scikit-learn KernelDensity", f"{bundle.bits_per_dim(kde.score_samples(xte).mean(), discrete=False):.3f}",
                 f"bandwidth {best.bandwidth:.3f} chosen on a train split"])
    gmm = GaussianMixture(40, covariance_type="diag", random_state=0, max_iter=200).fit(xtr)
    rows.append(["scikit-learn GaussianMixture(40, diag)", f"{bundle.bits_per_dim(gmm.score(xte), discrete=False):.3f}", ""])
    try:
        from inference import fit_em
        from vi_models import GaussianMixture as OurGMM

        ours = fit_em(OurGMM(40, 64, "diag", dtype=torch.float64), bundle.train.double(), seed=0, progress=False)
        rows.append(["vi-models GaussianMixture(40, diag), EM",
                     f"{bundle.bits_per_dim(ours.score_samples(bundle.test.double()).mean(), discrete=False):.3f}", ""])
    except ImportError:  # pragma: no cover - the mixture module is optional here
        rows.append(["vi-models GaussianMixture", "n/a", "not importable in this checkout"])
    try:
        from guides import GaussianEncoder
        from inference import fit, log_likelihood
        from vi_models import VAE

        epochs = 5 if QUICK else 150
        torch.manual_seed(0)
        vae = VAE(64, 16, hidden_dims=(512, 512), likelihood="categorical", num_levels=17)
        enc = GaussianEncoder(64, 16, hidden_dims=(512, 512), num_levels=17)
        # early stopping on 10% of the training images, as the CLI and bench_vae.py do (it overfits otherwise)
        train, val = holdout(bundle.train, bundle.train.shape[0] // 10)
        fit(vae, enc, train, loss="meanfield", epochs=epochs, batch_size=128, lr=1e-3, seed=0,
            progress=False, check_convergence=False, validation_data=val, early_stopping=20)
        ll = log_likelihood(vae, enc, bundle.test, num_samples=100 if QUICK else 1000, seed=0).mean()
        rows.append([f"vi-models VAE, categorical decoder (early-stopped, at most {epochs} epochs), IWAE",
                     f"{bundle.bits_per_dim(ll, discrete=True):.3f}", "exact discrete figure (a bound via IWAE)"])
    except ImportError:  # pragma: no cover
        rows.append(["vi-models VAE", "n/a", "not importable"])
    return rows


# ---------------------------------------------------------------------------- oracle gap


def oracle_gap(model: DDPM, train: torch.Tensor, label: str, n: int = 20_000) -> list[str]:
    oracle = DDPM(model.data_shape, schedule=model.schedule, network=OptimalDenoiser(train, model.schedule))
    gen = torch.Generator().manual_seed(7)
    idx = torch.randint(0, train.shape[0], (n,), generator=gen)
    x = train[idx]
    t = torch.randint(1, model.T + 1, (n,), generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        ours = torch.cat([model.simple_loss(x[i:i + 2000], t=t[i:i + 2000], noise=eps[i:i + 2000], use_ema=True)
                          for i in range(0, n, 2000)])
        best = torch.cat([oracle.simple_loss(x[i:i + 500], t=t[i:i + 500], noise=eps[i:i + 500])
                          for i in range(0, n, 500)])
    gap = ours - best
    return [label, f"{float(ours.mean()):.4f}", f"{float(best.mean()):.4f}",
            f"{float(gap.mean()):.4f} ± {float(gap.std()) / math.sqrt(n):.4f}", f"{model.data_shape.numel()}"]


# ---------------------------------------------------------------------------- speed


def hand_epoch(m: DDPM, opt: torch.optim.Optimizer, y0_all: torch.Tensor, batch: int, gen: torch.Generator) -> None:
    """One epoch of Algorithm 1 written directly in PyTorch on the model's network and tables."""
    net, s = m.network, m.schedule
    shape = (-1,) + (1,) * len(m.data_shape)
    perm = torch.randperm(y0_all.shape[0], generator=gen)
    for i in range(0, y0_all.shape[0], batch):
        y0 = y0_all[perm[i:i + batch]]
        tt = torch.randint(1, m.T + 1, (y0.shape[0],), generator=gen)
        eps = torch.randn(y0.shape, generator=gen)
        y_t = s.sqrt_alphas_cumprod[tt].reshape(shape) * y0 + s.sqrt_one_minus_alphas_cumprod[tt].reshape(shape) * eps
        loss = ((eps - net(y_t, tt.to(y0.dtype))) ** 2).flatten(1).sum(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def time_steps(model: DDPM, data: torch.Tensor, batch: int, epochs: int, rounds: int) -> tuple[float, float, float]:
    """Median ms per step: inference.fit (L_simple through the model/guide pair), the same with the loss
    recorded as a TorchScript graph (jit=True), and a hand-written PyTorch loop, interleaved per round."""
    fit_ms: dict[bool, list[float]] = {False: [], True: []}
    torch_ms = []
    steps = -(-data.shape[0] // batch)
    for r in range(rounds):
        for jit in (False, True):
            m = copy.deepcopy(model)
            res = fit_diffusion(m, ForwardDiffusion(m.schedule), data, objective="simple", jit=jit, epochs=epochs,
                                batch_size=batch, lr=1e-3, seed=r, progress=False, check_convergence=False)
            t = res.history["time"]
            fit_ms[jit].append(1000 * (t[-1] - t[0]) / ((len(t) - 1) * steps))  # excludes set-up and the first epoch

        m = copy.deepcopy(model)
        opt = torch.optim.Adam(m.network.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(r)
        y0_all = m.schedule.normalise(data)
        hand_epoch(m, opt, y0_all, batch, gen)
        start = time.perf_counter()
        for _ in range(epochs - 1):
            hand_epoch(m, opt, y0_all, batch, gen)
        torch_ms.append(1000 * (time.perf_counter() - start) / ((epochs - 1) * steps))
    return statistics.median(fit_ms[False]), statistics.median(fit_ms[True]), statistics.median(torch_ms)


def bench_speed() -> str:
    rows = []
    pyro.enable_validation(False)  # as a user's training run; the tests keep it on
    toy = get_toy_density("moons").sample(N_TRAIN, generator=torch.Generator().manual_seed(0))
    digits = load_dataset("digits").train
    configs = [
        ("2-D MLP 128x3, batch 256", toy_model(toy, ema=False), toy[:5120], 256),
        ("2-D MLP 256x4, batch 512", DDPM(2, T=T, hidden_dim=256, num_blocks=4), toy[:5120], 512),
        ("digits U-Net (16, 32), batch 128", digits_model(ema=False), digits, 128),
    ]
    if SPEED_CONFIGS:
        configs = [c for i, c in enumerate(configs) if str(i) in SPEED_CONFIGS]
    for label, model, data, batch in configs:
        epochs = 3 if QUICK else 6
        f_ms, j_ms, t_ms = time_steps(model, data, batch, epochs, rounds=2 if QUICK else 5)
        rows.append([label, f"{f_ms:.1f}", f"{j_ms:.1f}", f"{t_ms:.1f}", f"{f_ms / t_ms:.2f}x", f"{j_ms / t_ms:.2f}x"])
        print("  row: | " + " | ".join(map(str, rows[-1])) + " |", flush=True)
    pyro.enable_validation(True)
    return table(["network", "inference.fit ms/step", "fit, jit=True ms/step", "hand-written PyTorch ms/step",
                  "ratio", "ratio with jit (goal <= 1.15x)"], rows)


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(f"# DDPM benchmarks ({'quick' if QUICK else 'full'}): torch {torch.__version__}, pyro {pyro.__version__}, "
          f"{platform.processor() or platform.machine()}, 1 thread\n", flush=True)
    want = (lambda s: not ONLY or s in ONLY)
    gap_rows = []
    if want("toys"):
        print(f"## 2-D densities: KL(p || DDPM) by the probability-flow ODE ({N_TRAIN} train, {N_TEST} test, "
              f"T = {T}, MLP 128x3, L_simple, {TOY_EPOCHS} epochs of batch {TOY_BATCH})\n", flush=True)
        toys, models = bench_toys()
        print(toys + "\n", flush=True)
        if want("gap"):
            gap_rows += [oracle_gap(m, tr, f"{name} MLP (EMA)") for name, (m, tr) in models.items()
                         if name in ("moons", "8gaussians")]
    if want("digits"):
        likelihood, samplers, memo, model = bench_digits()
        print("## Digits: held-out bits/dim\n\n" + likelihood + "\n", flush=True)
        print("## Digits: samplers against held-out images\n\n" + samplers + "\n", flush=True)
        print("## Digits: memorisation\n\n" + memo + "\n", flush=True)
        if want("gap"):
            gap_rows.append(oracle_gap(model, load_dataset("digits").train, "digits U-Net (EMA)"))
    if gap_rows:
        print("## L_simple on the training set: trained model vs the optimal denoiser\n\n"
              + table(["model", "L_simple (trained)", "L_simple (optimal denoiser)", "gap ± SE", "D"], gap_rows)
              + "\n", flush=True)
    if want("speed"):
        print("## Training step time: inference.fit vs hand-written PyTorch (same network, L_simple)\n\n"
              + bench_speed() + "\n", flush=True)


if __name__ == "__main__":
    main()
