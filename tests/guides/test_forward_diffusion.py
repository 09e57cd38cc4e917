"""Tests of guides.diffusion.ForwardDiffusion: the fixed encoder q(x_{1:T} | x_0) of a DDPM.

Its top-down factorisation q(x_T | x_0) prod_t q(x_{t-1} | x_t, x_0) must be the forward Markov
chain prod_t q(x_t | x_{t-1}) (T14, T17), draw for draw and in its marginals."""

from __future__ import annotations

import math

import pytest
import torch
from pyro import poutine
from torch.distributions import Normal

from guides.diffusion import ForwardDiffusion
from inference.engine.diffusion_elbo import DiffusionObjective
from vi_models.diffusion.ddpm import DDPM
from vi_models.diffusion.schedules import NoiseSchedule
from vi_models.diffusion.sites import PREVIOUS, PRIOR, STATE, TIME, chain_site
from vi_models.errors import ConfigError, DataError


def latent_sites(trace: poutine.Trace) -> list[str]:
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not n.startswith(("data", "time"))]


@pytest.mark.theory("T14", "T17")
def test_top_down_factorisation_is_the_forward_markov_chain(float64):
    """log q(x_T | x_0) + sum_t log q(x_{t-1} | x_t, x_0) = sum_t log q(x_t | x_{t-1}) (x_0 given),
    at every draw: Bayes' rule for a Markov chain, checked on the guide's own samples."""
    sched = NoiseSchedule(6, "cosine", data_loc=0.5, data_scale=2.0)
    guide = ForwardDiffusion(sched)
    x = torch.randn(4, 3)
    tr = poutine.trace(guide).get_trace(x, objective="chain")
    tr.compute_log_prob()
    assert latent_sites(tr) == [chain_site(t) for t in range(6, 0, -1)]
    top_down = sum(tr.nodes[chain_site(t)]["log_prob"] for t in range(1, 7))
    states = [sched.normalise(x)] + [tr.nodes[chain_site(t)]["value"] for t in range(1, 7)]
    forward = sum(
        Normal((1 - sched.betas[t]).sqrt() * states[t - 1], sched.betas[t].sqrt()).log_prob(states[t]).sum(-1)
        for t in range(1, 7)
    )
    torch.testing.assert_close(top_down, forward, rtol=1e-10, atol=1e-10)


@pytest.mark.theory("T14")
def test_chain_draws_have_the_forward_marginals(float64):
    sched = NoiseSchedule(5, "cosine")
    guide = ForwardDiffusion(sched, data_shape=(1,))
    n = 50_000
    x0 = torch.full((n, 1), 1.3)
    tr = poutine.trace(guide).get_trace(x0, objective="chain")
    for t in (1, 3, 5):
        v = tr.nodes[chain_site(t)]["value"].squeeze(-1)
        mean, var = math.sqrt(float(sched.alphas_cumprod[t])) * 1.3, 1 - float(sched.alphas_cumprod[t])
        assert abs(float(v.mean()) - mean) < 5 * math.sqrt(var / n)
        assert abs(float(v.var()) - var) < 5 * var * math.sqrt(2 / n)


def test_per_step_sites_scales_and_masks(float64):
    sched = NoiseSchedule(8, "cosine", data_loc=1.0, data_scale=0.5)
    guide = ForwardDiffusion(sched)
    x = torch.randn(50, 2)
    obj = DiffusionObjective("simple")
    tr = poutine.trace(guide).get_trace(x, objective=obj)
    assert latent_sites(tr) == [TIME, STATE, PREVIOUS]  # no L_T without an L_VLB term
    t = tr.nodes[TIME]["value"]
    assert t.dtype == torch.long and int(t.min()) >= 1 and int(t.max()) <= 8
    assert tr.nodes[STATE]["mask"] is False  # x_t only conditions the next site
    torch.testing.assert_close(tr.nodes[PREVIOUS]["mask"], t > 1)
    torch.testing.assert_close(tr.nodes[PREVIOUS]["scale"], 1.0 / sched.loss_weights[t])  # T / (T w_t)
    post_mean, post_var = sched.q_posterior(sched.normalise(x), tr.nodes[STATE]["value"], t)
    fn = tr.nodes[PREVIOUS]["fn"].base_dist
    keep = t > 1
    torch.testing.assert_close(fn.loc[keep], post_mean[keep])
    torch.testing.assert_close(fn.scale[keep] ** 2, post_var.expand_as(post_mean)[keep])
    vlb = poutine.trace(guide).get_trace(x, objective="vlb_sampled")
    assert latent_sites(vlb)[-1] == PRIOR
    t = vlb.nodes[TIME]["value"]
    torch.testing.assert_close(vlb.nodes[PREVIOUS]["scale"], torch.full((50,), 8.0))
    prior = vlb.nodes[PRIOR]["fn"].base_dist
    torch.testing.assert_close(prior.loc, sched.sqrt_alphas_cumprod[-1] * (x - 1.0) / 0.5)


def test_it_shares_the_model_schedule_and_has_no_parameters(float64):
    model = DDPM(2, T=60, hidden_dim=8, num_blocks=1)
    guide = ForwardDiffusion(model.schedule)
    assert guide.schedule is model.schedule
    assert list(guide.parameters()) == []


def test_invalid_inputs_raise_clear_errors(float64):
    with pytest.raises(ConfigError, match="NoiseSchedule"):
        ForwardDiffusion("linear")
    guide = ForwardDiffusion(NoiseSchedule(60), data_shape=(2,))
    with pytest.raises(DataError, match=r"shape \(B, 2\)"):
        guide(torch.zeros(3, 4))
    with pytest.raises(ConfigError, match="objective"):
        guide(torch.zeros(3, 2), objective="elbo")
