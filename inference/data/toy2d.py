"""The 2-D toy densities of FFJORD and Residual Flows, each with its exact log density.

The samplers follow FFJORD's ``lib/toy_data.py`` (reused by Residual Flows) with two changes
that make the density well defined: scikit-learn's ``make_moons``/``make_circles`` put points
on a ``linspace`` of the arc parameter, here it is uniform (the continuum limit); and where
FFJORD splits a batch into fixed halves or fifths, the component is drawn at random.

Each density is a noise kernel mixed over a curve or a set of points, p(x) = int p(s) k(x - c(s)) ds,
and ``log_prob`` evaluates it in float64: in closed form (8gaussians, circles, checkerboard), by
composite Gauss-Legendre quadrature over the curve parameter with panels of about equal arc
length (moons, swissroll, 2spirals: doubling the nodes moves log p by < 1e-8 wherever
log p > -50; in the far tails the error grows, to ~0.01 at log p ~ -1000), or by the change of variables over every pre-image (pinwheel). It is plain torch, so
``log_prob`` is differentiable in ``x``.

References
----------
Grathwohl et al. "FFJORD: Free-form continuous dynamics for scalable reversible generative
models." ICLR 2019. Chen et al. "Residual flows for invertible generative modeling." NeurIPS 2019.

Example
-------
>>> import torch
>>> density = get_toy_density("two-moons")
>>> x = density.sample(5, generator=torch.Generator().manual_seed(0))
>>> density.log_prob(x).shape
torch.Size([5])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from vi_models.errors import ConfigError

from .toy2d_base import (
    CHUNK_ELEMENTS,
    F64,
    GaussianMixtureDensity,
    Quadrature,
    ToyDensity,
    gauss_legendre,
    log_ndtr_diff,
    ndtr_diff,
    segment_logsumexp,
)

__all__ = [
    "ToyDensity", "EightGaussians", "Moons", "Circles", "SwissRoll", "TwoSpirals", "Pinwheel",
    "Checkerboard", "TOY_DENSITIES", "get_toy_density", "normalize_toy_name",
]



class EightGaussians(GaussianMixtureDensity):
    """Eight Gaussians on a circle: x = (4 u_k + 0.5 eps) / 1.414, k ~ U{0..7}, eps ~ N(0, I).

    The u_k are (+-1, 0), (0, +-1), (+-1/sqrt 2, +-1/sqrt 2); 1.414 is FFJORD's constant.
    """

    name = "8gaussians"
    bounds = (-5.0, 5.0, -5.0, 5.0)
    sigma = 0.5 / 1.414

    def _components(self) -> tuple[np.ndarray, np.ndarray]:
        s = 1.0 / math.sqrt(2.0)
        units = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
        return 4.0 * units / 1.414, np.full(8, -math.log(8.0))

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        k = torch.randint(0, 8, (n,), generator=generator, device=device)
        eps = torch.randn(n, 2, generator=generator, dtype=F64, device=device)
        return self._centers.to(device)[k] + self.sigma * eps


class Moons(Quadrature, GaussianMixtureDensity):
    """Two interleaving half circles (``make_moons(noise=0.1) * 2 + (-1, -0.2)``).

    t ~ U(0, pi); with probability 1/2 each, p = (cos t, sin t) or (1 - cos t, 1/2 - sin t);
    x = 2 (p + 0.1 eps) + (-1, -0.2), so x | t ~ N(2 p + b, 0.2^2 I).

    Parameters
    ----------
    panels : int
        Gauss-Legendre panels over t per arc.
    order : int
        Nodes per panel.
    """

    name = "moons"
    bounds = (-4.5, 4.5, -3.0, 3.5)
    sigma = 0.2
    _shift = np.array([-1.0, -0.2])

    def __init__(self, panels: int = 32, order: int = 8) -> None:
        super().__init__(panels, order)

    def _components(self) -> tuple[np.ndarray, np.ndarray]:
        t, w = gauss_legendre(np.linspace(0.0, math.pi, self.panels + 1), self.order)
        outer = np.stack([np.cos(t), np.sin(t)], -1)
        inner = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], -1)
        centers = 2.0 * np.concatenate([outer, inner]) + self._shift
        log_w = np.log(np.concatenate([w, w]) / (2.0 * math.pi))  # 1/2 per arc, t ~ U(0, pi)
        return centers, log_w

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        inner = torch.randint(0, 2, (n, 1), generator=generator, device=device).bool()
        t = math.pi * torch.rand(n, generator=generator, dtype=F64, device=device)
        p = torch.where(inner, torch.stack([1.0 - t.cos(), 0.5 - t.sin()], -1), torch.stack([t.cos(), t.sin()], -1))
        p = p + 0.1 * torch.randn(n, 2, generator=generator, dtype=F64, device=device)
        return 2.0 * p + torch.as_tensor(self._shift, dtype=F64, device=device)


class SwissRoll(Quadrature, GaussianMixtureDensity):
    """``make_swiss_roll(noise=1)[:, [0, 2]] / 5``: t = 1.5 pi (1 + 2u), u ~ U(0, 1),
    x = t (cos t, sin t) / 5 + 0.2 eps.

    Quadrature panels are uniform in t^2 (the arc length grows like t^2 / 10).

    Parameters
    ----------
    panels : int
        Gauss-Legendre panels over u.
    order : int
        Nodes per panel.
    """

    name = "swissroll"
    bounds = (-4.5, 4.5, -4.5, 4.5)
    sigma = 0.2

    def __init__(self, panels: int = 96, order: int = 8) -> None:
        super().__init__(panels, order)

    def _components(self) -> tuple[np.ndarray, np.ndarray]:
        t_lo, t_hi = 1.5 * math.pi, 4.5 * math.pi
        t_breaks = np.sqrt(np.linspace(t_lo**2, t_hi**2, self.panels + 1))
        u, w = gauss_legendre((t_breaks / (1.5 * math.pi) - 1.0) / 2.0, self.order)
        t = 1.5 * math.pi * (1.0 + 2.0 * u)
        return t[:, None] * np.stack([np.cos(t), np.sin(t)], -1) / 5.0, np.log(w)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=generator, dtype=F64, device=device))
        eps = torch.randn(n, 2, generator=generator, dtype=F64, device=device)
        return t[:, None] * torch.stack([t.cos(), t.sin()], -1) / 5.0 + self.sigma * eps


class Circles(ToyDensity):
    """``make_circles(factor=0.5, noise=0.08) * 3``: radius R = 3 or 1.5 (probability 1/2),
    angle theta ~ U(0, 2 pi), x = R (cos theta, sin theta) + 0.24 eps.

    A ring of radius R blurred by N(0, s^2 I) has the closed form
    p_R(x) = exp(-(|x|^2 + R^2) / (2 s^2)) I_0(|x| R / s^2) / (2 pi s^2),
    evaluated with the scaled Bessel function i0e(z) = exp(-z) I_0(z) for stability.
    """

    name = "circles"
    bounds = (-4.5, 4.5, -4.5, 4.5)
    sigma = 0.24
    radii = (3.0, 1.5)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        inner = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
        radius = torch.where(inner, self.radii[1], self.radii[0]).to(F64)
        theta = 2.0 * math.pi * torch.rand(n, generator=generator, dtype=F64, device=device)
        eps = torch.randn(n, 2, generator=generator, dtype=F64, device=device)
        return radius[:, None] * torch.stack([theta.cos(), theta.sin()], -1) + self.sigma * eps

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        rho = x.norm(dim=-1, keepdim=True)  # (m, 1)
        radius = torch.tensor(self.radii, dtype=F64, device=x.device)  # (2,)
        s2 = self.sigma**2
        # -(rho^2 + R^2) / (2 s^2) + log I_0(rho R / s^2) = -(rho - R)^2 / (2 s^2) + log i0e(rho R / s^2)
        log_ring = -((rho - radius) ** 2) / (2 * s2) + torch.special.i0e(rho * radius / s2).log()
        return -math.log(2 * math.pi * s2) + torch.logsumexp(log_ring, dim=-1) - math.log(2.0)


class TwoSpirals(Quadrature, ToyDensity):
    """Two spirals: n = 3 pi sqrt(u), d = (-n cos n + U1 / 2, n sin n + U2 / 2), u, U1, U2 ~ U(0, 1);
    x = +-d / 3 + 0.1 eps with the sign drawn with probability 1/2.

    Given n, d / 3 is uniform on the square [c, c + 1/6]^2 with c = (-n cos n, n sin n) / 3;
    uniform (*) N(0, s^2) is, per coordinate, (Phi((x - c) / s) - Phi((x - c - 1/6) / s)) * 6.
    The integral over u is taken in v = sqrt(u) (density 2 v, no square-root singularity),
    with panels uniform in u = v^2 (equal arc length of the spiral).

    Parameters
    ----------
    panels : int
        Gauss-Legendre panels over v.
    order : int
        Nodes per panel.
    """

    name = "2spirals"
    bounds = (-4.5, 4.5, -4.5, 4.5)
    sigma = 0.1
    width = 0.5 / 3.0

    def __init__(self, panels: int = 100, order: int = 12) -> None:
        super().__init__(panels, order)
        v, w = gauss_legendre(np.sqrt(np.linspace(0.0, 1.0, self.panels + 1)), self.order)
        n = 3.0 * math.pi * v
        corners = np.stack([-n * np.cos(n), n * np.sin(n)], -1) / 3.0
        # Both arms as one node set: +d / 3 fills [c, c + w]^2, -d / 3 fills [-c - w, -c]^2.
        self._corners = torch.as_tensor(np.concatenate([corners, -corners - self.width]))
        log_w = np.log(0.5 * 2.0 * v * w)  # sign 1/2, v has density 2 v on (0, 1)
        self._log_weights = torch.as_tensor(np.concatenate([log_w, log_w]))
        # Each panel's nodes lie within panel_radius of the panel's mean square centre.
        centers = (self._corners + 0.5 * self.width).reshape(2 * self.panels, self.order, 2)
        self._panel_centers = centers.mean(1)  # (2 P, 2)
        self._panel_radii = (centers - self._panel_centers[:, None]).norm(dim=-1).amax(1)  # (2 P,)

    def _work_per_row(self) -> int:
        return 8 * self.order + 4 * self.panels

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        u = torch.rand(3, n, generator=generator, dtype=F64, device=device)
        angle = u[0].sqrt() * 540 * (2 * math.pi) / 360
        d = torch.stack([-angle.cos() * angle + 0.5 * u[1], angle.sin() * angle + 0.5 * u[2]], -1)
        sign = 1.0 - 2.0 * torch.randint(0, 2, (n, 1), generator=generator, device=device).to(F64)
        return sign * d / 3.0 + self.sigma * torch.randn(n, 2, generator=generator, dtype=F64, device=device)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        corners, log_w = self._corners.to(x.device), self._log_weights.to(x.device)
        # A square 10 sigma farther than the nearest one adds < e^-38 of the nearest's mass, so
        # only panels that may hold a square within (nearest + 10 sigma) are evaluated: the
        # skipped terms are < 1e-10 of the total, and most erfc calls are saved.
        radii = self._panel_radii.to(x.device)
        dist = torch.cdist(x.detach(), self._panel_centers.to(x.device))  # (m, 2 P)
        nearest_bound = (dist + radii).amin(-1, keepdim=True)  # >= distance to the nearest square
        row, panel = torch.nonzero(dist - radii <= nearest_bound + 10 * self.sigma, as_tuple=True)
        node = (panel[:, None] * self.order + torch.arange(self.order, device=x.device)).reshape(-1)
        row = row.repeat_interleave(self.order)
        z = (x[row] - corners[node]) / self.sigma  # (P, 2)
        z_far = z - self.width / self.sigma
        terms = ndtr_diff(z, z_far).prod(-1) * log_w[node].exp()
        out = x.new_zeros(len(x)).index_add(0, row, terms).clamp_min(1e-300).log()
        far = out < -600.0  # underflow far from both arms: redo those rows in log space
        if bool(far.any()):
            pick = far[row]
            log_terms = log_ndtr_diff(z[pick], z_far[pick]).sum(-1) + log_w[node[pick]]
            compact = torch.cumsum(far, 0) - 1
            out = out.masked_scatter(far, segment_logsumexp(log_terms, compact[row[pick]], int(far.sum())))
        return out - 2.0 * math.log(self.width)


class Pinwheel(ToyDensity):
    """Five-armed pinwheel: class c ~ U{0..4}, f ~ N((1, 0), diag(0.3^2, 0.1^2)),
    a = 2 pi c / 5 + 0.25 exp(f_0), x = 2 R(a)^T f with R(a) the rotation by a.

    FFJORD writes x = 2 einsum("ti,tij->tj", f, R) with R = [[cos a, -sin a], [sin a, cos a]],
    i.e. x = 2 f^T R(a): a rotation of f by -a.

    The map f -> y = x / 2 keeps the radius, |f| = |y| = r, and is not injective far out, so
    the density sums over every pre-image. In polar coordinates f = r (cos psi, sin psi) the
    polar angle of y is phi = psi - a(r cos psi), so the pre-images in class c are the roots of

        h(psi) = psi - rate exp(r cos psi) - 2 pi c / 5 - phi = 0  (mod 2 pi),  psi in [-pi, pi).

    They are bracketed on a grid on which h moves by <= 0.2 per step, then bisected. With
    (r, psi) -> (r, phi) triangular, det(dy/df) = d phi / d psi = 1 + rate r sin(psi) exp(r cos psi)
    = 1 + rate f_1 exp(f_0), and

        p(x) = 1/4 * sum_c 1/5 * sum_{roots f} N(f) / |1 + rate f_1 exp(f_0)|.

    Root pairs closer than a grid step (next to the fold where det = 0) can be missed; folds
    only occur where the density is below about e^-20, and beyond |x| ~ 12 (density < e^-150),
    where the grid is capped, the value can be a lower bound.
    """

    name = "pinwheel"
    bounds = (-6.0, 6.0, -6.0, 6.0)
    radial_std = 0.3
    tangential_std = 0.1
    num_classes = 5
    rate = 0.25
    _max_grid = 2**15

    def transform(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The generator's map (f, c) -> x.

        Parameters
        ----------
        features : torch.Tensor
            f, shape ``(n, 2)``.
        labels : torch.Tensor
            Integer classes c in ``0..4``, shape ``(n,)``.

        Returns
        -------
        torch.Tensor
            x = 2 f^T R(a), shape ``(n, 2)``.
        """
        rads = 2 * math.pi * labels.to(features.dtype) / self.num_classes
        a = rads + self.rate * features[..., 0].exp()
        cos, sin = a.cos(), a.sin()
        f0, f1 = features[..., 0], features[..., 1]
        return 2.0 * torch.stack([f0 * cos + f1 * sin, -f0 * sin + f1 * cos], -1)  # f^T R(a)

    def log_abs_det_jacobian(self, features: torch.Tensor) -> torch.Tensor:
        """log |det dx/df| of :meth:`transform`, shape ``(n,)`` for features ``(n, 2)``.

        det(d(x/2)/df) = 1 + rate f_1 exp(f_0); the factor 2 adds log 4.
        """
        det = 1.0 + self.rate * features[..., 1] * features[..., 0].exp()
        return det.abs().log() + math.log(4.0)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        labels = torch.randint(0, self.num_classes, (n,), generator=generator, device=device)
        eps = torch.randn(n, 2, generator=generator, dtype=F64, device=device)
        f = eps * torch.tensor([self.radial_std, self.tangential_std], dtype=F64, device=device)
        return self.transform(f + torch.tensor([1.0, 0.0], dtype=F64, device=device), labels)

    def _psi_grid(self, r_max: float) -> np.ndarray:
        """Grid on [-pi, pi] on which h moves by <= 0.2 per step, for every radius r <= r_max.

        |h'(psi)| <= 1 + rate r e^{r cos psi} <= 1 + rate r_max e^{r_max max(cos psi, 0)}: the
        steps are equal in the integral of that bound, so they are short only near psi = 0.
        """
        fine = np.linspace(-math.pi, math.pi, 4097)
        bound = 1.0 + self.rate * r_max * np.exp(min(r_max, 700.0) * np.maximum(np.cos(fine), 0.0))
        cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (bound[1:] + bound[:-1]) * np.diff(fine))])
        steps = int(min(max(64, math.ceil(cumulative[-1] / 0.2)), self._max_grid))
        return np.interp(np.linspace(0.0, cumulative[-1], steps + 1), cumulative, fine)

    def _h(self, psi: torch.Tensor, r: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """h(psi) with offset = 2 pi c / 5 + phi; arguments broadcast."""
        return psi - self.rate * (r * psi.cos()).exp() - offset

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        # Rows sorted by radius share a grid sized for the largest radius among them.
        r = x.detach().norm(dim=-1) / 2.0
        order = torch.argsort(r)
        parts, start = [], 0
        while start < len(x):
            rows = CHUNK_ELEMENTS // (self.num_classes * 65)
            psi = self._psi_grid(float(r[order[min(start + rows, len(x)) - 1]]))
            stop = min(len(x), start + max(1, min(rows, CHUNK_ELEMENTS // (self.num_classes * len(psi)))))
            parts.append(self._log_prob_sorted(x[order[start:stop]], torch.as_tensor(psi, device=x.device)))
            start = stop
        return torch.cat(parts)[torch.argsort(order)]

    def _log_prob_sorted(self, x: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        y = x / 2.0
        r, phi = y.norm(dim=-1), torch.atan2(y[:, 1], y[:, 0])  # (m,)
        rads = 2 * math.pi * torch.arange(self.num_classes, dtype=F64, device=x.device) / self.num_classes
        offset = rads + phi[:, None]  # (m, C)
        with torch.no_grad():
            rd, od = r.detach(), offset.detach()
            turns = torch.floor(self._h(psi, rd[:, None, None], od[..., None]) / (2 * math.pi))  # (m, C, G)
            # h(psi + 2 pi) = h(psi) + 2 pi: each class has at least one crossing of 2 pi Z.
            row, cls, k = torch.nonzero(turns[..., 1:] != turns[..., :-1], as_tuple=True)
            target = 2 * math.pi * torch.maximum(turns[row, cls, k], turns[row, cls, k + 1])
            lo, hi = psi[k], psi[k + 1]
            rising = turns[row, cls, k + 1] > turns[row, cls, k]
            for _ in range(50):  # bisection: the bracket shrinks below 1e-15
                mid = 0.5 * (lo + hi)
                above = self._h(mid, rd[row], od[row, cls]) >= target
                lo, hi = torch.where(above == rising, lo, mid), torch.where(above == rising, mid, hi)
            root = 0.5 * (lo + hi)
        # One Newton step with the graph attached: no change at the root, but it carries
        # d psi / d x (implicit function theorem), so log_prob is differentiable in x.
        r_row = r[row]
        slope = 1.0 + self.rate * r_row.detach() * root.sin() * (r_row.detach() * root.cos()).exp()
        psi_root = root - (self._h(root, r_row, offset[row, cls]) - target) / slope
        f = r_row[:, None] * torch.stack([psi_root.cos(), psi_root.sin()], -1)
        std = torch.tensor([self.radial_std, self.tangential_std], dtype=F64, device=x.device)
        z = (f - torch.tensor([1.0, 0.0], dtype=F64, device=x.device)) / std
        log_normal = (-0.5 * z**2 - std.log()).sum(-1) - math.log(2 * math.pi)
        log_term = log_normal - self.log_abs_det_jacobian(f) - math.log(self.num_classes)
        return segment_logsumexp(log_term, row, len(x))


class Checkerboard(ToyDensity):
    """Checkerboard: x1 = 4u - 2, x2 = u' - 2 b + (floor(x1) mod 2), b ~ U{0, 1}, x = 2 (x1, x2).

    Uniform with density 1/32 on the 8 squares [2i, 2i + 2) x [2j, 2j + 2), i, j in -2..1,
    i + j even; -inf elsewhere.
    """

    name = "checkerboard"
    bounds = (-4.0, 4.0, -4.0, 4.0)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        x1 = 4.0 * torch.rand(n, generator=generator, dtype=F64, device=device) - 2.0
        b = torch.randint(0, 2, (n,), generator=generator, device=device).to(F64)
        x2 = torch.rand(n, generator=generator, dtype=F64, device=device) - 2.0 * b
        x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
        return 2.0 * torch.stack([x1, x2], -1)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        cell = torch.floor(x / 2.0)  # (m, 2)
        inside = ((cell >= -2) & (cell <= 1)).all(-1) & (torch.remainder(cell.sum(-1), 2.0) == 0)
        log_p = torch.where(inside, x.new_tensor(-math.log(32.0)), x.new_tensor(-math.inf))
        return log_p + 0.0 * x.sum(-1)  # keeps the graph: the gradient is zero


TOY_DENSITIES: dict[str, type[ToyDensity]] = {
    cls.name: cls for cls in (EightGaussians, Moons, Circles, SwissRoll, TwoSpirals, Pinwheel, Checkerboard)
}
_ALIASES = {"eightgaussians": "8gaussians", "twospirals": "2spirals", "twomoons": "moons"}


def normalize_toy_name(name: str) -> str | None:
    """Canonical toy name for ``name`` (case, '-', '_' and spaces ignored), or None."""
    key = "".join(ch for ch in name.lower() if ch not in "-_ ")
    key = _ALIASES.get(key, key)
    return key if key in TOY_DENSITIES else None


def get_toy_density(name: str, **kwargs: Any) -> ToyDensity:
    """Build the toy density called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`TOY_DENSITIES` or an alias ("8-gaussians", "swiss-roll",
        "two_spirals", ...): case, '-', '_' and spaces are ignored.
    **kwargs
        Passed to the class (quadrature ``panels``/``order`` for moons, swissroll, 2spirals).

    Returns
    -------
    ToyDensity

    Raises
    ------
    ConfigError
        The name is unknown.
    """
    canonical = normalize_toy_name(name) if isinstance(name, str) else None
    if canonical is None:
        raise ConfigError(
            f"expected a toy density name, one of {', '.join(TOY_DENSITIES)}, got {name!r}; "
            "aliases such as '8-gaussians' or 'swiss-roll' also work"
        )
    return TOY_DENSITIES[canonical](**kwargs)
