"""Tests of vi_models.diffusion (DDPM): the contract over every configuration, the objectives
against each other and against a brute-force Monte Carlo ELBO (T18, T19), sampling (T20,
T26) and the probability-flow likelihood on Gaussian data (T21). Float64, seeded."""

from __future__ import annotations

import copy
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from guides.diffusion import ForwardDiffusion
from inference.engine.diffusion_elbo import OBJECTIVES, DiffusionELBO, fit_diffusion
from vi_models.diffusion.ddpm import DDPM
from vi_models.diffusion.schedules import NoiseSchedule
from vi_models.diffusion.sites import OBSERVED, PREVIOUS, PRIOR, STATE, TIME, chain_site
from vi_models.errors import ConfigError, DataError

B = 3
# (data_shape, image_shape): vectors through the MLP, images and flat images through the U-Net.
LAYOUTS = {"vector": (3, None), "image": ((8, 8), None), "flat-image": (64, (8, 8))}
SMALL = {"hidden_dim": 8, "num_blocks": 1, "unet_channels": (4, 8)}


def make_model(layout: str = "vector", prediction: str = "eps", variance: str = "fixed_small", T: int = 5,
               **kwargs) -> DDPM:
    shape, image = LAYOUTS[layout]
    model = DDPM(shape, T=T, schedule="cosine", prediction=prediction, variance=variance, image_shape=image,
                 **SMALL, **kwargs)
    with torch.no_grad():  # the output layers start at zero; give the untrained model some signal
        for p in model.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def data_for(model: DDPM, n: int = B) -> torch.Tensor:
    return torch.randn(n, *model.data_shape)


def pin(guide, **values):
    """The guide with some of its sample sites set to ``values`` (still latent, unlike condition)."""
    trace = poutine.Trace()
    for name, value in values.items():
        trace.add_node(name, type="sample", is_observed=False, value=value, infer={})
    return poutine.replay(guide, trace=trace)


class GaussianEps(nn.Module):
    """The exact E[eps | y_t], E[x_0 | y_t] or E[v | y_t] at real t for data y_0 ~ N(m, U diag(lam) U^T).

    In the eigenbasis z = U^T y every coordinate is an independent 1-D problem with variance lam_i:
    Var(z_t) = a lam + 1 - a, E[eps_z | z_t] = sqrt(1 - a) (z_t - sqrt(a) m_z) / Var(z_t).
    """

    def __init__(self, schedule: NoiseSchedule, m, lam, rotation=None, prediction: str = "eps") -> None:
        super().__init__()
        lam = torch.as_tensor(lam, dtype=torch.get_default_dtype())
        self.schedule, self.prediction = schedule, prediction
        self.U = torch.eye(lam.numel()) if rotation is None else rotation
        self.m_z = self.U.T @ torch.as_tensor(m, dtype=lam.dtype)
        self.lam = lam
        self.dummy = nn.Parameter(torch.zeros(()))  # so an ELBO has a parameter to announce

    def forward(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.schedule.alphas_cumprod_at(t).unsqueeze(-1)
        z = y @ self.U  # z = U^T y, row-wise
        var = a * self.lam + 1 - a
        eps = (1 - a).sqrt() * (z - a.sqrt() * self.m_z) / var
        x0 = self.m_z + a.sqrt() * self.lam * (z - a.sqrt() * self.m_z) / var
        out = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[self.prediction]
        return out @ self.U.T + 0 * self.dummy


def rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]])


# ---------------------------------------------------------------------------- contract


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_contract_shapes_gradients_seeds(float64, layout, prediction, variance):
    model = make_model(layout, prediction, variance)
    guide = ForwardDiffusion(model.schedule)
    x = data_for(model)
    T = model.T
    assert model.vlb_terms(x).shape == (B, T + 1) and model.vlb(x).shape == (B,)
    assert model.simple_loss(x).shape == (B,)
    for sampler, steps in (("ancestral", None), ("ddim", 3)):
        assert model.sample(2, sampler=sampler, steps=steps, eta=0.5).shape == (2, *model.data_shape)
    assert model(None, num_samples=2).shape == (2, *model.data_shape)
    params = dict(model.named_parameters())
    for objective in OBJECTIVES:
        loss = DiffusionELBO(objective).differentiable_loss(model, guide, x)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        missing = [n for n, g in zip(params, grads) if g is None or not bool(torch.isfinite(g).all())]
        assert not missing, (objective, missing)
    pyro.set_rng_seed(5)
    first = DiffusionELBO("simple").loss(model, guide, x)
    pyro.set_rng_seed(5)
    assert DiffusionELBO("simple").loss(model, guide, x) == first


