"""The SVI engine: minibatch scaling, checkpoints, resume, bad input, non-finite losses."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroParam
from torch.utils.data import DataLoader, TensorDataset

from guides.linear import LinearGaussianEncoder
from inference import (
    CheckpointError,
    ConfigError,
    DataError,
    GaussianNoise,
    NonFiniteLossError,
    fit,
    linear_annealing,
)
from inference.engine.checkpoint import load_checkpoint, save_checkpoint
from inference.engine.losses import scale_latents
from vi_models.vae.linear_gaussian import LinearGaussian


def _pair(seed=0, z_dim=2):
    torch.manual_seed(seed)
    return LinearGaussian(4, z_dim), LinearGaussianEncoder(4, z_dim, covariance="diag")


def _data(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g) @ torch.randn(4, 4, generator=g)


def test_function_model_with_param_store_fits_the_mle():
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    x = torch.randn(200) + 3.0
    result = fit(model, None, x, epochs=60, lr=0.1, progress=False, seed=0)
    assert pyro.param("loc").item() == pytest.approx(x.mean().item(), abs=0.05)
    assert len(result.history["loss"]) == 60
    # The per-observation loss is -mean log N(x | loc, 1) at the optimum.
    assert result.final_loss == pytest.approx(-dist.Normal(x.mean(), 1.0).log_prob(x).mean().item(), abs=0.01)


class BayesianRegression(PyroModule):
    """w ~ N(0, 1), y_i | x_i, w ~ N(w x_i, 0.5^2): conjugate, with a global latent."""

    def forward(self, x, y, full_size=None):
        w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
        with pyro.plate("data", size=full_size or x.shape[0], subsample=torch.arange(x.shape[0])):
            pyro.sample("y", dist.Normal(w * x, 0.5), obs=y)


def test_minibatches_are_scaled_by_full_size(float64):
    """A global latent fitted from minibatches matches the exact conjugate posterior."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, generator=g)
    y = 0.7 * x + 0.5 * torch.randn(400, generator=g)
    model = BayesianRegression()
    guide = AutoNormal(model, init_scale=0.05)
    fit(model, guide, (x, y), epochs=60, batch_size=50, lr=0.03, seed=0, progress=False,
        num_particles=8, vectorize_particles=True,
        scheduler=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.95))
    precision = 1.0 + (x**2).sum() / 0.25
    post_mean = ((x * y).sum() / 0.25) / precision
    q_loc = guide.locs.w.item()
    q_scale = guide.scales.w.item()
    assert q_loc == pytest.approx(post_mean.item(), abs=0.01)
    assert q_scale == pytest.approx(precision.rsqrt().item(), rel=0.3)  # unscaled plates would give ~sqrt(8)x


def test_beta_scales_the_kl_term(float64):
    model, guide = _pair()
    x = _data(8)
    elbo = pyro.infer.TraceMeanField_ELBO(num_particles=20_000, vectorize_particles=True)
    full = elbo.loss(model, guide, x)
    recon_only = elbo.loss(scale_latents(0.0)(model), scale_latents(0.0)(guide), x)
    half = elbo.loss(scale_latents(0.5)(model), scale_latents(0.5)(guide), x)
    kl = full - recon_only
    assert kl > 0
    assert half == pytest.approx(recon_only + 0.5 * kl, rel=1e-3)
    schedule = linear_annealing(4)
    assert [schedule(e) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_resume_is_bit_exact(tmp_path):
    x = _data()
    model, guide = _pair()
    straight = fit(model, guide, x, epochs=6, batch_size=32, seed=3, progress=False,
                   checkpoint_dir=tmp_path / "a")
    model_b, guide_b = _pair()
    fit(model_b, guide_b, x, epochs=4, batch_size=32, seed=3, progress=False, checkpoint_dir=tmp_path / "b")
    model_c, guide_c = _pair(seed=99)  # different init: everything must come from the checkpoint
    resumed = fit(model_c, guide_c, x, epochs=6, batch_size=32, seed=3, progress=False,
                  checkpoint_dir=tmp_path / "b", resume=True)
    for a, c in zip(list(model.parameters()) + list(guide.parameters()),
                    list(model_c.parameters()) + list(guide_c.parameters())):
        assert torch.equal(a, c)
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.epochs_run == 6


def test_checkpoint_is_atomic_and_rejects_other_models(tmp_path):
    x = _data()
    model, guide = _pair()
    fit(model, guide, x, epochs=2, seed=0, progress=False, checkpoint_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]  # no temp files left behind
    before = (tmp_path / "checkpoint.pt").read_bytes()
    other_model, other_guide = _pair(z_dim=3)
    with pytest.raises(CheckpointError, match="another model"):
        fit(other_model, other_guide, x, epochs=4, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_pickled_or_truncated_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "vi-models-checkpoint", "payload": _Payload()}, evil, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned-by-checkpoint").exists()
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"epoch": 1, "w": torch.ones(3)})
    assert load_checkpoint(good)["epoch"] == 1
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(tmp_path / "cut.pt")
    with open(tmp_path / "plain.pt", "wb") as fh:
        pickle.dump({"epoch": 1}, fh, protocol=2)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "plain.pt")


class _ExplodingModel(PyroModule):
    """Its likelihood turns NaN once ``broken`` is set."""

    def __init__(self):
        super().__init__()
        self.loc = PyroParam(torch.zeros(4))
        self.broken = False

    def forward(self, x):
        loc = self.loc * (float("nan") if self.broken else 1.0)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=x)


