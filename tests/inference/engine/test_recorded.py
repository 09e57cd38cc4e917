"""fit(..., jit=True): every named loss recorded and replayed gives the uncompiled loss and gradients."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceGraph_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.nn import PyroModule, PyroParam

from guides import GaussianEncoder
from inference import fit
from inference.engine._params import collect_params
from inference.engine.losses import make_elbo
from inference.engine.recorded import RecordedELBO
from vi_models import VAE
from vi_models.errors import ConfigError


class Mixture(PyroModule):
    """A two-component 1-D mixture with an enumerated assignment and a MAP (AutoDelta) guide."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = PyroParam(torch.tensor(1.0), constraint=dist.constraints.positive)

    @pyro.infer.config_enumerate
    def forward(self, x: torch.Tensor) -> None:
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
        locs = pyro.sample("locs", dist.Normal(torch.zeros(2), 5.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("x", dist.Normal(locs[z], self.scale), obs=x)


def _pair(kind: str, x: torch.Tensor):
    torch.manual_seed(0)
    if kind == "enum":
        model = Mixture()
        guide = AutoDelta(poutine.block(model, hide=["z"]))
        guide(x)  # build its parameters
        return model, guide
    return VAE(4, 2, hidden_dims=(8,)), GaussianEncoder(4, 2, hidden_dims=(8,))


@pytest.mark.parametrize("loss, particles", [("meanfield", 1), ("elbo", 1), ("elbo", 3), ("iwae", 5), ("enum", 1)])
def test_recorded_loss_and_gradients_equal_the_programs(loss, particles, float64):
    x = torch.randn(16) * 3 if loss == "enum" else torch.randn(16, 4)
    model, guide = _pair(loss, x)
    plain = make_elbo(loss, num_particles=particles, max_plate_nesting=1)
    recorded = RecordedELBO(make_elbo(loss, num_particles=particles, max_plate_nesting=1))
    params = collect_params(plain, model, guide, (x,), [model, guide])
    results = []
    for elbo in (plain, recorded, recorded):  # the second replay reuses the recorded graph
        for p in params:
            p.grad = None
        torch.manual_seed(1)
        value = elbo.loss_and_grads(model, guide, x)
        results.append((value, [p.grad.clone() for p in params]))
    assert recorded.num_traces == 1
    for value, grads in results[1:]:
        assert value == pytest.approx(results[0][0], rel=1e-12, abs=1e-12)
        for a, b in zip(grads, results[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fit_with_jit_trains_exactly_as_without(float64):
    x = torch.randn(64, 4)
    runs = {}
    for jit in (False, True):
        model, guide = _pair("vae", x)
        result = fit(model, guide, x, loss="meanfield", epochs=3, batch_size=24, seed=0, progress=False, jit=jit,
                     check_convergence=False)
        runs[jit] = (result.history["loss"], [p.detach().clone() for p in (*model.parameters(), *guide.parameters())])
        assert result.config["jit"] is jit
    assert runs[True][0] == runs[False][0]  # a smaller last batch (64 = 2 x 24 + 16) records a second graph
    for a, b in zip(runs[True][1], runs[False][1]):
        assert torch.equal(a, b)


def test_a_guide_that_needs_score_functions_is_refused():
    def model(x):
        k = pyro.sample("k", dist.Bernoulli(0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(k, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
        pyro.sample("k", dist.Bernoulli(p))

    with pytest.raises(ConfigError, match="reparameterised or enumerated"):
        fit(model, guide, torch.randn(8), loss="elbo", epochs=1, progress=False, jit=True)


def test_only_the_engine_losses_are_recorded():
    with pytest.raises(ConfigError, match="Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO or RenyiELBO"):
        RecordedELBO(TraceGraph_ELBO())


@pytest.mark.parametrize("family", ["vae", "flow", "made", "gmm"])
def test_the_command_line_records_the_loss_with_jit(family, tmp_path):
    from inference.cli import main

    out = tmp_path / family
    sizes = {"vae": ["--hidden-dims", "8", "--z-dim", "2"], "flow": ["--flow", "realnvp", "--num-layers", "2",
             "--hidden-dims", "8"], "made": ["--hidden-dims", "8", "--num-components", "2"],
             "gmm": ["--method", "svi", "-k", "2"]}[family]
    assert main(["fit", family, "--data", "moons", "--out", str(out), "--epochs", "1", "--no-progress", "--jit",
                 *sizes]) == 0
    import json

    assert json.loads((out / "config.json").read_text())["model_config"]["jit"] is True
    assert main(["evaluate", str(out), "--num-samples", "4"]) == 0
