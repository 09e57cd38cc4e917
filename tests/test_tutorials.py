"""The tutorials run end to end, are committed without outputs, and use nothing private.

Every ``tutorials/*.ipynb`` is executed top to bottom with nbclient in a fresh kernel started
from this interpreter (``sys.executable``, so the kernel sees the same environment and the
installed package), with ``CI=true`` so that the notebook shrinks its work, and with a
temporary directory as its working directory so it cannot write into the repository. The
notebooks check their own numerical claims with ``assert``; a wrong package makes them fail.

A notebook may list the THEORY ids it checks in its metadata, ``{"vi_models": {"theory":
["T1", ...]}}``; the execution test then carries ``@pytest.mark.theory(...)`` for them.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
KERNEL_NAME = "vi-models-tests"
CELL_TIMEOUT_S = 300


def _theory_ids(path: Path) -> tuple[str, ...]:
    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return tuple(meta.get("vi_models", {}).get("theory", ()))


def _params(with_theory: bool) -> list:
    return [
        pytest.param(p, id=p.stem, marks=[pytest.mark.theory(*_theory_ids(p))] if with_theory and _theory_ids(p) else [])
        for p in NOTEBOOKS
    ]


def _kernel_manager(spec_dir: Path):
    """A kernel manager whose only kernel runs ``sys.executable -m ipykernel_launcher``.

    A kernelspec named "python3" elsewhere on the Jupyter path may point at another
    interpreter; a private spec makes the kernel this test's own Python.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    kernel_dir = spec_dir / "kernels" / KERNEL_NAME
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"vi-models tests ({sys.executable})",
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


@pytest.mark.parametrize("path", _params(with_theory=True))
def test_tutorial_executes(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = dict(os.environ, CI="true")
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path / "jupyter"),
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute(env=env, cwd=str(workdir))
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name} failed under CI=true:\n{exc}", pytrace=False)


@pytest.mark.parametrize("path", _params(with_theory=False))
def test_tutorial_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} carry outputs or execution counts; strip them before committing "
        "(jupyter nbconvert --clear-output --inplace, or nbformat: outputs=[], execution_count=None)"
    )


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for an attribute chain rooted at a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _package_names(source: str) -> list[str]:
    """Dotted names a cell imports or reads as attributes (IPython magics and shell lines skipped)."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    names: list[str] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and (dotted := _dotted(node)) is not None:
            names.append(dotted)
    return names


@pytest.mark.parametrize("path", _params(with_theory=False))
def test_tutorial_uses_public_api_only(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    own = ("inference", "vi_models", "guides")
    private = sorted(
        {
            name
            for cell in nb.cells
            if cell.cell_type == "code"
            for name in _package_names(cell.source)
            if name.split(".")[0] in own and any(part.startswith("_") for part in name.split("."))
        }
    )
    assert not private, f"{path.name} uses private names {private}; tutorials use the public API only"