def test_non_finite_loss_names_epoch_and_site_and_keeps_checkpoint(tmp_path):
    x = _data(96)
    model = _ExplodingModel()
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, None, x, epochs=5, batch_size=32, progress=False, checkpoint_dir=tmp_path, seed=0,
            callbacks=[lambda epoch, logs: setattr(model, "broken", True)])
    message = str(info.value)
    assert "epoch 2, step 1" in message and "model site 'obs'" in message and "intact" in message
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and torch.isfinite(state["model"]["loc_unconstrained"]).all()


@pytest.mark.parametrize(
    "kwargs,error,fragment",
    [
        ({"batch_size": 0}, ConfigError, "batch_size"),
        ({"loss": "elbow"}, ConfigError, "'elbo'"),
        ({"lr": -1.0}, ConfigError, "lr"),
        ({"epochs": -2}, ConfigError, "epochs"),
        ({"optimizer": "adamax2"}, ConfigError, "optimizer"),
        ({"resume": True}, ConfigError, "checkpoint_dir"),
        ({"num_particles": 0}, ConfigError, "num_particles"),
        ({"device": "tpu:7"}, ConfigError, "device"),
    ],
)
def test_bad_arguments(kwargs, error, fragment):
    model, guide = _pair()
    with pytest.raises(error, match=fragment):
        fit(model, guide, _data(), progress=False, **kwargs)


@pytest.mark.parametrize(
    "data,fragment",
    [
        (torch.full((10, 4), float("nan")), "NaN/inf"),
        (torch.empty(0, 4), "non-empty"),
        ("digits.npy", "expected data as a tensor"),
        ([[1.0, 2.0], [3.0]], "array-like"),
        (np.array([["a", "b"]]), "numeric dtype"),
    ],
)
def test_bad_data(data, fragment):
    model, guide = _pair()
    with pytest.raises(DataError, match=fragment):
        fit(model, guide, data, progress=False)


def test_dataset_dataloader_and_numpy_inputs_agree():
    x = _data(64)
    losses = []
    for data in (x, x.numpy(), TensorDataset(x)):
        model, guide = _pair()
        losses.append(fit(model, guide, data, epochs=3, batch_size=16, seed=0, progress=False).history["loss"])
    assert losses[0] == losses[1] == losses[2]
    model, guide = _pair()
    loader = DataLoader(TensorDataset(x), batch_size=16, shuffle=True)
    result = fit(model, guide, loader, epochs=3, seed=0, progress=False)
    assert len(result.history["loss"]) == 3 and all(math.isfinite(v) for v in result.history["loss"])


def test_early_stopping_and_callbacks_restore_best():
    x = _data(64)
    model, guide = _pair()
    seen = []

    def stop_at_three(epoch, logs):
        seen.append((epoch, set(logs)))
        return epoch == 3

    result = fit(model, guide, x, epochs=50, validation_data=x[:16], callbacks=[stop_at_three],
                 seed=0, progress=False)
    assert result.stopped_early and result.epochs_run == 3
    assert {"loss", "val_loss", "lr"} <= seen[0][1]
    model, guide = _pair()
    result = fit(model, guide, x, epochs=400, lr=0.05, validation_data=x[:16], early_stopping=3,
                 seed=0, progress=False)
    assert result.stopped_early and result.epochs_run < 400
    best = min(result.history["val_loss"])
    assert result.history["val_loss"][result.best_epoch - 1] == best


@pytest.mark.parametrize("loss", ["elbo", "meanfield", "iwae"])
def test_named_losses_run(loss):
    model, guide = _pair()
    result = fit(model, guide, _data(), loss=loss, num_particles=4, epochs=2, seed=0, progress=False)
    assert all(math.isfinite(v) for v in result.history["loss"])


class _GaussianDensity(PyroModule):
    """x ~ N(loc, scale^2 I): maximum likelihood has closed form (sample mean and variance)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = PyroParam(torch.zeros(dim, dtype=torch.float64))
        self.scale = PyroParam(torch.ones(dim, dtype=torch.float64), constraint=dist.constraints.positive)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, self.scale).to_event(1), obs=x)


def test_gaussian_noise_fits_the_smoothed_empirical_distribution():
    # Noise regularisation fits p_hat * N(0, std^2): for a Gaussian model the maximum-likelihood
    # variance becomes the sample variance plus std^2 (per coordinate), the mean is unchanged.
    pyro.enable_validation(True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 2, generator=gen, dtype=torch.float64) * torch.tensor([0.5, 2.0], dtype=torch.float64) + 1.0
    std = torch.tensor([0.3, 1.0], dtype=torch.float64)
    model = _GaussianDensity(2)
    fit(model, None, x, loss="elbo", epochs=150, batch_size=500, lr=0.05, seed=0, progress=False,
        check_convergence=False, batch_transform=GaussianNoise(std),
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, 150))
    target = (x.var(0, unbiased=False) + std**2).sqrt()
    assert torch.allclose(model.scale.detach(), target, rtol=0.03), (model.scale, target)
    assert torch.allclose(model.loc.detach(), x.mean(0), atol=0.05)


def test_gaussian_noise_moments_and_errors():
    x = torch.zeros(200_000, 2)
    torch.manual_seed(0)
    y = GaussianNoise(0.25)(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert float(y.mean()) == pytest.approx(0.0, abs=3e-3) and float(y.std()) == pytest.approx(0.25, rel=1e-2)
    assert GaussianNoise(0.0)(x) is x
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="noise std"):
            GaussianNoise(bad)
