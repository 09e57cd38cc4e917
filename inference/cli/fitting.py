"""``vi-models fit``: build a family's model, train it (on one process, or many under ``torchrun``),
and write the run directory.

Under ``torchrun --nproc_per_node=W -m inference.cli fit ...`` every rank loads the same data,
builds the same model (same seed) and calls the family's training, whose engine (:func:`inference.fit`,
:func:`inference.fit_em`, :func:`inference.fit_diffusion`) is data-parallel by itself; rank 0
alone creates and writes the run directory (config, checkpoints, history, figures), and the
other ranks read its decisions. Everything a user can get wrong (a family that cannot be
distributed, more ranks than training rows, a CUDA device on a machine without one, a resume
with another number of ranks) is refused on every rank before anything is written.

A fit that fails later (a non-finite loss, a degenerate mixture) removes what it wrote, so
``--out`` is left as it was (:func:`~.runs.discard_failed_run`); a run given with ``--resume``
stays resumable from its last complete checkpoint. Until its last file is written a run is
marked unfinished, so an interrupted fit is never taken for a finished one (:mod:`.runs`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["cmd_fit"]


def _load_bundle(name: str, device: Any, options: dict[str, Any] | None = None) -> Any:
    from inference.data.datasets import load_dataset

    return load_dataset(name, device=device, **(options or {}))


def _split_validation(bundle: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """(bundle whose train split lost a random ``fraction``, the held-out rows) or (bundle, None)."""
    import dataclasses

    import torch

    n = bundle.train.shape[0]
    n_val = int(round(fraction * n))
    if n_val < 1 or n - n_val < 1:
        return bundle, None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(bundle.train.device)
    keep, held = order[n_val:], order[:n_val]
    changes: dict[str, Any] = {"train": bundle.train[keep]}
    for name in ("train_levels", "train_targets"):
        if getattr(bundle, name, None) is not None:
            changes[name] = getattr(bundle, name)[keep]
    return dataclasses.replace(bundle, **changes), bundle.train[held]


def _check_parallel(family: Any, world: int, num_train: int, out: str, resume: bool) -> None:
    """Refuse, on every rank and before writing, what cannot run on ``world`` processes."""
    from inference.engine.checkpoint import CHECKPOINT_NAME
    from vi_models.errors import ConfigError

    if world <= 1:
        return
    if not getattr(family, "distributed", True):
        raise ConfigError(
            f"the {family.name} family cannot be fitted on {world} processes ({family.distributed_reason}); "
            f"run `vi-models fit {family.name} ...` without torchrun"
        )
    if num_train < world:
        raise ConfigError(f"expected at least one training row per process, got {num_train} rows for {world} "
                          "processes; start fewer processes (torchrun --nproc_per_node=...)")
    ckpt = Path(out) / CHECKPOINT_NAME
    if resume and ckpt.is_file():
        from inference.engine.checkpoint import load_checkpoint

        saved = int(load_checkpoint(ckpt).get("world_size", 1))  # checkpoints before 0.2: one process
        if saved != world:
            raise ConfigError(
                f"the run in {out!r} was checkpointed with {saved} process(es) and cannot resume on {world}; "
                f"resume it with torchrun --nproc_per_node={saved}, or start a fresh run with --overwrite"
            )


def _removal_noted(exc: Exception, out: str) -> Exception:
    """``exc`` again, its first line (the one `vi-models` prints) saying that the run is gone."""
    first, newline, rest = str(exc).partition("\n")
    return type(exc)(f"{first}; what this fit wrote in {out!r} was removed{newline}{rest}")


def _create_run(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    """Rank 0 creates the run directory; every rank gets a :class:`RunDir` (writable on rank 0 only)
    or the same error, so that no rank waits for one that failed."""
    from inference.engine import distributed
    from vi_models.errors import RunDirectoryError

    from .runs import RunDir

    failure = None
    if distributed.is_main_process():
        try:
            RunDir.create(args.out, config, overwrite=args.overwrite, resume=args.resume)
        except RunDirectoryError as exc:
            failure = str(exc)
    failure = distributed.broadcast_object(failure)
    if failure is not None:
        raise RunDirectoryError(failure)
    return RunDir(args.out, writable=distributed.is_main_process())


def cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from inference.engine import distributed
    from vi_models.errors import VIModelsError

    from .families import get_family
    from .runs import discard_failed_run, run_dir_state

    family = get_family(args.model)
    world = distributed.requested_world_size()
    device = distributed.rank_device(args.device)  # cuda -> cuda:LOCAL_RANK under torchrun
    torch.manual_seed(args.seed)
    bundle = _load_bundle(args.data, device)  # validate the data before creating the run directory
    model_config = family.config_from_args(args)
    model, guide = family.build(model_config, bundle, device)
    data_ref = args.data if not os.path.exists(args.data) else str(Path(args.data).resolve())
    config = {
        "model": family.name,
        "data": data_ref,
        "data_options": {},
        "model_config": model_config,
        "fit": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed},
        # the device as asked ("cuda", not this rank's "cuda:1"): evaluate on one process uses it
        "device": str(torch.device(args.device)) if world > 1 else str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if not 0.0 <= args.validation_fraction < 1.0:
        from vi_models.errors import ConfigError

        raise ConfigError(f"expected --validation-fraction in [0, 1), got {args.validation_fraction}")
    train_bundle, validation = _split_validation(bundle, args.validation_fraction, args.seed)
    _check_parallel(family, world, train_bundle.train.shape[0], args.out, args.resume)
    if world > 1:
        distributed.init(device)  # after every check: each rank refuses the same input on its own
    config["fit"].update(validation_fraction=args.validation_fraction, early_stopping=args.early_stopping,
                         world_size=world)
    before = run_dir_state(args.out) if distributed.is_main_process() else None
    run = _create_run(args, config)
    try:
        return _train_and_write(args, family, bundle, train_bundle, validation, model, guide, model_config,
                                config, run, device, world)
    except Exception as exc:
        if before is None or (args.resume and before.held_run):
            raise  # another rank, or a resumed run: it stays resumable from its last checkpoint
        discard_failed_run(args.out, before)
        if isinstance(exc, VIModelsError):
            raise _removal_noted(exc, args.out) from exc
        raise


def _train_and_write(args: argparse.Namespace, family: Any, bundle: Any, train_bundle: Any, validation: Any,
                     model: Any, guide: Any, model_config: dict[str, Any], config: dict[str, Any], run: Any,
                     device: Any, world: int) -> int:
    """Train the pair and write the run's files; the run is marked finished last."""
    import torch

    from inference.diagnostics.plots import plot_history, plot_samples
    from inference.engine import distributed

    started = time.perf_counter()
    history = family.train(
        model,
        guide,
        train_bundle,
        model_config,
        run=run,
        fit_options={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "device": device,
            "seed": args.seed,
            "resume": args.resume,
            "progress": not args.no_progress,
            "validation_data": validation,
            "early_stopping": args.early_stopping if validation is not None and args.early_stopping > 0 else None,
        },
    )
    if not distributed.is_main_process():
        return 0  # rank 0 writes the results; the model is the same on every rank
    run.write_json("history.json", {**history, "fit_seconds": time.perf_counter() - started})
    if history.get("loss"):
        run.save_figure("loss.png", plot_history(history, title=f"{family.name} on {bundle.name}"))
    torch.manual_seed(args.seed)
    samples = family.sample(model, guide, 64, model_config)
    run.save_figure("samples.png", plot_samples(samples, image_shape=bundle.image_shape, reference=bundle.train[:2000]
                                                if bundle.image_shape is None else None))
    for name, figure in family.figures(model, guide, bundle, model_config).items():
        run.save_figure(name, figure)
    run.mark_finished({**config, "model_config": model_config})
    unit = family.loss_unit(model_config) if hasattr(family, "loss_unit") else "nats/observation"
    summary = (f"final training loss {history['loss'][-1]:.4f} {unit}" if history.get("loss")
               else "fitted in closed form")
    print(f"fitted {family.name} on {bundle.name}: {summary}; run directory {run.path}"
          + (f" ({world} processes)" if world > 1 else ""))
    return 0
