"""The runs of test_distributed_fit.py: models shared with the test, and the scripts torchrun launches.

``python -m torch.distributed.run --nproc_per_node=2 -m tests.inference.engine.distributed_cases
SCENARIO OUT`` runs one group of checks on every rank; rank 0 writes what the test compares
(``OUT/<name>.pt`` or ``.json``), and a check that is about every rank (an error each must
raise, a file each must not write) writes one file per rank. The test process computes the
one-process references with the same builders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoDelta
from pyro.nn import PyroModule

N_REGRESSION = 45  # global batches of 16: 16, 16, 13 -> the last split 7 / 6 on 2 ranks
N_PARAM_STORE = 33  # global batches of 16: 16, 16, 1 -> rank 1's last shard is empty
STEPS_EPOCHS = 3


class GlobalRegression(PyroModule):
    """w ~ N(0, I_3), y_i | x_i, w ~ N(x_i . w, 0.5^2): a global latent under a plate scaled to full_size."""

    def forward(self, x, y, full_size=None):
        w = pyro.sample("w", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
        with pyro.plate("data", size=full_size or x.shape[0], subsample=torch.arange(x.shape[0])):
            pyro.sample("y", dist.Normal(x @ w, 0.5), obs=y)


def param_store_model(x, y):
    """y_i | x_i ~ N(x_i . w + b, exp(log_s)^2), every parameter a pyro.param (no latent, no full_size)."""
    w = pyro.param("w", torch.zeros(3, dtype=x.dtype))
    b = pyro.param("b", torch.tensor(0.0, dtype=x.dtype))
    log_s = pyro.param("log_s", torch.tensor(0.0, dtype=x.dtype))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w + b, log_s.exp()), obs=y)


def regression_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)


def fit_map(batch_size):
    """The MAP fit of GlobalRegression (AutoDelta): a deterministic objective; its w."""
    from inference import fit

    pyro.clear_param_store()
    model = GlobalRegression()
    guide = AutoDelta(model)
    result = fit(model, guide, regression_data(N_REGRESSION), epochs=STEPS_EPOCHS, batch_size=batch_size, lr=0.05,
                 seed=0, progress=False, check_convergence=False)
    return guide.w.detach().clone(), result.history["loss"]


def fit_param_store(batch_size):
    """The maximum-likelihood fit of param_store_model; its pyro.params."""
    from inference import fit

    pyro.clear_param_store()
    result = fit(param_store_model, None, regression_data(N_PARAM_STORE, seed=1), epochs=STEPS_EPOCHS,
                 batch_size=batch_size, lr=0.05, seed=0, progress=False, check_convergence=False)
    return {k: pyro.param(k).detach().clone() for k in ("w", "b", "log_s")}, result.history["loss"]


def small_vae(seed=0):
    from guides import GaussianEncoder
    from vi_models import VAE

    torch.manual_seed(seed)
    return VAE(64, 2, hidden_dims=(16,)), GaussianEncoder(64, 2, hidden_dims=(16,))


def digits():
    from inference import load_dataset

    return load_dataset("digits")


def fit_vae(batch_size, seed, **kwargs):
    """A small VAE on the digits; its held-out ELBO per observation (fixed guide noise)."""
    from inference import elbo_from_terms, elbo_terms, fit

    data = digits()
    model, guide = small_vae(seed)
    fit(model, guide, data.train, loss="meanfield", epochs=20, batch_size=batch_size, lr=1e-2, seed=seed,
        progress=False, check_convergence=False, **kwargs)
    return elbo_from_terms(elbo_terms(model, guide, data.test, num_samples=4, seed=0))


# --------------------------------------------------------------------------- under torchrun


def _same_on_every_rank(tensors):
    """Whether every rank holds bitwise the same tensors."""
    from inference.engine import distributed

    mine = [t.detach().cpu() for t in tensors]
    return all(all(torch.equal(a, b) for a, b in zip(mine, other)) for other in distributed.all_gather_objects(mine))


def _state(model, guide):
    return [*model.state_dict().values(), *guide.state_dict().values()]


def equivalence_and_resume(out: Path) -> None:
    """2 ranks x batch 8 against 1 rank x 16 (float64); resume against an uninterrupted run; who writes."""
    import tqdm.auto

    from inference import fit
    from inference.engine import distributed

    torch.set_default_dtype(torch.float64)
    w, map_loss = fit_map(8)
    free, free_loss = fit_param_store(8)
    results = {"same_on_ranks": _same_on_every_rank([w, *free.values()])}
    torch.set_default_dtype(torch.float32)

    fit_module = sys.modules["inference.engine.fit"]  # the module (the package's name `fit` is the function)
    writes, bars = [], []
    save = fit_module.save_checkpoint
    fit_module.save_checkpoint = lambda path, state: (writes.append(str(path)), save(path, state))

    class CountingBar(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            bars.append(1)
            super().__init__(*args, **kwargs)

    tqdm.auto.tqdm = CountingBar
    x = digits().train
    kwargs = {"loss": "meanfield", "batch_size": 32, "lr": 1e-2, "seed": 5, "validation_data": x[:101],
              "check_convergence": False}
    model, guide = small_vae()
    straight = fit(model, guide, x[101:], epochs=4, checkpoint_dir=out / "straight", progress=True, **kwargs)
    fit(*small_vae(), x[101:], epochs=2, checkpoint_dir=out / "resumed", progress=False, **kwargs)
    model_b, guide_b = small_vae(seed=1)  # other weights: all must come from the checkpoint
    resumed = fit(model_b, guide_b, x[101:], epochs=4, checkpoint_dir=out / "resumed", resume=True,
                  progress=False, **kwargs)
    same = all(torch.equal(a, b) for a, b in zip(_state(model, guide), _state(model_b, guide_b)))
    results.update(
        resume_equal=[same, *distributed.all_gather_objects(same)],
        histories_equal=all(straight.history[k] == resumed.history[k] for k in ("loss", "val_loss", "step_loss")),
        vae_same_on_ranks=_same_on_every_rank(_state(model, guide)),
        files=sorted(p.name for p in (out / "straight").iterdir()),
        writes_per_rank=distributed.all_gather_objects(len(writes)),
        bars_per_rank=distributed.all_gather_objects(len(bars)),
    )
    if distributed.rank() == 0:
        torch.save({"w": w, "map_loss": map_loss, "free": free, "free_loss": free_loss}, out / "equivalence.pt")
        (out / "results.json").write_text(json.dumps(results))


def vae_and_diffusion(out: Path) -> None:
    """The VAE's held-out ELBO on 2 ranks x batch 32; DiffusionELBO(jit=True) on 2 ranks."""
    from guides import ForwardDiffusion
    from inference import DiffusionELBO, fit_diffusion
    from inference.engine import distributed
    from vi_models import DDPM

    elbo = fit_vae(32, seed=0)
    torch.manual_seed(0)
    ddpm = DDPM(2, T=20, schedule="cosine", hidden_dim=8, num_blocks=1)
    guide = ForwardDiffusion(ddpm.schedule)
    loss = DiffusionELBO("simple", jit=True)
    result = fit_diffusion(ddpm, guide, torch.randn(100, 2), objective=loss, epochs=2, batch_size=16, lr=1e-2,
                           seed=0, progress=False, check_convergence=False)
    results = {"vae_elbo": elbo, "ddpm_same_on_ranks": _same_on_every_rank(list(ddpm.state_dict().values())),
               "ddpm_loss": result.history["loss"], "graphs_recorded": loss._traced.num_traces}
    if distributed.rank() == 0:
        (out / "results.json").write_text(json.dumps(results))


