"""The one fitting loop: stochastic variational inference for any Pyro model/guide pair.

``fit`` is a thin orchestrator in the spirit of Pyro's ``SVI`` (trace the parameters,
compute the loss and its gradients, step, zero the gradients), written as a plain PyTorch
loop so that torch optimizers, LR schedulers, gradient clipping, checkpoints and devices
work as a PyTorch user expects:

    for epoch:                      # an epoch is one pass over the (shuffled) data
        for batch:                  # whole small datasets stay on the device
            loss = elbo.loss_and_grads(model, guide, *batch)   # -ELBO, gradients
            clip; optimizer.step(); optimizer.zero_grad()
        validation, scheduler, early stopping, callbacks, checkpoint

The model and guide are called as ``model(*batch)`` and ``guide(*batch)``; a batch is one
tensor ``(B, ...)`` or a tuple of tensors (``(X, y)`` for regression). A model or guide that
accepts a ``full_size`` keyword receives the size of the training set, so that it can scale
its observation plate (``pyro.plate("data", size=full_size, subsample=...)``) and give
unbiased minibatch gradients when it also has global latent variables.

Under ``torchrun`` the same call is data-parallel with no change: each rank fits its shard of
every global batch, gradients are summed over ranks before each step, figures and decisions
are agreed, and rank 0 alone writes (the rules: :mod:`inference.engine.data_parallel`).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from pyro.infer import ELBO
from torch import nn

from vi_models._validation import check_positive_int
from vi_models.errors import ConfigError, ConvergenceWarning, NonFiniteLossError

from . import distributed
from ._params import (
    OptimizerSpec,
    checkpoint_due,
    collect_params,
    end_of_epoch,
    free_params,
    make_optimizer,
    nonfinite_params,
)
from ._traces import plate_depth
from .batches import make_batches, model_dtype
from .checkpoint import CHECKPOINT_NAME, capture_rng_state, fingerprint, save_checkpoint
from .convergence import elbo_converged
from .data_parallel import SVIStep, broadcast_state, checkpoint_found, join, validation_loss
from .fit_result import FitResult
from .full_size import accepts_full_size, bind_full_size, guide_accepts_full_size
from .losses import Beta, make_elbo, resolve_beta, wrap_beta
from .recorded import record
from .resume import module_state, restore_training_state, training_state

__all__ = ["fit", "FitResult"]

# --------------------------------------------------------------------------- helpers


def _empty_guide(*args: Any, **kwargs: Any) -> None:
    """The guide of a model without latent variables outside enumeration."""


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


# --------------------------------------------------------------------------- fit


def fit(
    model: Callable,
    guide: Callable | None,
    data: Any,
    *,
    loss: str | ELBO = "elbo",
    num_particles: int = 1,
    vectorize_particles: bool | None = None,
    max_plate_nesting: int | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: OptimizerSpec = "adam",
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    clip_norm: float | None = None,
    beta: Beta = 1.0,
    device: torch.device | str | None = "cpu",
    seed: int | None = None,
    validation_data: Any = None,
    early_stopping: int | None = None,
    restore_best: bool = True,
    callbacks: Iterable[Callable[..., Any]] = (),
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = True,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    check_convergence: bool = True,
    convergence_window: int = 200,
    jit: bool = False,
) -> FitResult:
    """Fit ``guide`` (and the parameters of ``model``) by stochastic variational inference.

    Args:
        model: a Pyro model, called as ``model(*batch)``: a :class:`~pyro.nn.PyroModule` or a
            function registering parameters with ``pyro.param``.
        guide: the variational family, called like the model; ``None`` for a model whose only
            latents are enumerated (``loss="enum"``) or that has none.
        data: training data ``(N, ...)``: a tensor, numpy array, tuple of them, a
            :class:`inference.data.DataBundle` (its ``train`` split), a torch ``Dataset`` or a
            ``DataLoader``. In-memory data is moved to ``device`` whole and indexed there. Under
            ``torchrun`` every rank passes the same data; a Dataset or a shuffling/sequential
            DataLoader is re-read in this rank's shards (a DataLoader with another sampler is refused).
        loss: ``"elbo"``, ``"meanfield"`` (analytic KL), ``"enum"``, ``"iwae"`` or a Pyro
            :class:`~pyro.infer.ELBO` instance (see :mod:`inference.engine.losses`).
        num_particles: samples per step (K importance samples for ``"iwae"``).
        vectorize_particles: draw particles in one vectorised pass (default: for ``"iwae"``);
            the model must then broadcast over an extra leading plate dimension.
        max_plate_nesting: the model's plate depth, if Pyro should not guess it.
        epochs: total number of epochs; with ``resume=True`` training continues from the
            checkpoint's epoch up to this number (so N + M epochs equal N, then M resumed).
        batch_size: observations per step (clipped to the data size); under ``torchrun``, per
            rank: a step takes a global batch of ``world_size * batch_size``.
        lr: learning rate for a named optimizer.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``, a torch optimizer class, or
            a callable ``params -> Optimizer``.
        scheduler: a callable ``optimizer -> LR scheduler``, stepped once per epoch
            (``ReduceLROnPlateau`` gets the monitored loss).
        clip_norm: clip the global gradient norm to this value.
        beta: weight of the latent sites' log-densities (the KL term of a VAE), a float or a
            schedule ``epoch -> float`` such as :func:`inference.linear_annealing`.
        device: where the model, guide and data live; ``"cuda"`` is ``cuda:LOCAL_RANK`` under ``torchrun``.
        seed: seeds Pyro/torch/numpy/random and the shuffling; a run with a seed is
            reproducible bit for bit on CPU. Under ``torchrun`` rank r's streams are seeded with
            ``seed + r`` and the shuffling with ``seed`` on every rank (``None``: rank 0 draws it).
        validation_data: held-out data for a validation -ELBO per epoch (monitored by early
            stopping when given).
        early_stopping: stop after this many epochs without improvement of the monitored loss.
        restore_best: with early stopping, put back the parameters of the best epoch at the end.
        callbacks: callables ``cb(epoch, logs) -> bool | None`` (or objects with an
            ``on_epoch_end(epoch, logs)`` method) run after every epoch; ``True`` stops training
            (under ``torchrun`` they run on every rank with the same logs; ``True`` on any rank stops all).
            A callback with a ``set_model(model, guide)`` method receives the pair before
            training (e.g. :class:`inference.ElboTerms`).
        checkpoint_dir: directory for ``checkpoint.pt`` (written atomically every
            ``checkpoint_every`` epochs and at the end). Under ``torchrun`` give every rank the
            same directory, seen by all: rank 0 alone writes it, every rank reads it at a resume.
        resume: continue from the checkpoint in ``checkpoint_dir`` if one exists; a checkpoint
            written by W ranks resumes on W ranks only (another number is a ``ConfigError``).
        progress: show a tqdm progress bar with the running loss (on rank 0 only).
        batch_transform: applied to the first tensor of each training batch on the device (for
            instance fresh dequantisation noise).
        check_convergence: warn (:class:`ConvergenceWarning`) when the last
            ``convergence_window`` step losses still decrease significantly.
        convergence_window: steps used by the convergence verdict.
        jit: record the training loss once per batch shape and replay it
            (:class:`inference.engine.recorded.RecordedELBO`, as Pyro's ``JitTrace_ELBO``):
            the same loss and gradients without Python per step. Needs tensor batches and a
            reparameterised or enumerated guide; a :class:`DiffusionELBO` records itself
            (``DiffusionELBO(..., jit=True)``).

    Returns:
        A :class:`FitResult` with the history of per-epoch losses (under ``torchrun``, the
        figures of the whole global batches, the same on every rank but for ``"time"``).

    Under ``torchrun`` (``WORLD_SIZE > 1``) the call joins the process group and is data-parallel:
    each rank fits its shard of every global batch, gradients are summed over ranks before each
    step (the one-process gradient of the global batch; a model with global latents should take
    ``full_size``), and figures and decisions are agreed (rules: :mod:`inference.engine.data_parallel`).

    Raises:
        ConfigError: an argument outside its allowed values; under ``torchrun`` also fewer
            training examples than ranks, or a resume with another number of ranks.
        DataError: data that is empty, non-finite or of the wrong type.
        NonFiniteLossError: the loss or a parameter became NaN/inf; the error names the
            epoch, the step and the sample sites whose log-density is non-finite (under
            ``torchrun``, every rank raises it, naming the rank(s) that saw it). The last
            checkpoint written stays intact.
        CheckpointError: ``resume=True`` with a checkpoint that is unsafe or belongs to another model.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from inference import fit
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.tensor(0.0))
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> result = fit(model, None, torch.randn(100) + 3.0, epochs=50, lr=0.1, progress=False, seed=0)
        >>> abs(pyro.param("loc").item() - 3.0) < 0.3
        True
    """
    start_time = time.perf_counter()
    epochs = check_positive_int(epochs, "epochs", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if early_stopping is not None:
        early_stopping = check_positive_int(early_stopping, "early_stopping")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"expected lr to be a positive finite number, got {lr!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ConfigError(f"expected clip_norm > 0 or None, got {clip_norm!r}")
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs checkpoint_dir=... (the directory holding checkpoint.pt)")
    ranks, shuffle_seed = join(device, seed)  # torchrun's process group, this rank's device and RNG streams
    dev = ranks.device
    make_elbo(loss, num_particles=num_particles)  # validate the loss spec before touching data
    guide_fn = guide if guide is not None else _empty_guide
    modules = (model, guide)
    for module in modules:
        if isinstance(module, nn.Module):
            module.to(dev)
    dtype = model_dtype(*modules)

    shuffle_gen = torch.Generator()
    shuffle_gen.manual_seed(shuffle_seed)
    shards = {"rank": ranks.rank, "world": ranks.world}
    batches, num_train = make_batches(
        data, name="data", batch_size=batch_size, device=dev, dtype=dtype, generator=shuffle_gen, shuffle=True, **shards
    )
    ranks.check_examples(num_train)
    val_batches = None
    if validation_data is not None:
        val_batches, _ = make_batches(
            validation_data, name="validation_data", batch_size=max(batch_size, 512), device=dev,
            dtype=dtype, generator=torch.Generator(), shuffle=False, **shards,
        )

    full = num_train if accepts_full_size(model) else None
    train_model = bind_full_size(model, full)
    train_guide = bind_full_size(guide_fn, full if guide_accepts_full_size(guide_fn) else None)

    first = next(iter(batches))
    if max_plate_nesting is None and isinstance(loss, str):
        max_plate_nesting = plate_depth(train_model, train_guide, first)
    elbo = make_elbo(
        loss,
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting,
    )
    if jit:
        elbo = record(elbo)
    params = collect_params(elbo, train_model, train_guide, first, modules)
    if not params:
        raise ConfigError(
            "found no trainable parameters in the model or guide; register them in a PyroModule "
            "(PyroParam / nn.Parameter) or with pyro.param"
        )
    free = free_params(params, modules)
    broadcast_state(params, modules)
    opt = make_optimizer(optimizer, params, lr)
    sched = scheduler(opt) if scheduler is not None else None

    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "lr": [], "beta": [], "time": [], "step_loss": []}
    start_epoch = 0
    best = (math.inf, None)  # (monitored loss, epoch)
    best_states: tuple[dict, dict] | None = None
    bad_epochs = 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    fingerprints = {"model": fingerprint(model), "guide": fingerprint(guide)}

    if resume and ckpt_path is not None and checkpoint_found(ckpt_path, ranks):
        history, start_epoch, best, bad_epochs, best_states = restore_training_state(
            ckpt_path, model=model, guide=guide, free=free, optimizer=opt, scheduler=sched,
            shuffle_rng=shuffle_gen, map_location=dev, rank=ranks.rank, world_size=ranks.world,
        )
        broadcast_state(params, modules)

    def write_checkpoint(epoch: int) -> None:
        if ckpt_path is None:
            return
        rng_states = distributed.all_gather_objects(capture_rng_state()) if ranks.parallel else None
        if ranks.rank == 0:  # rank 0 alone writes
            save_checkpoint(ckpt_path, training_state(
                epoch, model=model, guide=guide, free=free, optimizer=opt, scheduler=sched, history=history,
                best=best, bad_epochs=bad_epochs, best_states=best_states, shuffle_rng=shuffle_gen,
                fingerprints=fingerprints, loss=loss, rng_states=rng_states,
            ))

    take_step = SVIStep(elbo, opt, params, ranks=ranks, full_size=full, clip_norm=clip_norm,
                        batch_transform=batch_transform, checkpoint=ckpt_path)
    bar = None
    if progress and epochs > start_epoch and ranks.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=(epochs - start_epoch) * len(batches), desc="fit", unit="step", leave=True)

    stopped_early = False
    callbacks = tuple(callbacks)
    for cb in callbacks:
        attach = getattr(cb, "set_model", None)
        if callable(attach):
            attach(model, guide)
    last_postfix = 0.0
    try:
        for epoch in range(start_epoch, epochs):
            beta_now = resolve_beta(beta, epoch)
            step_model = wrap_beta(train_model, beta_now)
            step_guide = wrap_beta(train_guide, beta_now)
            total, count = 0.0, 0
            for step, batch in enumerate(batches):
                step_loss, part, n = take_step(step_model, step_guide, batch, epoch, step)
                history["step_loss"].append(step_loss)
                total += part
                count += n
                if bar is not None:
                    bar.update(1)
                    now = time.perf_counter()
                    if now - last_postfix > 0.5:
                        bar.set_postfix(epoch=epoch + 1, loss=f"{total / max(count, 1):.4g}", refresh=False)
                        last_postfix = now
            bad = nonfinite_params(modules, free)
            if bad:
                raise NonFiniteLossError(
                    f"parameters became non-finite during epoch {epoch + 1}: {bad[:5]}; "
                    "lower lr or set clip_norm=..." + (" (the last checkpoint is intact)" if ckpt_path else "")
                )
            epoch_loss = total / count
            history["loss"].append(epoch_loss)
            history["beta"].append(beta_now)
            history["lr"].append(float(opt.param_groups[0]["lr"]))
            monitored = epoch_loss
            if val_batches is not None:
                val_loss = validation_loss(elbo, model, guide_fn, val_batches, full_size=full, ranks=ranks)
                history["val_loss"].append(val_loss)
                monitored = val_loss
            history["time"].append(time.perf_counter() - start_time)
            if sched is not None:
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(monitored)
                else:
                    sched.step()
            if monitored < best[0]:
                best = (monitored, epoch + 1)
                bad_epochs = 0
                if early_stopping is not None and restore_best:
                    best_states = (module_state(model), module_state(guide))
            else:
                bad_epochs += 1
            logs = {k: v[-1] for k, v in history.items() if v and k != "step_loss"}
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_loss:.4g}", **({"val": f"{history['val_loss'][-1]:.4g}"} if val_batches else {}))
            stop = distributed.any_rank(end_of_epoch(  # a callback's stop on any rank stops every rank
                callbacks, epoch + 1, logs, stop=early_stopping is not None and bad_epochs >= early_stopping))
            if checkpoint_due(epoch + 1, checkpoint_every, epochs, stop):
                write_checkpoint(epoch + 1)
            if stop:
                stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
    distributed.barrier()  # no rank returns before rank 0's files are written

    epochs_run = len(history["loss"])
    if stopped_early and restore_best and best_states is not None:
        for module, sd in zip(modules, best_states):
            if isinstance(module, nn.Module):
                module.load_state_dict(sd)
    report = elbo_converged(history["step_loss"], window=convergence_window)
    if check_convergence and not stopped_early and not report.converged and epochs_run > 0 and ranks.rank == 0:
        warnings.warn(
            f"SVI has not converged after {epochs_run} epochs: {report.reason}; train for more "
            "epochs, raise lr, or pass check_convergence=False to silence this",
            ConvergenceWarning,
            stacklevel=2,
        )
    config = {
        "loss": loss if isinstance(loss, str) else type(loss).__name__,
        "num_particles": num_particles,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
        "clip_norm": clip_norm,
        "beta": beta if not callable(beta) else repr(beta),
        "device": str(dev),
        "seed": seed,
        "early_stopping": early_stopping,
        "jit": bool(jit),
        "world_size": ranks.world,
    }
    return FitResult(
        model=model,
        guide=guide,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best[1],
        stopped_early=stopped_early,
        elapsed=time.perf_counter() - start_time,
        num_train=num_train,
        config={k: _json_safe(v) for k, v in config.items()},
        converged_=report.converged,
        convergence=report,
    )
