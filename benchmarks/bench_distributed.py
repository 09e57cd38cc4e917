"""The one engine on several processes (torchrun, gloo on CPU), streamed EM, and the GPU, side by side.

Sections (each process one thread, so 2 processes use the 2 cores of the reference machine):

- ``svi``: examples per second of ``inference.fit`` (digits VAE) and ``inference.fit_diffusion``
  (moons DDPM, MLP) on 1 and 2 processes with the per-process batch fixed (weak scaling), and
  the scaling efficiency ``throughput(2) / (2 throughput(1))``; next to them a hand-written
  ``torch.nn.parallel.DistributedDataParallel`` loop on the same modules and batches (the
  goal: the engine within 1.10x of its step time).
- ``em``: EM on 1M x 10, K = 8, full covariances: seconds per iteration of ``inference.fit_em``
  on 1 and 2 processes and streamed from a memory-mapped ``.npy`` in chunks of 100k on one
  process, against scikit-learn's ``GaussianMixture`` on the in-memory array; the peak resident
  memory of the streamed fit against the size of one chunk (the goal: below 2x one chunk plus
  the statistics, so it does not grow with N).
- ``gpu`` (``--device cuda``; skipped without CUDA): a VAE step, EM 100k x 10 K = 8 against
  scikit-learn on the CPU (goal >= 30x), a DDPM step.

::

    python benchmarks/bench_distributed.py                 # svi and em (and gpu when CUDA is there)
    BENCH_QUICK=1 python benchmarks/bench_distributed.py   # small sizes, a minute or two
    python benchmarks/bench_distributed.py --sections gpu --device cuda

The script launches its own workers with ``torchrun`` (``python -m torch.distributed.run``);
a worker prints one JSON line that the driver collects.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import QUICK, env, machine_line, table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EPOCHS = env("BENCH_EPOCHS", 3 if QUICK else 8, int)
EM_ROWS = env("BENCH_EM_ROWS", 100_000 if QUICK else 1_000_000, int)
EM_ITERS = env("BENCH_EM_ITERS", 5 if QUICK else 20, int)
CHUNK = env("BENCH_CHUNK", 10_000 if QUICK else 100_000, int)
ROUNDS = env("BENCH_ROUNDS", 1 if QUICK else 3, int)


# ----------------------------------------------------------------------------- workers (run under torchrun)


def _vae_pair(seed: int = 0) -> tuple[Any, Any]:
    from guides import GaussianEncoder
    from vi_models import VAE

    torch.manual_seed(seed)
    hidden = (256, 256)
    return (VAE(64, 16, hidden_dims=hidden, likelihood="categorical", num_levels=17),
            GaussianEncoder(64, 16, hidden_dims=hidden, num_levels=17))


def _ddpm(seed: int = 0) -> Any:
    from vi_models import DDPM

    torch.manual_seed(seed)
    return DDPM(2, T=1000, schedule="cosine", hidden_dim=128, num_blocks=3)


def _moons(n: int = 8192) -> torch.Tensor:
    from inference.data import get_toy_density

    return get_toy_density("moons").sample(n, generator=torch.Generator().manual_seed(0))


def _seconds_per_step(history: dict[str, list[float]], steps_per_epoch: int) -> float:
    t = history["time"]
    return (t[-1] - t[0]) / ((len(t) - 1) * steps_per_epoch)  # excludes set-up and the first epoch


def worker_engine(kind: str, batch: int, device: str) -> dict[str, Any]:
    """``inference.fit`` / ``fit_diffusion`` under torchrun: seconds per step and examples per second."""
    import pyro

    from guides import ForwardDiffusion
    from inference import fit, fit_diffusion, load_dataset
    from inference.engine import distributed

    pyro.enable_validation(False)
    world = distributed.requested_world_size()
    if kind == "vae":
        x = load_dataset("digits", device=device).train
        model, guide = _vae_pair()
        result = fit(model, guide, x, loss="meanfield", epochs=EPOCHS, batch_size=batch, lr=1e-3, seed=0,
                     device=device, progress=False, check_convergence=False)
    else:
        x = _moons().to(device)
        model = _ddpm()
        result = fit_diffusion(model, ForwardDiffusion(model.schedule), x, objective="simple", jit=True,
                               epochs=EPOCHS, batch_size=batch, lr=1e-3, seed=0, device=device, progress=False,
                               check_convergence=False)
    steps = -(-x.shape[0] // (batch * world))
    sec = _seconds_per_step(result.history, steps)
    return {"seconds_per_step": sec, "examples_per_second": batch * world / sec}


def worker_ddp(kind: str, batch: int, device: str) -> dict[str, Any]:
    """The same modules and batches in a hand-written DistributedDataParallel loop (the peer)."""
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from inference import load_dataset

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    dev = torch.device(device if not device.startswith("cuda") or world == 1 else f"cuda:{os.environ['LOCAL_RANK']}")
    if kind == "vae":
        x = load_dataset("digits", device=dev).train
        model, guide = _vae_pair()
        prior = torch.distributions.Normal(0.0, 1.0)

        class Elbo(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model, self.guide = model, guide

            def forward(self, xb: torch.Tensor) -> torch.Tensor:
                loc, scale = self.guide.encode(xb)
                z = loc + scale * torch.randn_like(loc)
                recon = self.model.decode(z).log_prob(self.model.levels(xb))
                kl = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale), prior).sum(-1)
                return (kl - recon).sum()

        net = Elbo().to(dev)
    else:
        x = _moons().to(dev)
        m = _ddpm().to(dev)
        s = m.schedule

        class Simple(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = m.network

            def forward(self, xb: torch.Tensor) -> torch.Tensor:
                y0 = s.normalise(xb)
                tt = torch.randint(1, m.T + 1, (y0.shape[0],), device=y0.device)
                eps = torch.randn_like(y0)
                y_t = s.sqrt_alphas_cumprod[tt].unsqueeze(-1) * y0 + s.sqrt_one_minus_alphas_cumprod[tt].unsqueeze(-1) * eps
                return ((eps - self.net(y_t, tt.to(y0.dtype))) ** 2).sum()

        net = Simple().to(dev)
    wrapped = DDP(net) if world > 1 else net
    opt = torch.optim.Adam(wrapped.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    g = batch * world
    steps = -(-x.shape[0] // g)
    times = []
    for _ in range(EPOCHS):
        start = time.perf_counter()
        perm = torch.randperm(x.shape[0], generator=gen).to(dev)
        for i in range(steps):
            shard = perm[i * g:(i + 1) * g].tensor_split(world)[rank]
            loss = wrapped(x[shard])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    sec = statistics.median(times[1:]) / steps
    return {"seconds_per_step": sec, "examples_per_second": g / sec}


def worker_em(rows: int, chunk: int | None, path: str, device: str) -> dict[str, Any]:
    """``fit_em`` on a memory-mapped file: all rows in memory (chunk None) or streamed in chunks."""
    from inference import fit_em
    from vi_models import GaussianMixture

    data = np.load(path, mmap_mode="r")[:rows]
    gm = GaussianMixture(8, data.shape[1], covariance="full", dtype=torch.float64, device=device)
    if chunk is None:
        data = torch.as_tensor(np.ascontiguousarray(data), device=device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    options = {} if chunk is None else {"chunk_size": chunk}
    result = fit_em(gm, data, max_iter=EM_ITERS, tol=0.0, seed=0, progress=False, device=device, **options)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_iter = getattr(result, "iteration_seconds_", None)
    per_iter = statistics.median(per_iter) if per_iter else elapsed / max(1, result.n_iter_)
    return {"seconds_per_iteration": per_iter, "n_iter": result.n_iter_, "seconds_total": elapsed,
            "peak_rss_mb": peak / 1024, "rss_before_mb": before / 1024,
            "lower_bound": float(result.lower_bound_)}


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--kind", default="vae")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rows", type=int, default=EM_ROWS)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--path", default="")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.worker == "engine":
        out = worker_engine(args.kind, args.batch, args.device)
    elif args.worker == "ddp":
        out = worker_ddp(args.kind, args.batch, args.device)
    else:
        out = worker_em(args.rows, args.chunk, args.path, args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- driver


def launch(nproc: int, *args: str) -> dict[str, Any]:
    """Run this file as a worker under torchrun (or plainly for one process); rank 0's JSON."""
    if nproc > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={port}", __file__, *args]
    else:
        cmd = [sys.executable, __file__, *args]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env_vars = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_vars, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def section_svi(device: str) -> str:
    rows = []
    for kind, batch in (("vae", 128), ("ddpm", 256)):
        res: dict[tuple[str, int], list[float]] = {}
        for _ in range(ROUNDS):  # interleaved: load on the machine hits every variant alike
            for world in (1, 2):
                for loop in ("engine", "ddp"):
                    r = launch(world, "--worker", loop, "--kind", kind, "--batch", str(batch), "--device", device)
                    res.setdefault((loop, world), []).append(r["seconds_per_step"])
        med = {k: statistics.median(v) for k, v in res.items()}
        for loop in ("engine", "ddp"):
            one, two = med[(loop, 1)], med[(loop, 2)]
            eff = (2 * batch / two) / (2 * (batch / one))
            rows.append([f"{kind} ({'inference' if loop == 'engine' else 'hand DDP'})", f"{1e3 * one:.2f}",
                         f"{batch / one:.0f}", f"{1e3 * two:.2f}", f"{2 * batch / two:.0f}", f"{eff:.2f}",
                         f"{two / med[('ddp', 2)]:.2f}x" if loop == "engine" else "1.00x"])
    return table(["model (loop)", "1 proc ms/step", "1 proc examples/s", "2 procs ms/step", "2 procs examples/s",
                  "scaling efficiency", "2-proc step vs hand DDP (goal <= 1.10x)"], rows)