def errors(out: Path) -> None:
    """A NaN on rank 1 only; more ranks than examples; a CUDA device on a CPU-only machine: every rank's error."""
    from inference import fit
    from inference.engine import distributed

    class NanOnRankOne(GlobalRegression):
        """The observation scale is NaN on rank 1 once ``poisoned`` (from epoch 2 on, set by a callback)."""

        poisoned = False

        def forward(self, x, y, full_size=None):
            scale = float("nan") if distributed.rank() == 1 and self.poisoned else 0.5
            w = pyro.sample("w", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            with pyro.plate("data", size=full_size or x.shape[0], subsample=torch.arange(x.shape[0])):
                pyro.sample("y", dist.Normal(x @ w, scale), obs=y)

    def nan_on_rank_one():
        model = NanOnRankOne()
        fit(model, AutoDelta(model), regression_data(N_REGRESSION), epochs=3, batch_size=8, seed=0, progress=False,
            checkpoint_dir=out / "nan", callbacks=[lambda epoch, logs: setattr(model, "poisoned", True)])

    def more_ranks_than_examples():
        model = GlobalRegression()
        fit(model, AutoDelta(model), regression_data(1), epochs=1, progress=False, checkpoint_dir=out / "few")

    def cuda_on_cpu():
        fit(param_store_model, None, regression_data(8), epochs=1, device="cuda", progress=False,
            checkpoint_dir=out / "cuda")

    messages = {}
    cases = {"nan": nan_on_rank_one, "few": more_ranks_than_examples, "cuda": cuda_on_cpu}
    for name, run in cases.items():
        try:
            run()
            messages[name] = "no error"
        except Exception as exc:  # noqa: BLE001 - the test reads the type and message
            messages[name] = f"{type(exc).__name__}: {exc}"
    if distributed.rank() == 0:
        from inference.engine.checkpoint import load_checkpoint

        messages["nan_checkpoint_epoch"] = int(load_checkpoint(out / "nan" / "checkpoint.pt")["epoch"])
    (out / f"errors.rank{distributed.rank()}.json").write_text(json.dumps(messages))


if __name__ == "__main__":
    torch.set_num_threads(1)
    pyro.enable_validation(True)
    scenario, folder = sys.argv[1], Path(sys.argv[2])
    {"equivalence_and_resume": equivalence_and_resume, "vae_and_diffusion": vae_and_diffusion,
     "errors": errors}[scenario](folder)
