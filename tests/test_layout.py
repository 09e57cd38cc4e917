"""The layout's promises: the public names of 0.1 still import, the layers run one way, no
module imports another in a cycle, importing the models changes no global setting, and
modules stay at one concept each."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vi_models", "guides", "inference")

# Every name the three packages exported at 0.1.0 (commit 39240ed, before the layout redesign).
EXPORTED_AT_0_1 = {
    "vi_models": [
        "ASSIGNMENT", "ActNorm", "AutoregressiveDistribution", "BernoulliMixture", "CategoricalMixture",
        "DATA_PLATE", "DDPM", "FlowPriorVAE", "GAN", "GaussianMixture", "GaussianMixtureBase",
        "GaussianMixtureDenoiser", "KERNELS", "KernelDensity", "LATENT", "LinearGaussian", "MADE", "MAF",
        "MixturePrior", "NoDensityError", "NoiseSchedule", "NormalizingFlow", "OBSERVED", "OptimalDenoiser",
        "RealNVP", "SplineFlow", "TimeMLP", "UNet", "VAE", "inverse_cdf_model", "log_kernel_normalizer",
    ],
    "guides": ["FlowEncoder", "ForwardDiffusion", "GaussianEncoder", "LinearGaussianEncoder"],
    "inference": [
        "AdversarialResult", "CheckpointError", "ConfigError", "ConvergenceWarning", "DataBundle", "DataError",
        "DegenerateFitWarning", "DiffusionELBO", "DiffusionObjective", "EMResult", "ElboTerms", "F_DIVERGENCES",
        "FitResult", "GaussianNoise", "LOSS_NAMES", "LooResult", "NonFiniteLossError", "PsisReport",
        "RunDirectoryError", "VIModelsError", "assignment_probs", "available_datasets", "bits_per_dim", "compare",
        "donsker_varadhan_bound", "elbo_from_terms", "elbo_terms", "f_divergence", "f_dual_bound", "fit",
        "fit_adversarial", "fit_diffusion", "fit_em", "fit_em_average", "inference_data_groups", "js_divergence",
        "js_dual_bound", "kl_divergence", "linear_annealing", "load_dataset", "log_importance_weights",
        "log_likelihood", "logmeanexp", "loo", "make_elbo", "mmd", "optimal_discriminator", "pareto_smooth",
        "psis_khat", "reverse_kl", "sliced_wasserstein", "to_inference_data", "vi_loo", "wasserstein_1d",
    ],
}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_exported_at_0_1_still_imports_from_its_package(package):
    module = __import__(package)
    missing = [name for name in EXPORTED_AT_0_1[package] if not hasattr(module, name)]
    assert not missing, f"{package} no longer exports {missing}"
    assert set(EXPORTED_AT_0_1[package]) <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)


def _module_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (every import statement, local ones too)."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            is_pkg = parts[-1] == "__init__"
            files[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, (path, is_pkg) in files.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module or ""
                # `from pkg import submodule` imports the submodule; `from mod import name`, the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_any_two_modules():
    """Stricter than import-linter's acyclic_siblings: every module against every other,
    TYPE_CHECKING and function-local imports included."""
    assert _cycles(_module_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_layers_run_one_way():
    """No module of vi_models imports guides or inference; none of guides imports inference."""
    graph = _module_graph()
    upward = [(m, t) for m, targets in graph.items() for t in targets
              if (m.startswith("vi_models") and t.split(".")[0] in ("guides", "inference"))
              or (m.startswith("guides") and t.split(".")[0] == "inference")]
    assert upward == []


def test_importing_the_models_and_guides_changes_no_global_setting():
    code = ("import sys, pyro; import vi_models, guides; "
            "import json; print(json.dumps([pyro.settings.get('module_local_params'), "
            "sorted(m for m in sys.modules if m.split('.')[0] == 'inference')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    local_params, engine_modules = json.loads(out.stdout)
    assert local_params is False and engine_modules == []
    code = "import pyro, inference; print(pyro.settings.get('module_local_params'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "True"  # the engine makes the setting, once, at its import


def test_modules_hold_one_concept():
    """At most 450 lines a module (STYLE: one concept, roughly 150-400 lines); a longer one says why
    in a comment starting 'One file:' in its first 40 lines."""
    long = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            lines = path.read_text().splitlines()
            if len(lines) > 450 and not any(line.lstrip().startswith("# One file:") for line in lines[:40]):
                long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert long == []


def test_lint_imports_contracts_hold():
    """The import-linter contracts of pyproject.toml (also run by `make test`)."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed in this environment")
    out = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
