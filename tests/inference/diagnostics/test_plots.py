"""Tests of inference.diagnostics.plots: what each figure draws is checked against the inputs and against
independent computations (ellipse vertices at the right Mahalanobis distance, PCA as
scikit-learn's, averaged DDPM terms), and bad shapes raise DataError naming expected and got."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from sklearn.decomposition import PCA

from inference.diagnostics.plots import (
    plot_diffusion_trajectories,
    plot_elbo_terms,
    plot_latent_scatter,
    plot_mixture_ellipses,
    plot_vlb_terms,
)
from vi_models.errors import ConfigError, DataError


def _scatters(ax) -> list[np.ndarray]:
    return [np.asarray(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)]


def _ellipse_vertices(patch: Ellipse) -> np.ndarray:
    """Points of the ellipse's outline in data coordinates (the patch maps the unit circle)."""
    angle = np.linspace(0, 2 * np.pi, 17)
    return patch.get_patch_transform().transform(np.stack([np.cos(angle), np.sin(angle)], -1))


# --------------------------------------------------------------------------- ELBO terms


def test_elbo_terms_draws_reconstruction_left_and_kl_on_a_second_axis():
    terms = {"reconstruction:x": [-50.0, -40.0, -35.0], "kl:z": [1.0, 3.0, 4.0], "kl:w": [0.5, 0.4, 0.3]}
    fig = plot_elbo_terms(terms)
    assert isinstance(fig, Figure)
    left, right = fig.axes  # the KL terms live on a twin axis: their scale is much smaller
    np.testing.assert_allclose(left.lines[0].get_ydata(), terms["reconstruction:x"])
    np.testing.assert_allclose(left.lines[0].get_xdata(), [1, 2, 3])
    assert [list(line.get_ydata()) for line in right.lines] == [terms["kl:z"], terms["kl:w"]]
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert len(labels) == 3 and "'z'" in labels[1] and "'w'" in labels[2]


def test_elbo_terms_epoch_key_sets_the_x_values():
    fig = plot_elbo_terms({"epoch": [5, 10], "reconstruction:x": [-3.0, -2.0], "kl:z": [0.1, 0.2]})
    left, right = fig.axes
    np.testing.assert_allclose(left.lines[0].get_xdata(), [5, 10])
    np.testing.assert_allclose(right.lines[0].get_xdata(), [5, 10])
    assert len(left.lines) == 1 and len(right.lines) == 1  # "epoch" itself is not a curve


def test_elbo_terms_on_given_axes_without_kl_uses_one_axis():
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    out = plot_elbo_terms({"reconstruction:x": np.array([-3.0, -2.0])}, ax=ax)
    assert out is fig and fig.axes == [ax] and len(ax.lines) == 1


@pytest.mark.parametrize("terms, match", [
    ({}, "non-empty mapping"),
    ({"reconstruction:x": [1.0, 2.0], "kl:z": [1.0]}, "same non-zero number of epochs"),
    ({"kl:z": [1.0, float("nan")]}, "finite"),
    ({"epoch": [1, 2]}, "besides 'epoch'"),
])
def test_elbo_terms_bad_input(terms, match):
    with pytest.raises(DataError, match=match):
        plot_elbo_terms(terms)


# --------------------------------------------------------------------------- DDPM terms


def test_vlb_terms_averages_the_batch_and_separates_l0_and_lt():
    g = torch.Generator().manual_seed(0)
    terms = torch.rand(6, 11, generator=g, dtype=torch.float64) + 0.1  # (B, T + 1), T = 10
    before = terms.clone()
    fig = plot_vlb_terms(terms)
    ax = fig.axes[0]
    mean = terms.mean(0).numpy()
    middle, first, last = ax.lines
    np.testing.assert_allclose(middle.get_xdata(), np.arange(1, 10))
    np.testing.assert_allclose(middle.get_ydata(), mean[1:10])
    np.testing.assert_allclose(first.get_ydata(), mean[:1])
    np.testing.assert_allclose(last.get_ydata(), mean[10:])
    assert ax.get_yscale() == "log"
    assert f"{mean.sum():.4g}" in ax.get_title()
    assert torch.equal(terms, before)  # the caller's tensor is untouched


