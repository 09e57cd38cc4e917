"""Run directories: what `vi-models fit` writes and `evaluate` / `sample` read back.

A run directory holds::

    config.json       the model family, its arguments and the data it was fitted on
    checkpoint.pt     model, guide, optimizer, scheduler and RNG states (weights only)
    history.json      per-epoch losses
    metrics.json      held-out figures written by `evaluate`
    loss.png, samples.png, reconstructions.png

``config.json`` carries a marker, so a directory that is not a run is recognised and refused
before anything is read or written. Every file is written atomically.

A run is *unfinished* from the moment `fit` creates it (``"finished": false`` in its
``config.json``) until `fit` has written its last file: a fit that was interrupted (Ctrl-C,
SIGKILL) or failed is never mistaken for a finished one: :meth:`RunDir.open`, and so `evaluate`,
`sample`, `diagnose` and `compare`, refuse it and say how to resume it, while `fit --resume`
continues it from its last complete checkpoint. A `fit` that fails with an error removes what
it wrote (:func:`discard_failed_run`). Runs written before the marker existed count as finished.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from inference.engine.checkpoint import CHECKPOINT_NAME, atomic_write_bytes, atomic_write_text
from vi_models.errors import RunDirectoryError

MARKER = "vi-models-run"
CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.json"

__all__ = ["RunDir", "MARKER", "RunDirState", "run_dir_state", "discard_failed_run"]


class RunDir:
    """A run directory on disk.

    Args:
        path: the directory.
        writable: whether this process writes the run's files. Under ``torchrun`` only rank 0
            does; on the other ranks :meth:`write_json`, :meth:`save_figure` and
            :meth:`save_array` write nothing.
    """

    def __init__(self, path: str | os.PathLike, *, writable: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, path: str | os.PathLike, config: dict[str, Any], *, overwrite: bool = False,
               resume: bool = False) -> "RunDir":
        """Prepare ``path`` for a new run (or a resumed one) without damaging what is there.

        Raises:
            RunDirectoryError: ``path`` is a file, a non-empty directory that is not a run, or an
                existing run while neither ``overwrite`` nor ``resume`` is set.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunDirectoryError(f"expected --out to be a directory, got the existing file {str(run.path)!r}")
        if run.path.is_dir() and any(run.path.iterdir()):
            if not run.is_run():
                raise RunDirectoryError(
                    f"{str(run.path)!r} exists and is not a vi-models run directory: expected a new or empty "
                    "--out directory, or a run to --resume or --overwrite; choose another --out (nothing was written)"
                )
            if resume:
                previous = run.config()
                if previous.get("model") != config.get("model"):
                    raise RunDirectoryError(
                        f"expected a {config.get('model')!r} run to resume in {str(run.path)!r}, got a "
                        f"{previous.get('model')!r} run; resume it with `vi-models fit {previous.get('model')} ...`, "
                        "or choose another --out"
                    )
            elif not overwrite:
                raise RunDirectoryError(
                    f"expected a new or empty --out directory, got {str(run.path)!r}, which already holds a run; "
                    "pass --resume to continue it, --overwrite to replace it, or choose another --out"
                )
            else:
                for name in (CHECKPOINT_NAME, METRICS, HISTORY):
                    if (run.path / name).exists():
                        (run.path / name).unlink()
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_json(CONFIG, {"format": MARKER, **config, "finished": False})
        return run

    def mark_finished(self, config: dict[str, Any]) -> None:
        """Write the final ``config.json``: the run is complete and `evaluate` may read it."""
        self.write_json(CONFIG, {"format": MARKER, **config, "finished": True})

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """Open an existing run directory.

        Raises:
            RunDirectoryError: ``path`` is not a directory written by ``vi-models fit``.
        """
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirectoryError(
                f"expected a run directory written by `vi-models fit`, got {str(run.path)!r}, which "
                "does not exist or is not a directory"
            )
        if not run.is_run():
            raise RunDirectoryError(
                f"{str(run.path)!r} is not a vi-models run directory: expected a {CONFIG} with the run marker in "
                "it, got none; pass the --out directory of a `vi-models fit`"
            )
        config = run.config()
        kinds = {"model": str, "data": str, "model_config": dict}
        wrong = [k for k, kind in kinds.items() if not isinstance(config.get(k), kind)]
        if wrong:
            raise RunDirectoryError(
                f"expected the {CONFIG} of {str(run.path)!r} to hold {', '.join(kinds)} as `vi-models fit` wrote "
                f"them, got no valid {', '.join(wrong)}; restore the file or fit the run again"
            )
        if config.get("finished") is False:
            model = config["model"]
            raise RunDirectoryError(
                f"expected a finished run in {str(run.path)!r}, got one whose `vi-models fit` was interrupted or "
                f"failed; continue it with `vi-models fit {model} ... --out {run.path} --resume` (same options), "
                "or start it again with --overwrite"
            )
        if not run.checkpoint_path.is_file():
            raise RunDirectoryError(
                f"expected {CHECKPOINT_NAME} in the run {str(run.path)!r}, got none: its fit did not finish an "
                "epoch; fit it again"
            )
        return run

    # ------------------------------------------------------------------ content
    def is_run(self) -> bool:
        """Whether the directory holds a config.json with the run marker."""
        try:
            return json.loads((self.path / CONFIG).read_text()).get("format") == MARKER
        except (OSError, ValueError, AttributeError):
            return False

    def config(self) -> dict[str, Any]:
        """The run's configuration (``config.json``)."""
        return self.read_json(CONFIG)

    @property
    def checkpoint_path(self) -> Path:
        """Path of ``checkpoint.pt``."""
        return self.path / CHECKPOINT_NAME

    def read_json(self, name: str) -> dict[str, Any]:
        """Read a JSON file of the run."""
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise RunDirectoryError(f"expected {name} in the run {str(self.path)!r}, got none") from None
        except (ValueError, OSError) as exc:
            raise RunDirectoryError(
                f"expected {name} in {str(self.path)!r} to be readable JSON, got {type(exc).__name__}: {exc}"
            ) from None

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        """Write ``payload`` as JSON atomically; returns the path."""
        path = self.path / name
        if not self.writable:
            return path
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_default) + "\n")
        return path

    def save_figure(self, name: str, figure: Any) -> Path:
        """Save a matplotlib figure as PNG atomically and close it; returns the path."""
        import io

        import matplotlib.pyplot as plt

        if not self.writable:
            plt.close(figure)
            return self.path / name
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        path = self.path / name
        atomic_write_bytes(path, buffer.getvalue())
        return path


    def save_array(self, name: str, array: Any) -> Path:
        """Save a numpy array (``.npy``) atomically; returns the path."""
        if not self.writable:
            return self.path / name
        import io

        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        path = self.path / name
        atomic_write_bytes(path, buffer.getvalue())
        return path


