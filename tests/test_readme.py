"""The README's Python example runs as written (with fewer epochs)."""

from __future__ import annotations

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text()
    code = re.search(r"## Write a model, fit it\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "fit(" in code and "log_likelihood(" in code
    exec(compile(code.replace("epochs=50", "epochs=2").replace("lr=1e-2)", "lr=1e-2, progress=False)"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert math.isfinite(float(printed))


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