def test_vlb_terms_negative_decoder_term_and_linear_scale():
    terms = np.array([-2.0, 0.5, 0.3, 0.1, 1.5])  # (T + 1,): L_0 of continuous data may be negative
    assert plot_vlb_terms(terms).axes[0].get_yscale() == "symlog"
    assert plot_vlb_terms(terms, log=False).axes[0].get_yscale() == "linear"


@pytest.mark.parametrize("terms", [torch.zeros(3, 4, 5), torch.zeros(1), torch.zeros(0, 5)])
def test_vlb_terms_bad_shape(terms):
    with pytest.raises(DataError, match=r"expected terms of shape \(T \+ 1,\) or \(B, T \+ 1\)"):
        plot_vlb_terms(terms)


# --------------------------------------------------------------------------- mixture ellipses


def _mixture():
    g = torch.Generator().manual_seed(1)
    means = torch.tensor([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]], dtype=torch.float64)
    a = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    cov = a @ a.mT + 0.2 * torch.eye(2, dtype=torch.float64)  # (K, 2, 2) positive definite
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    return x, means, cov


def test_mixture_ellipses_lie_at_the_requested_mahalanobis_distances():
    x, means, cov = _mixture()
    n_std = (1.0, 2.0, 3.0)
    fig = plot_mixture_ellipses(x, means, cov, torch.tensor([0.5, 0.3, 0.2]), n_std=n_std)
    ax = fig.axes[0]
    ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 3 * len(n_std)
    precision = np.linalg.inv(cov.numpy())
    for i, patch in enumerate(ellipses):
        k, r = divmod(i, len(n_std))
        diff = _ellipse_vertices(patch) - means[k].numpy()
        mahalanobis = np.sqrt(np.einsum("ni,ij,nj->n", diff, precision[k], diff))
        np.testing.assert_allclose(mahalanobis, n_std[r], rtol=1e-6)
    (data,) = _scatters(ax)
    np.testing.assert_allclose(data, x.numpy())
    assert len(ax.get_legend().get_texts()) == 1 + 3  # the data and one entry per component


@pytest.mark.parametrize("layout", ["diag", "spherical", "tied"])
def test_mixture_ellipses_accept_scikit_learn_layouts(layout):
    x, means, _ = _mixture()
    compact = {"diag": torch.tensor([[1.0, 0.5], [2.0, 0.3], [0.4, 0.4]]), "spherical": torch.tensor([1.0, 0.5, 2.0]),
               "tied": torch.tensor([[1.0, 0.3], [0.3, 0.5]])}[layout]
    if layout == "diag":
        full = torch.diag_embed(compact)
    elif layout == "spherical":
        full = compact[:, None, None] * torch.eye(2)
    else:
        full = compact.expand(3, 2, 2)
    drawn = plot_mixture_ellipses(x, means, compact).axes[0].patches
    expected = plot_mixture_ellipses(x, means, full).axes[0].patches
    assert len(drawn) == len(expected) == 6
    for a, b in zip(drawn, expected):
        np.testing.assert_allclose(_ellipse_vertices(a), _ellipse_vertices(b), atol=1e-9)


def test_mixture_ellipses_ambiguous_layout_needs_covariance_type():
    x = torch.randn(50, 2)
    means = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    cov = torch.tensor([[1.0, 0.2], [0.2, 1.0]])  # (2, 2) with K = 2: tied or diag?
    with pytest.raises(DataError, match="ambiguous.*covariance_type"):
        plot_mixture_ellipses(x, means, cov)
    tied = plot_mixture_ellipses(x, means, cov, covariance_type="tied").axes[0].patches
    assert len(tied) == 4 and tied[0].width == pytest.approx(tied[2].width)


