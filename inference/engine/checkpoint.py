"""Checkpoints: written atomically, read without unpickling arbitrary code.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings and
containers of them, so it loads with ``torch.load(weights_only=True)``: a file that
would need to run code when unpickled is refused, not executed.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vi_models.errors import CheckpointError

FORMAT = "vi-models-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_modules",
    "restore_modules",
    "fingerprint",
    "check_fingerprint",
    "atomic_write_bytes",
    "atomic_write_text",
    "capture_rng_state",
    "restore_rng_state",
    "CHECKPOINT_NAME",
]


def _atomic_replace(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    _atomic_replace(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, containers) atomically to ``path``."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    _atomic_replace(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, not a vi-models checkpoint, truncated, or
            would need arbitrary code to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"expected a checkpoint file at {str(path)!r}, found none; "
            "pass the run directory of a finished `fit`, or train with checkpoint_dir=..."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it holds objects that would run code when "
            f"unpickled ({str(exc).splitlines()[0]}); only checkpoints written by vi-models are accepted"
        ) from None
    except Exception as exc:  # truncated or corrupted archives
        raise CheckpointError(
            f"could not read checkpoint {str(path)!r} ({type(exc).__name__}: {exc}); "
            "the file is damaged or not a checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"expected a vi-models checkpoint in {str(path)!r}, got a file without the "
            f"'{FORMAT}' marker; was it written by another program?"
        )
    return payload


def fingerprint(module: Any) -> dict[str, Any]:
    """Class and parameter shapes of a module: what a checkpoint must match to load.

    The class is named by its top-level package and its name (``vi_models.VAE``), as users
    import it, not by the submodule that defines it: moving a class inside its package (as the
    0.2 layout did) leaves its checkpoints loadable.
    """
    if not isinstance(module, nn.Module):
        return {"class": type(module).__name__, "shapes": {}}
    return {
        "class": f"{type(module).__module__.split('.')[0]}.{type(module).__qualname__}",
        "shapes": {k: list(v.shape) for k, v in module.state_dict().items()},
    }


def _class_key(name: str) -> tuple[str, str]:
    """(top-level package, class name) of a fingerprint's class, whichever submodule it named
    (0.1 checkpoints name the defining module, ``vi_models.vae.VAE``)."""
    head, _, tail = name.partition(".")
    return head, tail.rpartition(".")[2] if tail else head


def check_fingerprint(saved: dict[str, Any], module: Any, label: str, path: Path) -> None:
    """Raise :class:`CheckpointError` if ``module`` is not the one the checkpoint was written for."""
    now = fingerprint(module)
    if _class_key(saved["class"]) != _class_key(now["class"]) or saved["shapes"] != now["shapes"]:
        missing = sorted(set(saved["shapes"]) ^ set(now["shapes"]))[:5]
        changed = sorted(k for k in set(saved["shapes"]) & set(now["shapes"]) if saved["shapes"][k] != now["shapes"][k])[:5]
        raise CheckpointError(
            f"the checkpoint in {str(path)!r} belongs to another {label}: it was written for "
            f"{saved['class']} and this {label} is {now['class']}"
            + (f"; parameters present in only one of them: {missing}" if missing else "")
            + (f"; parameters with other shapes: {changed}" if changed else "")
            + "; build the same model (same sizes) or start a fresh run without resume=True"
        )


def load_modules(path: str | os.PathLike, model: Any, guide: Any, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load the model and guide states of a training checkpoint into ``model`` and ``guide``.

    Raises:
        CheckpointError: the checkpoint is unsafe, damaged, or written for other modules.
    """
    state = load_checkpoint(path, map_location=map_location)
    restore_modules(state, model, guide, path)
    return state


def restore_modules(state: dict[str, Any], model: Any, guide: Any, path: str | os.PathLike) -> None:
    """Load the model and guide states of a loaded checkpoint ``state`` (read from ``path``).

    Raises:
        CheckpointError: the checkpoint was written for other modules.
    """
    for label, module in (("model", model), ("guide", guide)):
        check_fingerprint(state["fingerprint"][label], module, label, Path(path))
        if isinstance(module, nn.Module):
            module.load_state_dict(state[label])


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state that training touches, as weights-only-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