class RunDirState(NamedTuple):
    """What ``--out`` held before a `fit` (see :func:`run_dir_state`)."""

    created: Path | None  # the outermost directory a fit would create; None if ``--out`` exists
    entries: frozenset[str]  # the names in ``--out`` (empty if it does not exist)
    held_run: bool  # whether ``--out`` was a run directory


def run_dir_state(path: str | os.PathLike) -> RunDirState:
    """Take stock of ``path`` before a `fit` creates (or resumes) a run there."""
    path = Path(path)
    if path.exists():  # a file is refused by RunDir.create before anything is written
        return RunDirState(None, frozenset(os.listdir(path) if path.is_dir() else ()), RunDir(path).is_run())
    created = path
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    return RunDirState(created, frozenset(), False)


def discard_failed_run(path: str | os.PathLike, before: RunDirState) -> None:
    """Undo what a failed `fit` wrote in ``path``, leaving no run that looks finished.

    A directory the fit created goes (with any parents it created); in one that existed, the
    files the fit added go, and so does its checkpoint. A run replaced with ``--overwrite`` is
    left as its new, unfinished ``config.json`` (refused by `evaluate`; `fit --overwrite` replaces
    it). A run given with ``--resume`` is not passed here: it stays resumable from its last checkpoint.
    """
    path = Path(path)
    if before.created is not None:
        shutil.rmtree(before.created, ignore_errors=True)
        return
    if not path.is_dir():
        return
    for name in os.listdir(path):
        if name not in before.entries or name in (CHECKPOINT_NAME, HISTORY, METRICS):
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