def test_mixture_ellipses_draw_on_given_axes():
    x, means, cov = _mixture()
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    assert plot_mixture_ellipses(x, means, cov, ax=ax, n_std=(1.5,)) is fig
    assert len(ax.patches) == 3


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.zeros(10, 3), torch.zeros(2, 2), torch.ones(2)), {}, DataError, r"x of shape \(N, 2\), got \(10, 3\)"),
    ((torch.zeros(10, 2), torch.zeros(2, 3), torch.ones(2)), {}, DataError, r"means of shape \(K, 2\)"),
    ((torch.zeros(10, 2), torch.zeros(3, 2), torch.ones(3, 3)), {}, DataError, r"covariances of shape \(3, 2, 2\)"),
    ((torch.zeros(10, 2), torch.zeros(1, 2), -torch.eye(2)[None]), {}, DataError, "positive-definite"),
    ((torch.zeros(10, 2), torch.zeros(2, 2), torch.ones(2), torch.tensor([0.9, 0.9])), {}, DataError, "summing to 1"),
    ((torch.zeros(10, 2), torch.zeros(2, 2), torch.ones(2)), {"n_std": (0.0,)}, ConfigError, "n_std"),
])
def test_mixture_ellipses_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_mixture_ellipses(*args, **kwargs)


# --------------------------------------------------------------------------- latent scatter


def test_latent_scatter_projects_to_the_principal_components():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(150, 5, generator=g) * torch.tensor([3.0, 0.2, 1.0, 0.1, 0.5])
    labels = torch.arange(150) % 3
    fig = plot_latent_scatter(z, labels)
    ax = fig.axes[0]
    groups = _scatters(ax)
    assert len(groups) == 3  # one colour per class
    reference = PCA(2).fit(z.numpy())
    projected = reference.transform(z.numpy())
    for c, offsets in enumerate(groups):
        expected = projected[labels.numpy() == c]
        signs = np.sign((offsets * expected).sum(0))  # principal axes are defined up to sign
        np.testing.assert_allclose(offsets * signs, expected, atol=1e-4)
    assert f"{100 * reference.explained_variance_ratio_[0]:.0f}%" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]


def test_latent_scatter_two_dimensional_codes_are_drawn_as_they_are():
    z = np.random.RandomState(0).randn(40, 2)
    (offsets,) = _scatters(plot_latent_scatter(z).axes[0])
    np.testing.assert_allclose(offsets, z)


def test_latent_scatter_continuous_labels_get_a_colour_bar():
    z = np.random.RandomState(0).randn(40, 3)
    fig = plot_latent_scatter(z, np.linspace(0, 1, 40))
    assert len(fig.axes) == 2  # the scatter and its colour bar


@pytest.mark.parametrize("z, labels, match", [
    (torch.zeros(10, 1), None, r"z of shape \(N, d\) with N >= 1 and d >= 2, got \(10, 1\)"),
    (torch.zeros(10), None, "z of shape"),
    (torch.zeros(10, 3), torch.zeros(9), r"labels of shape \(10,\)"),
])
def test_latent_scatter_bad_input(z, labels, match):
    with pytest.raises(DataError, match=match):
        plot_latent_scatter(z, labels)


# --------------------------------------------------------------------------- diffusion trajectories


def test_trajectories_of_points_one_panel_per_time():
    xs = torch.randn(4, 30, 2, generator=torch.Generator().manual_seed(0))
    fig = plot_diffusion_trajectories(xs, [0, 10, 100, 1000])
    assert len(fig.axes) == 4
    for j, panel in enumerate(fig.axes):
        (offsets,) = _scatters(panel)
        np.testing.assert_allclose(offsets, xs[j].numpy(), rtol=1e-6)
    assert [a.get_title() for a in fig.axes] == ["t = 0", "t = 10", "t = 100", "t = 1000"]
    assert len({a.get_xlim() for a in fig.axes}) == 1  # shared limits: the spread is comparable


def test_trajectories_of_points_on_given_axes_overlay_the_paths():
    xs = np.random.RandomState(0).randn(3, 5, 2)
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    assert plot_diffusion_trajectories(xs, np.array([0, 5, 10]), ax=ax) is fig
    assert len(_scatters(ax)) == 3 and len(ax.lines) == 5  # a scatter per time, a path per sample
    np.testing.assert_allclose(ax.lines[2].get_xydata(), xs[:, 2])


def test_trajectories_of_images_grid_rows_samples_columns_times():
    s, n, h, w = 3, 2, 4, 5
    xs = torch.arange(s * n * h * w, dtype=torch.float32).reshape(s, n, h, w)
    fig = plot_diffusion_trajectories(xs, [0, 50, 100])
    canvas = np.asarray(fig.axes[0].images[0].get_array())
    assert canvas.shape == (n * (h + 1) - 1, s * (w + 1) - 1)
    for i in range(n):
        for j in range(s):
            block = canvas[i * (h + 1): i * (h + 1) + h, j * (w + 1): j * (w + 1) + w]
            np.testing.assert_array_equal(block, xs[j, i].numpy())


