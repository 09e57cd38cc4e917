"""DiffusionELBO(jit=True): the recorded loss equals the Python programs' loss and gradients,
replays draw fresh noise, follows parameter updates and new batch shapes, and trains through
fit and the command line. The truth is the uncompiled ELBO at the same random state. Float64."""

from __future__ import annotations

import json

import pyro
import pytest
import torch

from guides.diffusion import ForwardDiffusion
from inference.cli.commands import main
from inference.engine.diffusion_elbo import OBJECTIVES, DiffusionELBO, fit_diffusion
from inference.engine.traced_loss import TracedLoss
from vi_models.diffusion.ddpm import DDPM
from vi_models.errors import ConfigError

SMALL = {"hidden_dim": 8, "num_blocks": 1, "unet_channels": (4, 8)}


def make_model(shape=(3,), T: int = 6, **kwargs) -> DDPM:
    model = DDPM(shape, T=T, schedule="cosine", dtype=torch.float64, **SMALL, **kwargs)
    with torch.no_grad():  # the output layers start at zero; give the untrained model some signal
        for p in model.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


GUIDES: dict[int, ForwardDiffusion] = {}


def loss_and_grads(elbo: DiffusionELBO, model: DDPM, x: torch.Tensor, seed: int) -> tuple[float, list[torch.Tensor]]:
    guide = GUIDES.setdefault(id(model), ForwardDiffusion(model.schedule))  # one guide per model, as in fit
    model.zero_grad()
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, x)
    return loss, [p.grad.clone() for p in model.network.parameters()]


def assert_same(a, b) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-12, abs=1e-12)
    for ga, gb in zip(a[1], b[1]):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("shape", [(3,), (8, 8)], ids=["mlp", "unet"])
def test_recorded_loss_and_gradients_equal_the_programs(objective, shape):
    model = make_model(shape)
    x = torch.randn(4, *shape, dtype=torch.float64)
    eager, traced = DiffusionELBO(objective), DiffusionELBO(objective, jit=True)
    for seed in (1, 2):  # the first call records, the second replays
        assert_same(loss_and_grads(traced, model, x, seed), loss_and_grads(eager, model, x, seed))
    assert traced._traced.num_traces == 1


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_a_model_with_a_mixture_base_records_the_same_loss(prediction):
    from vi_models import GaussianMixtureDenoiser

    model = make_model(prediction=prediction)
    base = GaussianMixtureDenoiser(torch.tensor([0.3, 0.7]), torch.randn(2, 3), torch.tensor([0.5, 0.2]), model.schedule)
    model = DDPM(3, schedule=model.schedule, base=base, prediction=prediction, network=model.network)
    x = torch.randn(6, 3, dtype=torch.float64)
    eager, traced = DiffusionELBO("hybrid"), DiffusionELBO("hybrid", jit=True)
    for seed in (1, 2):
        assert_same(loss_and_grads(traced, model, x, seed), loss_and_grads(eager, model, x, seed))


def test_replays_draw_fresh_noise_and_follow_parameter_updates():
    model = make_model()
    x = torch.randn(16, 3, dtype=torch.float64)
    traced, eager = DiffusionELBO("simple", jit=True), DiffusionELBO("simple")
    guide = ForwardDiffusion(model.schedule)
    first = traced.loss_and_grads(model, guide, x)
    second = traced.loss_and_grads(model, guide, x)
    assert first != second  # fresh time steps and noise, not a frozen draw
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss_and_grads(traced, model, x, 0)
        opt.step()  # in place: the graph reads the parameters as inputs, not as recorded constants
        assert_same(loss_and_grads(traced, model, x, 7), loss_and_grads(eager, model, x, 7))


def test_a_new_batch_shape_or_dtype_is_recorded_once():
    model = make_model()
    traced, eager = DiffusionELBO("vlb_sampled", jit=True), DiffusionELBO("vlb_sampled")
    for n in (8, 5, 8, 5):
        x = torch.randn(n, 3, dtype=torch.float64)
        assert_same(loss_and_grads(traced, model, x, n), loss_and_grads(eager, model, x, n))
    assert traced._traced.num_traces == 2
    # with validation off (as in a user's training run) a new graph is recorded, and it agrees too
    with pyro.validation_enabled(False):
        x = torch.randn(8, 3, dtype=torch.float64)
        assert_same(loss_and_grads(traced, model, x, 3), loss_and_grads(eager, model, x, 3))
    assert traced._traced.num_traces == 3


def test_fit_with_jit_trains_as_the_programs_do():
    torch.manual_seed(0)
    x = torch.randn(256, 2, dtype=torch.float64) * torch.tensor([2.0, 0.5], dtype=torch.float64) + 1.0
    finals = []
    for jit in (False, True):
        torch.manual_seed(1)
        model = DDPM(2, T=50, schedule="cosine", hidden_dim=16, num_blocks=1, dtype=torch.float64,
                     data_loc=x.mean(0), data_scale=x.std(0))
        result = fit_diffusion(model, ForwardDiffusion(model.schedule), x, jit=jit, epochs=30, batch_size=64, lr=3e-3,
                               seed=0, progress=False, check_convergence=False)
        loss = result.history["loss"]
        assert loss[-1] < 0.8 * loss[0]
        with torch.no_grad():  # the objective itself, on many fresh draws, for both fits
            pyro.set_rng_seed(0)
            finals.append(float(model.simple_loss(x.repeat(20, 1)).mean()))
    assert finals[1] == pytest.approx(finals[0], rel=0.1)


def test_jit_refuses_the_monte_carlo_elbo_and_keyword_calls_fall_back():
    with pytest.raises(ConfigError, match="analytic_kl=False"):
        DiffusionELBO("simple", analytic_kl=False, jit=True)
    assert not TracedLoss.supports((torch.zeros(2),), {"objective": "simple"})
    assert not TracedLoss.supports((), {})
    with pytest.raises(ConfigError, match="max_graphs"):
        TracedLoss(lambda *a: None, lambda *a: [], max_graphs=0)


def test_cli_fit_ddpm_with_jit(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["fit", "ddpm", "--data", "moons", "--out", str(out), "--T", "60", "--hidden-dim", "16", "--num-blocks", "1",
            "--steps", "20", "--ema", "0.9", "--no-progress", "--jit"]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["jit"] is True
    history = json.loads((out / "history.json").read_text())
    assert all(torch.isfinite(torch.tensor(history["loss"])))