def _em_file(rows: int, d: int = 10) -> str:
    path = Path(tempfile.gettempdir()) / f"bench_em_{rows}x{d}.npy"
    if not path.exists():
        rng = np.random.default_rng(0)
        centres = rng.normal(scale=4.0, size=(8, d))
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(rows, d))
        for start in range(0, rows, 100_000):  # written in pieces: the file may be larger than we want in memory
            n = min(100_000, rows - start)
            out[start:start + n] = centres[rng.integers(0, 8, n)] + rng.normal(size=(n, d))
        out.flush()
        del out
    return str(path)


def sklearn_seconds_per_iteration(x: np.ndarray) -> float:
    """scikit-learn's EM iteration: (fit with EM_ITERS iterations - fit with 1) / (EM_ITERS - 1), k-means++ start."""
    import warnings

    from sklearn.mixture import GaussianMixture as SkGMM

    def run(iters: int) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            SkGMM(8, covariance_type="full", max_iter=iters, tol=0.0, random_state=0, init_params="k-means++").fit(x)
            return time.perf_counter() - start

    return max(1e-9, (run(EM_ITERS) - run(1)) / (EM_ITERS - 1))


def section_em(device: str) -> str:

    path = _em_file(EM_ROWS)
    rows = []
    one = launch(1, "--worker", "em", "--rows", str(EM_ROWS), "--path", path, "--device", device)
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    two = launch(2, "--worker", "em", "--rows", str(EM_ROWS), "--path", path, "--device", device) \
        if not device.startswith("cuda") or gpus >= 2 else None
    streamed = launch(1, "--worker", "em", "--rows", str(EM_ROWS), "--chunk", str(CHUNK), "--path", path,
                      "--device", device)
    x = np.load(path)[:EM_ROWS]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one thread, as each of our processes
        sk_s = sklearn_seconds_per_iteration(x)
    chunk_mb = CHUNK * x.shape[1] * 8 / 2**20
    for label, r in (("inference.fit_em, 1 process, in memory", one), ("inference.fit_em, 2 processes", two),
                     (f"inference.fit_em, streamed in chunks of {CHUNK}", streamed)):
        if r is None:
            rows.append([label, "needs 2 GPUs", "", "", ""])
            continue
        rows.append([label, f"{r['seconds_per_iteration']:.3f}", f"{sk_s / r['seconds_per_iteration']:.2f}x",
                     f"{r['peak_rss_mb']:.0f}", f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f}"])
    rows.append(["scikit-learn GaussianMixture (in memory, 1 thread)", f"{sk_s:.3f}", "1.00x", "", ""])
    note = (f"\n{EM_ROWS} x {x.shape[1]} rows ({EM_ROWS * x.shape[1] * 8 / 2**20:.0f} MB in float64), one chunk "
            f"{chunk_mb:.1f} MB; peak RSS includes torch and pyro themselves (~{one['rss_before_mb']:.0f} MB at "
            "the start of the fit); growth = peak minus RSS at the start of fit_em.")
    return table(["fit", "s / iteration", "speed-up vs scikit-learn", "peak RSS MB", "RSS growth MB"], rows) + note


def section_gpu() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device on this machine: the GPU section was skipped"

    rows = []
    for kind, batch in (("vae", 128), ("ddpm", 256)):
        r = launch(1, "--worker", "engine", "--kind", kind, "--batch", str(batch), "--device", "cuda")
        h = launch(1, "--worker", "ddp", "--kind", kind, "--batch", str(batch), "--device", "cuda")
        rows.append([f"{kind} step, batch {batch}", f"{1e3 * r['seconds_per_step']:.2f}",
                     f"{1e3 * h['seconds_per_step']:.2f}", f"{r['seconds_per_step'] / h['seconds_per_step']:.2f}x"])
    path = _em_file(100_000)
    em = launch(1, "--worker", "em", "--rows", "100000", "--path", path, "--device", "cuda")
    sk_s = sklearn_seconds_per_iteration(np.load(path))
    rows.append(["EM 100k x 10, K = 8, full: s / iteration", f"{em['seconds_per_iteration']:.4f}",
                 f"scikit-learn CPU {sk_s:.4f}", f"{sk_s / em['seconds_per_iteration']:.1f}x faster (goal >= 30x)"])
    return f"GPU: {torch.cuda.get_device_name(0)}\n\n" + table(["what", "vi-models ms or s", "peer", "ratio"], rows)


def main() -> None:
    if "--worker" in sys.argv:
        worker_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="svi,em,gpu", help="comma-separated: svi, em, gpu")
    parser.add_argument("--device", default="cpu", help="device of the svi and em sections")
    args = parser.parse_args()
    sections = args.sections.split(",")
    print(f"{machine_line()}, one thread per process; "
          f"{'quick sizes' if QUICK else 'full sizes'}\n", flush=True)
    if "svi" in sections:
        print("## SVI and diffusion on 1 and 2 processes\n\n" + section_svi(args.device) + "\n", flush=True)
    if "em" in sections:
        print("## EM: processes and streaming\n\n" + section_em(args.device) + "\n", flush=True)
    if "gpu" in sections:
        print("## GPU\n\n" + section_gpu() + "\n", flush=True)


if __name__ == "__main__":
    main()