@pytest.mark.parametrize("xs, times, match", [
    (torch.zeros(3, 10, 5), [0, 1, 2], r"xs of shape \(S, N, 2\).*or \(S, N, H, W\)"),
    (torch.zeros(3, 10, 2), [0, 1], r"expected 3 times"),
    (torch.zeros(2, 3, 4, 4), [0, 1, 2], r"expected 2 times"),
    (torch.full((2, 3, 2), float("inf")), [0, 1], "finite"),
])
def test_trajectories_bad_input(xs, times, match):
    with pytest.raises(DataError, match=match):
        plot_diffusion_trajectories(xs, times)


# --------------------------------------------------------------------------- the CLI families' figures


@pytest.mark.filterwarnings("ignore::inference.ConvergenceWarning")  # two epochs are not meant to converge
def test_vae_run_records_elbo_terms_across_a_resume_and_draws_the_latent_codes(tmp_path):
    import json

    from inference.cli.commands import main

    out = tmp_path / "vae"
    common = ["fit", "vae", "--data", "digits", "--out", str(out), "--z-dim", "3", "--hidden-dims", "16",
              "--no-progress", "--seed", "0"]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["elbo_terms.epoch"] == [1, 2]
    assert len(history["elbo_terms.kl:z"]) == len(history["elbo_terms.reconstruction:x"]) == 2
    assert all(v > 0 for v in history["elbo_terms.kl:z"])  # a KL divergence
    assert {"elbo_terms.png", "latent_scatter.png", "reconstructions.png"} <= {p.name for p in out.iterdir()}


def test_vae_family_latent_scatter_is_coloured_by_digit(float64):
    from guides import GaussianEncoder
    from inference import load_dataset
    from inference.cli.families import get_family
    from vi_models import VAE

    bundle = load_dataset("digits")
    model, guide = VAE(64, 3, hidden_dims=(8,), likelihood="categorical"), GaussianEncoder(64, 3, hidden_dims=(8,),
                                                                                            num_levels=17)
    figures = get_family("vae").figures(model, guide, bundle, {})
    ax = figures["latent_scatter.png"].axes[0]
    groups = _scatters(ax)
    assert len(groups) == 10 and sum(len(g) for g in groups) == bundle.test.shape[0]


@pytest.mark.parametrize("covariance", ["full", "tied", "diag", "spherical"])
def test_gmm_family_draws_ellipses_for_two_dimensional_data(covariance, float64):
    from inference import fit_em, load_dataset
    from inference.cli.families import get_family
    from vi_models import GaussianMixture

    bundle = load_dataset("moons", n_samples=400, n_test=100)
    model = GaussianMixture(3, 2, covariance)
    fit_em(model, bundle.train, seed=0, progress=False)
    (name, figure), = get_family("gmm").figures(model, None, bundle, {}).items()
    ax = figure.axes[0]
    assert name == "mixture_ellipses.png" and len(ax.patches) == 3 * 2
    if covariance == "tied":  # one covariance: every component's ellipse has the same shape
        assert ax.patches[0].width == pytest.approx(ax.patches[2].width)
    three = GaussianMixture(2, 3)
    assert get_family("gmm").figures(three, None, bundle, {}) == {}  # no ellipses beyond 2-D


def test_vlb_terms_of_a_ddpm_sum_to_its_bound():
    from vi_models import DDPM

    torch.manual_seed(0)
    model = DDPM(2, T=20, hidden_dim=8, num_blocks=1, schedule="cosine")
    x = torch.randn(5, 2)
    with torch.no_grad():
        terms = model.vlb_terms(x, generator=torch.Generator().manual_seed(0))  # (B, T + 1)
        vlb = model.vlb(x, generator=torch.Generator().manual_seed(0))  # (B,)
    ax = plot_vlb_terms(terms).axes[0]
    assert len(ax.lines[0].get_xdata()) == 20 - 1  # L_1 .. L_{T-1}; L_0 and L_T drawn apart
    assert f"{vlb.mean().item():.4g}" in ax.get_title()  # the title's total is L_VLB
