"""Engine overhead: one training step of the digits VAE, four ways, side by side, per network size.

1. ``inference.fit`` (this package's engine, TraceMeanField_ELBO: analytic KL), the default path;
2. ``inference.fit(..., jit=True)``: the same loss recorded once per batch shape and replayed
   (:class:`inference.engine.recorded.RecordedELBO`);
3. a plain Pyro loop: ``pyro.infer.SVI(...).step`` with ``pyro.optim.Adam``;
4. a hand-written pure-PyTorch loop computing the same analytic-KL ELBO with the same networks.

All see the same minibatches (batch 128 of the 1437 training digits) and the same modules (deep
copies of one initialisation), for encoder/decoder widths 128x128, 256x256 and 512x512 (z = 8).
Reported: median milliseconds per step over interleaved timing rounds, and the ratio to pure
PyTorch (goal with jit=True: <= 1.15x on every row). ``BENCH_COMPILE=1`` adds a row of
``torch.compile`` applied to the uncompiled loss function (Pyro's programs under TorchDynamo).

    python benchmarks/bench_engine.py            # full
    BENCH_QUICK=1 python benchmarks/bench_engine.py
"""

from __future__ import annotations

import copy
import statistics
import time

import pyro
import torch
from _common import QUICK, env, machine_line

from guides import GaussianEncoder
from inference import fit, load_dataset
from vi_models import VAE

EPOCHS = 3 if QUICK else 12
ROUNDS = env("BENCH_ROUNDS", 2 if QUICK else 7, int)
BATCH = 128
SIZES = [int(h) for h in env("BENCH_SIZES", "128,256,512").split(",")]
Z_DIM = 8


def make_pair(hidden: int, seed: int = 0) -> tuple[VAE, GaussianEncoder]:
    torch.manual_seed(seed)
    model = VAE(64, Z_DIM, hidden_dims=(hidden, hidden), likelihood="categorical", num_levels=17)
    guide = GaussianEncoder(64, Z_DIM, hidden_dims=(hidden, hidden), num_levels=17)
    return model, guide


def batches(x: torch.Tensor, epochs: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        out += [x[perm[i : i + BATCH]] for i in range(0, x.shape[0], BATCH)]
    return out


def time_fit(model, guide, x, jit: bool = False) -> float:
    result = fit(model, guide, x, loss="meanfield", epochs=EPOCHS, batch_size=BATCH, lr=1e-3, seed=0, progress=False,
                 check_convergence=False, jit=jit)
    steps_per_epoch = -(-x.shape[0] // BATCH)
    t = result.history["time"]
    return (t[-1] - t[0]) / ((len(t) - 1) * steps_per_epoch)  # excludes set-up and the first epoch


def time_pyro(model, guide, data) -> float:
    # Plain Pyro as its tutorials write it: SVI with the global param store (vi-models itself
    # runs with module-local parameters, which pyro.infer.SVI does not support).
    pyro.settings.set(module_local_params=False)
    pyro.clear_param_store()
    try:
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.TraceMeanField_ELBO())
        warm = len(data) // EPOCHS
        for b in data[:warm]:
            svi.step(b)
        start = time.perf_counter()
        for b in data[warm:]:
            svi.step(b)
        return (time.perf_counter() - start) / (len(data) - warm)
    finally:
        pyro.clear_param_store()
        pyro.settings.set(module_local_params=True)


def time_torch(model, guide, data) -> float:
    params = list(model.parameters()) + list(guide.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    prior = torch.distributions.Normal(0.0, 1.0)

    def step(x: torch.Tensor) -> None:
        loc, scale = guide.encode(x)
        z = loc + scale * torch.randn_like(loc)  # reparameterisation
        recon = model.decode(z).log_prob(model.levels(x))  # (B,)
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale), prior).sum(-1)
        loss = (kl - recon).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    warm = len(data) // EPOCHS
    for b in data[:warm]:
        step(b)
    start = time.perf_counter()
    for b in data[warm:]:
        step(b)
    return (time.perf_counter() - start) / (len(data) - warm)


def time_compiled(model, guide, data) -> float:
    """torch.compile of the uncompiled loss function (TorchDynamo over Pyro's programs)."""
    from pyro.infer import TraceMeanField_ELBO

    elbo = TraceMeanField_ELBO()
    params = list(model.parameters()) + list(guide.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    loss_fn = torch.compile(lambda b: elbo.differentiable_loss(model, guide, b))

    def step(b: torch.Tensor) -> None:
        loss_fn(b).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    warm = len(data) // EPOCHS
    for b in data[:warm]:
        step(b)
    start = time.perf_counter()
    for b in data[warm:]:
        step(b)
    return (time.perf_counter() - start) / (len(data) - warm)


def main() -> None:
    pyro.enable_validation(False)
    x = load_dataset("digits").train
    data = batches(x, EPOCHS)
    loops = {"pure PyTorch": time_torch, "plain Pyro SVI": time_pyro,
             "inference.fit": lambda m, g, d: time_fit(m, g, x),
             "inference.fit, jit=True": lambda m, g, d: time_fit(m, g, x, jit=True)}
    if env("BENCH_COMPILE"):
        loops["torch.compile of the loss"] = time_compiled
    print(f"{machine_line()}, threads {torch.get_num_threads()}, pyro {pyro.__version__}")
    print(f"digits VAE (categorical decoder, z={Z_DIM}), batch {BATCH}, analytic-KL ELBO, "
          f"{ROUNDS} rounds x {EPOCHS} epochs\n")
    print("| hidden | loop | ms / step (median) | ratio to pure PyTorch |")
    print("|---|---|---|---|")
    for hidden in SIZES:
        base_model, base_guide = make_pair(hidden)
        results: dict[str, list[float]] = {name: [] for name in loops}
        failed: set[str] = set()
        for _ in range(ROUNDS):  # interleaved rounds: load on the machine hits every loop alike
            for name, loop in loops.items():
                if name in failed:
                    continue
                m, g = copy.deepcopy(base_model), copy.deepcopy(base_guide)
                try:
                    results[name].append(loop(m, g, data))
                except Exception as exc:  # torch.compile may refuse Pyro's programs
                    print(f"| {hidden}x{hidden} | {name} | failed: {type(exc).__name__}: {str(exc)[:80]} | |")
                    failed.add(name)
                    results[name] = []
        base = statistics.median(results["pure PyTorch"])
        for name, values in results.items():
            if values:
                med = statistics.median(values)
                print(f"| {hidden}x{hidden} | {name} | {1e3 * med:.2f} | {med / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
