"""The adversarial training loop: alternating critic and generator steps, with the engine's machinery.

:func:`fit_adversarial` fits a :class:`vi_models.GAN` (any module with the same methods) by
the single-step gradient method of Nowozin et al. 2016, Algorithm 1, with Adam for each player:

    for epoch:                                  # one pass over the (shuffled) data
        for real batch x (B rows):
            repeat d_steps times:               # fresh fakes x~ = G(z), z ~ N(0, I), each time
                d_loss = -F(x, x~); step the critic          (F: the variational objective)
            g_loss = generator loss on G(z); step the generator
        callbacks, checkpoint

It shares :func:`inference.fit`'s conventions: in-memory batches on the device
(:func:`inference.engine.batches.make_batches`), seeds, a tqdm progress bar, an atomic checkpoint
every epoch holding both optimizers and every RNG state (so a resumed run continues bit for bit
on CPU), :class:`~inference.errors.NonFiniteLossError` naming the epoch and the step. The
checkpoint keeps the module under ``"model"`` (and an empty ``"guide"``), so
:func:`inference.engine.checkpoint.load_modules` ``(path, gan, None)`` reads it back.

References
----------
S. Nowozin, B. Cseke and R. Tomioka, "f-GAN: Training Generative Neural Samplers using
Variational Divergence Minimization", NeurIPS 2016, Algorithm 1.
I. Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, Algorithm 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor, nn

from inference.engine._params import checkpoint_due, end_of_epoch, nonfinite_params
from inference.engine.batches import make_batches, model_dtype
from inference.engine.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    check_fingerprint,
    fingerprint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from vi_models._validation import check_positive_int, resolve_device
from vi_models.errors import CheckpointError, ConfigError, NonFiniteLossError

__all__ = ["AdversarialResult", "fit_adversarial", "optimal_discriminator"]

#: What :func:`fit_adversarial` needs of the model (all of them are on :class:`vi_models.GAN`).
_REQUIRED = ("generator", "discriminator", "sample_latent", "discriminator_loss", "generator_loss", "divergence_bound")
_KIND = "adversarial"


@dataclass
class AdversarialResult:
    """What :func:`fit_adversarial` returns.

    Attributes:
        gan: the fitted module (trained in place; returned for convenience).
        history: per-epoch records, averaged over the epoch's steps (weighted by batch size):
            ``"d_loss"`` (critic loss ``-F``), ``"g_loss"`` (generator loss), ``"divergence"``
            (the lower bound on the divergence certified by the critic, ``gan.divergence_bound(-d_loss)``:
            JS in nats for a GAN), ``"time"`` (seconds since the start).
        epochs_run: epochs completed in total (including epochs before a resume).
        stopped_early: a callback ended training.
        elapsed: wall-clock seconds of this call.
        num_train: number of training observations.
        config: the JSON-able arguments of the call.
    """

    gan: nn.Module
    history: dict[str, list[float]]
    epochs_run: int
    stopped_early: bool
    elapsed: float
    num_train: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def final_divergence(self) -> float:
        """The divergence estimate of the last epoch (NaN before any epoch)."""
        return self.history["divergence"][-1] if self.history["divergence"] else float("nan")


def optimal_discriminator(log_p_r: Tensor, log_p_g: Tensor) -> Tensor:
    """``D*(x) = p_r(x) / (p_r(x) + p_g(x)) = sigmoid(log p_r(x) - log p_g(x))`` (THEORY T28).

    The discriminator that maximises ``E_{p_r} log D + E_{p_g} log(1 - D)`` for a fixed
    generator (Goodfellow et al. 2014, Proposition 1). Computed from log-densities, so it stays
    exact where the densities themselves underflow.

    Parameters
    ----------
    log_p_r
        Log-density of the data distribution at the points, any shape.
    log_p_g
        Log-density of the generator's distribution at the same points, broadcastable.

    Returns
    -------
    Tensor
        The broadcast shape, values in ``[0, 1]`` (NaN where both densities are zero).

    Examples
    --------
    >>> float(optimal_discriminator(torch.tensor(-1.0), torch.tensor(-1.0)))
    0.5
    """
    log_p_r, log_p_g = torch.as_tensor(log_p_r), torch.as_tensor(log_p_g)
    if not log_p_r.is_floating_point():
        log_p_r = log_p_r.to(torch.get_default_dtype())
    return torch.sigmoid(log_p_r - log_p_g)


# --------------------------------------------------------------------------- helpers


def _check_gan(gan: Any) -> None:
    missing = [name for name in _REQUIRED if not hasattr(gan, name)]
    if not isinstance(gan, nn.Module) or missing:
        raise ConfigError(
            f"expected a GAN module (vi_models.GAN or an nn.Module with {', '.join(_REQUIRED)}), got "
            f"{type(gan).__name__}" + (f" without {', '.join(missing)}" if missing else "")
        )


def _check_lr(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"expected {name} to be a positive finite number, got {value!r}")
    return float(value)


def _check_betas(betas: Any) -> tuple[float, float]:
    ok = (
        isinstance(betas, (tuple, list))
        and len(betas) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)
    )
    if not ok:
        raise ConfigError(f"expected betas as two numbers in [0, 1) such as (0.5, 0.999), got {betas!r}")
    return float(betas[0]), float(betas[1])


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- fit_adversarial


def fit_adversarial(
    gan: nn.Module,
    data: Any,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr_g: float = 2e-4,
    lr_d: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    d_steps: int = 1,
    device: torch.device | str | None = "cpu",
    seed: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callable[..., Any]] = (),
) -> AdversarialResult:
    """Fit a GAN's generator and critic by alternating gradient steps (module docstring).

    Args:
        gan: a :class:`vi_models.GAN` (or an ``nn.Module`` with ``generator``, ``discriminator``,
            ``sample_latent``, ``discriminator_loss``, ``generator_loss``, ``divergence_bound``),
            trained in place. A generator without trainable parameters
            (``requires_grad_(False)``) stays fixed and only the critic trains: a density-ratio
            estimator between the data and a known ``p_g``.
        data: training data ``(N, *data_shape)``: a tensor, numpy array, a
            :class:`inference.data.DataBundle` (its ``train`` split), a torch ``Dataset`` or
            ``DataLoader``; of a tuple of tensors only the first is used.
        epochs: total number of epochs; with ``resume=True`` training continues from the
            checkpoint's epoch up to this number (so N + M epochs equal N, then M resumed).
        batch_size: real observations per step, and as many fakes (clipped to the data size).
        lr_g, lr_d: Adam learning rates of the generator and the critic.
        betas: Adam's ``(beta1, beta2)``; ``beta1 = 0.5`` as in Radford et al. 2016.
        d_steps: critic updates per generator update, each on the same real batch with fresh fakes.
        device: where the model and the data live.
        seed: seeds Pyro/torch/numpy/random and the shuffling; a run with a seed is reproducible
            bit for bit on CPU, also across a checkpoint and ``resume=True``.
        checkpoint_dir: directory for ``checkpoint.pt`` (written atomically every
            ``checkpoint_every`` epochs and at the end).
        checkpoint_every: epochs between checkpoints.
        resume: continue from the checkpoint in ``checkpoint_dir`` if one exists.
        progress: show a tqdm progress bar with the running losses.
        callbacks: callables ``cb(epoch, logs) -> bool | None`` (or objects with an
            ``on_epoch_end(epoch, logs)`` method) run after every epoch; ``True`` stops training.

    Returns:
        An :class:`AdversarialResult` with the per-epoch history.

    Raises:
        ConfigError: an argument outside its allowed values, a model without the GAN methods,
            a critic without trainable parameters.
        DataError: data that is empty, non-finite, or not of the model's data shape.
        NonFiniteLossError: a loss or a parameter became NaN/inf; the error names the epoch,
            the step and the player. The last checkpoint written stays intact.
        CheckpointError: ``resume=True`` with a checkpoint that is unsafe, was written by
            :func:`inference.fit`, or belongs to another model or divergence.

    Example:
        >>> import torch
        >>> from vi_models.gan import GAN
        >>> gan = GAN(1, latent_dim=1, generator_hidden=(16,), discriminator_hidden=(16,))
        >>> result = fit_adversarial(gan, torch.randn(256, 1) + 3.0, epochs=2, batch_size=64,
        ...                          progress=False, seed=0)
        >>> sorted(result.history)
        ['d_loss', 'divergence', 'g_loss', 'time']
    """
    start_time = time.perf_counter()
    _check_gan(gan)
    epochs = check_positive_int(epochs, "epochs", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    d_steps = check_positive_int(d_steps, "d_steps")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    lr_g, lr_d = _check_lr(lr_g, "lr_g"), _check_lr(lr_d, "lr_d")
    betas = _check_betas(betas)
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs checkpoint_dir=... (the directory holding checkpoint.pt)")
    dev = resolve_device(device)
    gan.to(dev)
    dtype = model_dtype(gan)

    d_params, g_params = _trainable(gan.discriminator), _trainable(gan.generator)
    if not d_params:
        raise ConfigError(
            "found no trainable parameters in gan.discriminator; an adversarial fit trains the critic, "
            "so leave its parameters with requires_grad=True"
        )
    opt_d = torch.optim.Adam(d_params, lr=lr_d, betas=betas)
    opt_g = torch.optim.Adam(g_params, lr=lr_g, betas=betas) if g_params else None

    if seed is not None:
        pyro.set_rng_seed(seed)
    shuffle_gen = torch.Generator()
    shuffle_gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    batches, num_train = make_batches(
        data, name="data", batch_size=batch_size, device=dev, dtype=dtype, generator=shuffle_gen, shuffle=True
    )

    history: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "divergence": [], "time": []}
    start_epoch = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    fingerprints = {"model": fingerprint(gan), "guide": fingerprint(None)}
    divergence = getattr(gan, "divergence", None)

    if resume and ckpt_path is not None and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=dev)
        if state.get("kind") != _KIND:
            raise CheckpointError(
                f"the checkpoint in {str(ckpt_path)!r} was not written by fit_adversarial (it holds no "
                "optimizer states for a generator and a critic); resume it with inference.fit, or start "
                "a fresh run without resume=True"
            )
        check_fingerprint(state["fingerprint"]["model"], gan, "model", ckpt_path)
        saved_divergence = state["config"].get("divergence")
        if saved_divergence != divergence:
            raise CheckpointError(
                f"the checkpoint in {str(ckpt_path)!r} was trained with divergence={saved_divergence!r}, "
                f"this model has divergence={divergence!r}; build the GAN with the same divergence or "
                "start a fresh run without resume=True"
            )
        gan.load_state_dict(state["model"])
        opt_d.load_state_dict(state["optimizer_d"])
        if opt_g is not None and state.get("optimizer_g") is not None:
            opt_g.load_state_dict(state["optimizer_g"])
        history = {k: list(v) for k, v in state["history"].items()}
        start_epoch = int(state["epoch"])
        restore_rng_state(state["rng"])
        shuffle_gen.set_state(state["shuffle_rng"])

    config = {
        "divergence": divergence,
        "generator_loss": getattr(gan, "generator_loss_name", None),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr_g": lr_g,
        "lr_d": lr_d,
        "betas": list(betas),
        "d_steps": d_steps,
        "device": str(dev),
        "seed": seed,
    }

    def write_checkpoint(epoch: int) -> None:
        if ckpt_path is None:
            return
        save_checkpoint(
            ckpt_path,
            {
                "kind": _KIND,
                "epoch": epoch,
                "model": {k: v.detach().clone() for k, v in gan.state_dict().items()},
                "guide": {},
                "optimizer_d": opt_d.state_dict(),
                "optimizer_g": opt_g.state_dict() if opt_g is not None else None,
                "history": history,
                "rng": capture_rng_state(),
                "shuffle_rng": shuffle_gen.get_state(),
                "fingerprint": fingerprints,
                "config": config,
            },
        )

    def nonfinite(value: Tensor, what: str, epoch: int, step: int) -> NonFiniteLossError:
        intact = ckpt_path is not None and ckpt_path.exists()
        return NonFiniteLossError(
            f"the {what} became {float(value.detach())} at epoch {epoch + 1}, step {step + 1}; lower lr_d/lr_g, "
            "try generator_loss='non_saturating' or divergence='js', or check the data for extreme values"
            + (f"; the checkpoint of epoch {epoch} in {str(ckpt_path.parent)!r} is intact" if intact else "")
        )

    bar = None
    if progress and epochs > start_epoch:
        from tqdm.auto import tqdm

        bar = tqdm(total=(epochs - start_epoch) * len(batches), desc="fit_adversarial", unit="step", leave=True)

    stopped_early = False
    callbacks = tuple(callbacks)
    last_postfix = 0.0
    try:
        for epoch in range(start_epoch, epochs):
            d_total, g_total, d_count, g_count = 0.0, 0.0, 0, 0
            for step, batch in enumerate(batches):
                x_real = batch[0]
                n = x_real.shape[0]
                for _ in range(d_steps):
                    with torch.no_grad():
                        x_fake = gan(gan.sample_latent(n))
                    d_loss = gan.discriminator_loss(x_real, x_fake)
                    if not bool(torch.isfinite(d_loss)):
                        raise nonfinite(d_loss, "discriminator loss", epoch, step)
                    opt_d.zero_grad(set_to_none=True)  # also drops the critic grads of the last generator step
                    d_loss.backward()
                    opt_d.step()
                    d_total += d_loss.item() * n
                    d_count += n
                if opt_g is not None:
                    g_loss = gan.generator_loss(gan(gan.sample_latent(n)))
                    if not bool(torch.isfinite(g_loss)):
                        raise nonfinite(g_loss, "generator loss", epoch, step)
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                else:  # a fixed generator: report its loss against the updated critic, no step
                    with torch.no_grad():
                        g_loss = gan.generator_loss(x_fake)
                g_total += g_loss.item() * n
                g_count += n
                if bar is not None:
                    bar.update(1)
                    now = time.perf_counter()
                    if now - last_postfix > 0.5:
                        bar.set_postfix(epoch=epoch + 1, d_loss=f"{d_total / d_count:.4g}",
                                        g_loss=f"{g_total / g_count:.4g}", refresh=False)
                        last_postfix = now
            bad = nonfinite_params([gan], {})
            if bad:
                raise NonFiniteLossError(
                    f"parameters became non-finite during epoch {epoch + 1}: {bad[:5]}; lower lr_d/lr_g"
                    + (" (the last checkpoint is intact)" if ckpt_path is not None and ckpt_path.exists() else "")
                )
            epoch_d = d_total / d_count
            history["d_loss"].append(epoch_d)
            history["g_loss"].append(g_total / g_count)
            # divergence_bound is affine in F = -d_loss, so this is the mean of the per-step bounds.
            history["divergence"].append(float(gan.divergence_bound(-epoch_d)))
            history["time"].append(time.perf_counter() - start_time)
            logs = {k: v[-1] for k, v in history.items() if v}
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, d_loss=f"{logs['d_loss']:.4g}", g_loss=f"{logs['g_loss']:.4g}",
                                divergence=f"{logs['divergence']:.4g}")
            stop = end_of_epoch(callbacks, epoch + 1, logs)
            if checkpoint_due(epoch + 1, checkpoint_every, epochs, stop):
                write_checkpoint(epoch + 1)
            if stop:
                stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()

    return AdversarialResult(
        gan=gan,
        history=history,
        epochs_run=len(history["d_loss"]),
        stopped_early=stopped_early,
        elapsed=time.perf_counter() - start_time,
        num_train=num_train,
        config=config,
    )