def test_log_prob_shapes_and_state_dict_round_trip(float64):
    model = make_model("vector", ema_decay=0.9)
    x = data_for(model)
    lp = model.log_prob(x, rtol=1e-3, atol=1e-3)
    assert lp.shape == (B,) and bool(torch.isfinite(lp).all())
    clone = DDPM(3, T=5, schedule="cosine", ema_decay=0.9, **SMALL)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.log_prob(x, rtol=1e-3, atol=1e-3), lp)
    gen = [torch.Generator().manual_seed(2) for _ in range(2)]
    torch.testing.assert_close(clone.sample(4, generator=gen[0]), model.sample(4, generator=gen[1]))


def test_sites_of_each_objective(float64):
    model = make_model()
    guide = ForwardDiffusion(model.schedule)
    x = data_for(model)
    expected = {
        "vlb_sampled": [TIME, STATE, PREVIOUS, PRIOR],
        "simple": [TIME, STATE, PREVIOUS],
        "chain": [chain_site(t) for t in range(model.T, 0, -1)],
    }
    for objective, sites in expected.items():
        tr = poutine.trace(guide).get_trace(x, objective=objective)
        assert [n for n, s in tr.nodes.items() if s["type"] == "sample" and not n.startswith("data")] == sites
        model_tr = poutine.trace(poutine.replay(model, trace=tr)).get_trace(x, objective=objective)
        assert model_tr.nodes[OBSERVED]["is_observed"]
    tr = poutine.trace(guide).get_trace(x, objective="vlb")
    assert tr.nodes[PREVIOUS]["value"].shape == (model.T, B, 3)  # the time plate holds all T steps


# ---------------------------------------------------------------------------- objectives (T18, T19)


@pytest.mark.theory("T18", "T19")
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_objectives_agree_exactly_for_pinned_steps(float64, prediction):
    """With t and x_t pinned, Pyro's analytic-KL ELBO of each objective equals the hand-written
    terms: the time-sampled estimator averaged over t is the exact L_VLB (unbiased), L_simple is
    ||eps - eps_theta||^2, and hybrid is their weighted sum."""
    model = make_model("vector", prediction, "fixed_large")
    guide = ForwardDiffusion(model.schedule)
    s, T = model.schedule, model.T
    x = data_for(model)
    noise = torch.randn(T, B, 3)
    terms = model.vlb_terms(x, noise=noise)
    y0 = s.normalise(x)
    states = s.q_sample(y0, torch.arange(1, T + 1).unsqueeze(-1), noise)  # (T, B, 3)

    full = DiffusionELBO("vlb").loss(model, pin(guide, x_t=states), x)
    assert full == pytest.approx(float(terms.sum()), rel=1e-10)
    sampled = []
    for t in range(1, T + 1):
        g = pin(guide, t=torch.full((B,), t), x_t=states[t - 1])
        per_t = DiffusionELBO("vlb_sampled").loss(model, g, x)
        assert per_t == pytest.approx(float(T * terms[:, t - 1].sum() + terms[:, T].sum()), rel=1e-10)
        sampled.append(per_t)
        simple = DiffusionELBO("simple").loss(model, g, x)
        with torch.no_grad():
            want = model.simple_loss(x, t=torch.full((B,), t), noise=noise[t - 1]).sum()
        assert simple == pytest.approx(float(want), rel=1e-9, abs=1e-9)
        hybrid = DiffusionELBO("hybrid", hybrid_weight=0.01).loss(model, g, x)
        assert hybrid == pytest.approx(simple + 0.01 * per_t, rel=1e-9)
    assert sum(sampled) / T == pytest.approx(full, rel=1e-10)  # E_t[estimator] = L_VLB exactly


@pytest.mark.theory("T19")
def test_gradients_reach_the_network_with_and_without_param_sites(float64):
    """DiffusionELBO announces no param sites to its own traces (speed), yet loss_and_grads gives
    the gradient of the hand-written L_simple; under a param-only trace (how inference.fit and
    SVI collect parameters) every network parameter is announced."""
    model = make_model("vector")
    guide = ForwardDiffusion(model.schedule)
    x = data_for(model)
    t, noise = torch.tensor([1, 3, 5]), torch.randn(B, 3)
    states = model.schedule.q_sample(model.schedule.normalise(x), t, noise)
    params = list(model.network.parameters())
    DiffusionELBO("simple").loss_and_grads(model, pin(guide, t=t, x_t=states), x)
    got = [p.grad.clone() for p in params]
    model.zero_grad()
    want = torch.autograd.grad(model.simple_loss(x, t=t, noise=noise).sum(), params)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)
    with poutine.trace(param_only=True) as capture:
        DiffusionELBO("simple").loss(model, guide, x)
    assert {n for n in capture.trace.nodes} == {f"network$$${n}" for n, _ in model.network.named_parameters()}  # pyro.module names


@pytest.mark.theory("T18", "T1")
def test_brute_force_monte_carlo_elbo_of_the_chain_matches_l_vlb(float64):
    """T = 4: Pyro's Trace_ELBO on the literal chain (Monte Carlo over every x_t, no analytic KL)
    agrees with the analytic L_VLB, and the time-sampled estimator with both, within 4.5 SE."""
    model = DDPM(2, schedule=[0.05, 0.2, 0.4, 0.6], hidden_dim=8, num_blocks=1)
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    guide = ForwardDiffusion(model.schedule)
    x = torch.tensor([[0.5, -1.0]])
    k = 6000

    def draws(objective: str, analytic: bool) -> torch.Tensor:
        loss = DiffusionELBO(objective, analytic_kl=analytic, max_plate_nesting=2)
        with pyro.plate("particles", k, dim=-3 if objective == "vlb" else -2):
            guide_tr = poutine.trace(guide).get_trace(x, objective=loss.objective)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, objective=loss.objective)
        guide_tr.compute_log_prob()
        model_tr.compute_log_prob()
        # per-particle log p - log q over every site (masked and scaled as the ELBO does)
        total = torch.zeros(k)
        for sign, tr in ((-1.0, model_tr), (1.0, guide_tr)):
            for name, site in tr.nodes.items():
                if site["type"] == "sample" and not name.startswith(("data", "particles", "time")):
                    lp = site["log_prob"]
                    total = total + sign * lp.reshape(k, -1).sum(-1)
        return total  # -ELBO per particle

    with torch.no_grad():
        brute = draws("chain", analytic=False)
        sampled = draws("vlb_sampled", analytic=False)
    exact = model.vlb(x.expand(k, 2))  # k independent draws of the analytic-KL bound

    for estimate in (brute, sampled):
        se = math.sqrt(float(estimate.var()) / k + float(exact.var()) / k)
        assert abs(float(estimate.mean() - exact.mean())) < 4.5 * se, (float(estimate.mean()), float(exact.mean()), se)
    assert float(exact.var()) < float(brute.var())  # analytic KLs remove the Monte Carlo over x_{t-1}
    # and the engine's own estimates: analytic KL through the chain, and Pyro's default ELBOs
    for loss in (DiffusionELBO("chain", num_particles=200, vectorize_particles=True, max_plate_nesting=1),
                 TraceMeanField_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1),
                 Trace_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1)):
        value = loss.loss(model, guide, x)
        assert abs(value - float(exact.mean())) < 6 * math.sqrt(float(brute.var()) / 200), (type(loss).__name__, value)


# ---------------------------------------------------------------------------- sampling (T20, T26)


@pytest.mark.theory("T20", "T26")
def test_ddim_with_all_steps_and_eta_one_is_the_ancestral_sampler(float64):
    model = make_model("vector", T=8)
    same = [torch.Generator().manual_seed(11) for _ in range(2)]
    ancestral = model.sample(5, generator=same[0])
    ddim = model.sample(5, sampler="ddim", steps=model.T, eta=1.0, generator=same[1])
    torch.testing.assert_close(ddim, ancestral, rtol=1e-10, atol=1e-10)


