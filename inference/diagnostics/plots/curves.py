"""Curves of a fit: loss per epoch, ELBO terms per epoch, DDPM bound terms per timestep, and
PSIS k-hat per observation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vi_models.errors import DataError

from ._figures import _array, _axes, _figure


def plot_history(history: dict[str, Sequence[float]], *, title: str = "training") -> Figure:
    """Per-epoch loss (and validation loss) against epochs."""
    fig = _figure(6, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    ax.plot(epochs, history.get("loss", []), label="train -ELBO / obs")
    if history.get("val_loss"):
        ax.plot(epochs[: len(history["val_loss"])], history["val_loss"], label="validation -ELBO / obs")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per observation)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_khat(khat: np.ndarray, *, title: str = "PSIS k-hat per observation") -> Figure:
    """Pareto k-hat of each observation with the 0.5 / 0.7 thresholds (Yao et al. 2018)."""
    k = np.atleast_1d(np.asarray(khat, dtype=float))
    fig = _figure(6, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = np.where(k >= 0.7, "C3", np.where(k >= 0.5, "C1", "C0"))
    ax.scatter(np.arange(len(k)), k, s=8, c=colours)
    for level, label in ((0.5, "0.5"), (0.7, "0.7")):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
        ax.text(len(k), level, label, va="bottom", ha="right", fontsize=8)
    ax.set_xlabel("observation")
    ax.set_ylabel("k-hat")
    ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- ELBO terms


def _term_kind(name: str) -> str:
    return name.split(":", 1)[0] if ":" in name else ""


def plot_elbo_terms(terms: Mapping[str, Sequence[float]], *, ax: Axes | None = None) -> Figure:
    """Reconstruction term and KL per latent site against epochs (THEORY T2).

    Args:
        terms: name -> per-epoch values, as recorded by :class:`inference.engine.elbo_terms.ElboTerms`
            (its ``history``): keys ``"reconstruction:<site>"`` (E_q[log p(x|z)] per observation,
            drawn on the left axis) and ``"kl:<site>"`` (KL(q || p) per observation, drawn on a
            second axis on the right, whose scale is usually much smaller). An ``"epoch"`` key,
            if present, gives the x values (default 1, 2, ...). Other keys are drawn on the left
            axis under their own name.
        ax: axes to draw on (a new figure when None).

    Returns:
        The figure.

    Raises:
        DataError: no terms, sequences of different lengths, or non-finite values.
    """
    if not isinstance(terms, Mapping) or not terms:
        raise DataError(f"expected terms to be a non-empty mapping name -> per-epoch values, got {terms!r}; "
                        "pass ElboTerms(...).history")
    curves = {str(k): _array(v, f"terms[{k!r}]").reshape(-1) for k, v in terms.items()}
    lengths = {k: len(v) for k, v in curves.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(f"expected every term to have the same non-zero number of epochs, got lengths {lengths}")
    epochs = curves.pop("epoch", np.arange(1, next(iter(lengths.values())) + 1))
    if not curves:
        raise DataError("expected at least one term besides 'epoch', got none")
    fig, ax = _axes(ax, 6.5, 3.8)
    marker = "o" if len(epochs) < 30 else None
    kl = {k: v for k, v in curves.items() if _term_kind(k) == "kl"}
    left = {k: v for k, v in curves.items() if k not in kl}
    handles = []
    for i, (name, values) in enumerate(left.items()):
        label = f"E_q[log p(x|z)] at {name.split(':', 1)[1]!r}" if _term_kind(name) == "reconstruction" else name
        handles += ax.plot(epochs, values, color=f"C{i}", marker=marker, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("reconstruction (nats / observation)")
    ax.grid(alpha=0.3)
    if kl:
        right = ax.twinx() if left else ax
        for j, (name, values) in enumerate(kl.items()):
            handles += right.plot(epochs, values, color=f"C{len(left) + j}", ls="--", marker=marker,
                                  label=f"KL(q || p) at {name.split(':', 1)[1]!r}")
        right.set_ylabel("KL (nats / observation)")
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="best", fontsize=8)
    ax.set_title("ELBO = reconstruction - sum of KL terms")
    return fig


# --------------------------------------------------------------------------- DDPM bound terms


def plot_vlb_terms(terms: torch.Tensor | np.ndarray, *, ax: Axes | None = None, log: bool = True) -> Figure:
    """Per-timestep terms L_0, ..., L_T of the DDPM bound (THEORY T18), averaged over observations.

    Args:
        terms: ``(T + 1,)`` or ``(B, T + 1)`` as returned by :meth:`vi_models.DDPM.vlb_terms`:
            column 0 the decoder term L_0 = -log p(x_0 | x_1), columns 1..T-1 the KL terms
            L_{t-1}, column T the prior term L_T; a batch is averaged over ``B``.
        ax: axes to draw on (a new figure when None).
        log: logarithmic y axis (symmetric-log when a term is <= 0, as L_0 of continuous data
            can be).

    Returns:
        The figure; the title carries the total L_VLB (nats per observation).

    Raises:
        DataError: ``terms`` not of shape ``(T + 1,)`` or ``(B, T + 1)`` with T >= 1, or non-finite.
    """
    arr = _array(terms, "terms")
    if arr.ndim not in (1, 2) or arr.shape[-1] < 2 or (arr.ndim == 2 and arr.shape[0] == 0):
        raise DataError(f"expected terms of shape (T + 1,) or (B, T + 1) with T >= 1, got {arr.shape}; "
                        "pass model.vlb_terms(x) (B, T + 1) or its mean over the batch")
    mean = arr.mean(0) if arr.ndim == 2 else arr
    t = np.arange(mean.shape[0])
    fig, ax = _axes(ax, 6.5, 3.8)
    ax.plot(t[1:-1], mean[1:-1], color="C0", lw=1.2, label="L_t = KL(q(x_t|x_t+1,x_0) || p(x_t|x_t+1))")
    ax.plot([0], mean[:1], "o", color="C1", label=f"L_0 = -log p(x_0|x_1): {mean[0]:.3g}")
    ax.plot([t[-1]], mean[-1:], "s", color="C2", label=f"L_T = KL(q(x_T|x_0) || p(x_T)): {mean[-1]:.3g}")
    if log:
        if np.all(mean > 0):
            ax.set_yscale("log")
        else:
            positive = np.abs(mean[mean != 0])
            ax.set_yscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
    ax.set_xlabel("t")
    ax.set_ylabel("nats / observation")
    ax.set_title(f"L_VLB = sum_t L_t = {mean.sum():.4g} nats"
                 + (f" (mean of {arr.shape[0]} observations)" if arr.ndim == 2 else ""))
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig
