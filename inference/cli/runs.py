"""Run directories: what `vi-models fit` writes and `evaluate` / `sample` read back.

A run directory holds::

    config.json       the model family, its arguments and the data it was fitted on
    checkpoint.pt     model, guide, optimizer, scheduler and RNG states (weights only)
    history.json      per-epoch losses
    metrics.json      held-out figures written by `evaluate`
    loss.png, samples.png, reconstructions.png

``config.json`` carries a marker, so a directory that is not a run is recognised and refused
before anything is read or written. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from inference.engine.checkpoint import CHECKPOINT_NAME, atomic_write_bytes, atomic_write_text
from vi_models.errors import RunDirectoryError

MARKER = "vi-models-run"
CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.json"

__all__ = ["RunDir", "MARKER"]


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
                    f"{str(run.path)!r} exists and is not a vi-models run directory; "
                    "choose a new or empty --out directory (nothing was written)"
                )
            if resume:
                previous = run.config()
                if previous.get("model") != config.get("model"):
                    raise RunDirectoryError(
                        f"{str(run.path)!r} holds a {previous.get('model')!r} run; cannot resume it as "
                        f"{config.get('model')!r}"
                    )
            elif not overwrite:
                raise RunDirectoryError(
                    f"{str(run.path)!r} already holds a run; pass --resume to continue it, --overwrite "
                    "to replace it, or choose another --out"
                )
            else:
                for name in (CHECKPOINT_NAME, METRICS, HISTORY):
                    if (run.path / name).exists():
                        (run.path / name).unlink()
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_json(CONFIG, {"format": MARKER, **config})
        return run

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
                f"{str(run.path)!r} is not a vi-models run directory (no {CONFIG} with the run marker); "
                "pass the --out directory of a `vi-models fit`"
            )
        if not run.checkpoint_path.is_file():
            raise RunDirectoryError(
                f"the run in {str(run.path)!r} has no {CHECKPOINT_NAME}: its fit did not finish an epoch; "
                "fit it again"
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
            raise RunDirectoryError(f"the run in {str(self.path)!r} has no {name}") from None
        except ValueError as exc:
            raise RunDirectoryError(f"{name} in {str(self.path)!r} is not valid JSON ({exc})") from None

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


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