@pytest.mark.theory("T20", "T26")
def test_trajectory_snapshots_are_states_of_the_ancestral_chain(float64):
    """The recorded chain starts at the prior draw x_T and ends at the ancestral sample (same seed)."""
    from vi_models.diffusion.sampling import ancestral_trajectory

    model = make_model("vector", T=8, data_loc=1.0, data_scale=2.0)
    xs = ancestral_trajectory(model, 4, [8, 5, 0], generator=torch.Generator().manual_seed(3))
    first = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    assert xs.shape == (3, 4, 3)
    torch.testing.assert_close(xs[0], 1.0 + 2.0 * first)  # x_T ~ N(0, I), in the data's units
    torch.testing.assert_close(xs[-1], model.sample(4, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ConfigError, match="expected times as steps in 0..T = 8"):
        ancestral_trajectory(model, 4, [9])


@pytest.mark.theory("T20", "T26")
def test_samplers_reach_the_data_distribution_with_the_exact_denoiser(float64):
    """Data N(1, 0.5^2): with the exact E[eps | x_t] the ancestral chain (Algorithm 2), DDIM with
    eta = 1 and S = T (independent seeds), and the Pyro model's own prior predictive all give samples
    with the data's moments."""
    m, s = 1.0, 0.5
    sched = NoiseSchedule(200, "linear")
    model = DDPM(1, schedule=sched, network=GaussianEps(sched, [m], [s * s]))
    n = 4000
    draws = {
        "ancestral": model.sample(n, generator=torch.Generator().manual_seed(1)),
        "ddim-eta1": model.sample(n, sampler="ddim", steps=200, eta=1.0, generator=torch.Generator().manual_seed(2)),
        "ddim-eta0": model.sample(n, sampler="ddim", steps=100, eta=0.0, generator=torch.Generator().manual_seed(3)),
        "pyro": model(None, num_samples=n).detach(),
    }
    for name, xs in draws.items():
        assert abs(float(xs.mean()) - m) < 5 * s / math.sqrt(n), name
        assert abs(float(xs.std()) - s) < 0.05, name  # sampler error plus 5 sampling SE


def test_each_sampler_calls_the_network_once_per_step(float64):
    model = make_model("vector", T=12)
    calls = []
    model.network.register_forward_hook(lambda *args: calls.append(1))
    model.sample(2)
    assert len(calls) == 12
    calls.clear()
    model.sample(2, sampler="ddim", steps=4)
    assert len(calls) == 4
    calls.clear()
    guide = ForwardDiffusion(model.schedule)
    DiffusionELBO("simple").loss(model, guide, data_for(model))
    assert len(calls) == 1  # a training step of a time-sampled objective: one call on the batch


# ---------------------------------------------------------------------------- likelihood (T21)


@pytest.mark.theory("T21")
@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_ode_log_likelihood_of_gaussian_data_is_exact(float64, prediction):
    """Data x = loc + scale y, y ~ N(m, U diag(lam) U^T). With the exact denoiser the flow maps
    q_T (variances a_T lam + 1 - a_T) onto the data law coordinate by coordinate in the eigenbasis,
    so the model density of each z_i = (U^T y)_i is N(m_i - sqrt(lam_i a_T / v_i) m_i, lam_i / v_i),
    v_i = a_T lam_i + 1 - a_T: exact, and close to the data density since abar_T is small."""
    m, lam, rot = torch.tensor([0.5, -1.0]), torch.tensor([0.3**2, 1.3**2]), rotation(0.5)
    loc, scale = 1.0, 2.0
    sched = NoiseSchedule(100, "linear", data_loc=loc, data_scale=scale)
    model = DDPM(2, schedule=sched, prediction=prediction, network=GaussianEps(sched, m, lam, rot, prediction))
    cov_y = rot @ torch.diag(lam) @ rot.T
    y = torch.distributions.MultivariateNormal(m, cov_y).sample((4,))
    x = loc + scale * y
    got = model.log_prob(x, rtol=1e-8, atol=1e-8)
    # the integration starts at t = 0, or t = 1e-3 for x0-prediction (see vi_models.diffusion.ode)
    a0 = float(sched.alphas_cumprod_at(torch.tensor(1e-3 if prediction == "x0" else 0.0)))
    a_T = float(sched.alphas_cumprod[-1])
    m_z, z = rot.T @ m, y @ rot
    mean0, var0 = math.sqrt(a0) * m_z, a0 * lam + 1 - a0
    v_T = a_T * lam + 1 - a_T
    exact = torch.distributions.Normal(mean0 - (var0 * a_T / v_T).sqrt() * m_z, (var0 / v_T).sqrt())
    want = exact.log_prob(z).sum(-1) - 2 * math.log(scale)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    data = torch.distributions.MultivariateNormal(loc + scale * m, scale**2 * cov_y).log_prob(x)
    torch.testing.assert_close(got, data, rtol=0, atol=0.02)  # the p_T mismatch, abar_T = 4e-5
    if prediction == "eps":
        hutch = torch.stack([model.log_prob(x, trace="hutchinson", rtol=1e-6, atol=1e-6,
                                            generator=torch.Generator().manual_seed(i)) for i in range(16)])
        se = hutch.std(0) / math.sqrt(16)
        assert bool((se > 1e-3).all())  # the Jacobian is not diagonal: the probes matter
        assert bool(((hutch.mean(0) - got).abs() <= 4 * se).all())  # unbiased trace estimate


def test_log_prob_of_a_row_does_not_depend_on_its_batch(float64):
    model = make_model("vector")
    x = data_for(model, 4)
    kw = {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(model.log_prob(x, **kw)[:2], model.log_prob(x[:2], **kw), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- training, EMA


def test_ema_follows_the_optimizer_steps(float64, tmp_path):
    model = make_model("vector", ema_decay=0.5)
    start = copy.deepcopy(model.network.state_dict())
    guide = ForwardDiffusion(model.schedule)
    x = torch.randn(16, 3)
    result = fit_diffusion(model, guide, x, objective="hybrid", epochs=2, batch_size=8, lr=1e-2, seed=0,
                           progress=False, checkpoint_dir=tmp_path, check_convergence=False)
    assert int(model.ema_updates) == 4 and len(result.history["loss"]) == 2
    online, ema = dict(model.network.named_parameters()), dict(model.ema_network.named_parameters())
    moved = [k for k in online if not torch.equal(online[k], start[k])]
    assert moved and all(not torch.equal(ema[k], online[k]) for k in moved)
    assert not any(p.requires_grad for p in model.ema_network.parameters())
    # the warm-up rule d = min(decay, (1 + n) / (10 + n)): one update by hand
    before = {k: v.clone() for k, v in ema.items()}
    model.update_ema()
    d = min(0.5, 5 / 14)
    for k, value in ema.items():
        torch.testing.assert_close(value, d * before[k] + (1 - d) * online[k])
    resumed = fit_diffusion(model, guide, x, objective="hybrid", epochs=3, batch_size=8, lr=1e-2, seed=0,
                            progress=False, checkpoint_dir=tmp_path, resume=True, check_convergence=False)
    assert resumed.epochs_run == 3


# ---------------------------------------------------------------------------- validation


def test_invalid_arguments_raise_clear_errors(float64):
    with pytest.raises(ConfigError, match="prediction"):
        DDPM(2, prediction="score")
    with pytest.raises(ConfigError, match="ema_decay"):
        DDPM(2, T=60, ema_decay=1.5)
    with pytest.raises(ConfigError, match="from the NoiseSchedule"):
        DDPM(2, schedule=NoiseSchedule(60), T=80)
    model = make_model()
    with pytest.raises(DataError, match=r"shape \(B, 3\)"):
        model.vlb(torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="sampler"):
        model.sample(2, sampler="euler")
    with pytest.raises(ConfigError, match="steps <= T"):
        model.sample(2, sampler="ddim", steps=50)
    with pytest.raises(ConfigError, match="no EMA"):
        model.sample(2, use_ema=True)
    with pytest.raises(ConfigError, match="diffusion objective"):
        DiffusionELBO("elbo2")
    with pytest.raises(ConfigError, match="NoiseSchedule"):
        ForwardDiffusion(model)
    with pytest.raises(ConfigError, match="either data"):
        model()
    with pytest.raises(ConfigError, match="trace"):
        model.log_prob(data_for(model), trace="skilling")


def test_ddim_clip_x0_bounds_the_samples_and_is_a_no_op_when_loose(float64):
    # An untrained network from the cosine schedule's t = T: x_0 = (x_T - sqrt(1 - abar_T) eps) / sqrt(abar_T)
    # amplifies its error by 1 / sqrt(abar_T), so a coarse DDIM grid throws samples far out; the clamp
    # of x_0 (and the noise recomputed from it) keeps every step, and the last one is x_0 itself.
    torch.manual_seed(0)
    model = DDPM((2,), T=20, schedule="cosine").double()
    draw = lambda **kw: model.sample(200, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(1), **kw)
    plain = draw()
    assert plain.abs().max() > 10  # the blow-up the option exists for
    torch.testing.assert_close(draw(clip_x0=1e9), plain, rtol=1e-4, atol=1e-4)
    clipped = model.schedule.normalise(draw(clip_x0=0.5))
    assert clipped.abs().max() <= 0.5 + 1e-12  # abar_0 = 1: the last DDIM step returns the clamped x_0
    with pytest.raises(ConfigError, match="clip_x0"):
        model.sample(3, sampler="ddim", steps=5, clip_x0=-1.0)
    with pytest.raises(ConfigError, match="sampler='ddim' only"):
        model.sample(3, clip_x0=1.0)
