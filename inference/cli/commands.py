"""The ``vi-models`` command: fit, evaluate and sample every model family from the shell.

::

    vi-models fit vae --data digits --out runs/vae --epochs 100
    vi-models evaluate runs/vae            # writes and prints metrics.json
    vi-models sample runs/vae -n 64 --out samples.png
    vi-models compare runs/vae runs/gmm     # rank evaluated runs by held-out elpd

User errors print one line (``vi-models: error: ...``) and exit with status 2, without a
traceback; nothing already on disk is damaged. The arguments are parsed by
:func:`~inference.cli.parser.build_parser`; this module holds one ``cmd_*`` function per command
and :func:`main`, which dispatches to them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .fitting import _load_bundle, _split_validation, cmd_fit  # noqa: F401  (tests import _split_validation here)
from .parser import build_parser

__all__ = ["main", "build_parser"]

#: Per-observation held-out log-likelihoods written by ``evaluate`` and read by ``compare``.
LOG_LIKELIHOOD_FILE = "test_log_likelihood.npy"


def _data_options(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in ("test_size", "random_state", "seed") if k in config}


def _family_options(family: Any, allowed_attr: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options the user set (not None/False), refused with one clear line if ``family`` lacks them.

    A family lists the options it understands in ``allowed_attr`` (e.g. ``sample_options``);
    families without the attribute understand none of them.
    """
    from vi_models.errors import ConfigError

    from .families import FAMILIES

    options = {k: v for k, v in given.items() if v is not None and v is not False}
    allowed = tuple(getattr(family, allowed_attr, ()))
    for key in options:
        if key not in allowed:
            owners = sorted(n for n, f in FAMILIES.items() if key in getattr(f, allowed_attr, ()))
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{flag} is not an option of the {family.name} family"
                + (f"; it applies to {', '.join(owners)}" if owners else "")
                + f"; drop {flag} (expected only options of {family.name})"
            )
    return options


def _run_model_name(run_dir: str) -> str:
    """The family name in a run directory's config.json (errors as :meth:`RunDir.open`)."""
    from .runs import RunDir

    return str(RunDir.open(run_dir).config()["model"])


def _open_run(run_dir: str, device: Any) -> tuple[Any, Any, Any, Any, Any, dict[str, Any]]:
    from vi_models._validation import resolve_device
    from vi_models.errors import RunDirectoryError, VIModelsError

    from .families import get_family
    from .runs import CONFIG, RunDir

    run = RunDir.open(run_dir)
    config = run.config()
    family = get_family(config["model"])
    dev = resolve_device(device or config.get("device", "cpu"))
    bundle = _load_bundle(config["data"], dev, config.get("data_options"))
    try:
        model, guide = family.build(dict(config["model_config"]), bundle, dev)
    except VIModelsError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a config.json edited by hand
        raise RunDirectoryError(
            f"expected the model_config in the {CONFIG} of {run_dir!r} to be one that `vi-models fit "
            f"{family.name}` wrote, got one it cannot build ({type(exc).__name__}: {exc}); restore the file "
            "or fit the run again"
        ) from None
    family.load_state(model, guide, run.checkpoint_path, dev)
    for module in (model, guide):
        if hasattr(module, "eval"):
            module.eval()
    return run, family, bundle, model, guide, config


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from .families import metrics_from_log_likelihood

    run, family, bundle, model, guide, config = _open_run(args.run_dir, args.device)
    if args.data is not None:
        other = _load_bundle(args.data, bundle.train.device)
        if tuple(other.data_shape) != tuple(bundle.data_shape):
            from vi_models.errors import DataError

            raise DataError(
                f"expected data of shape (N, {', '.join(map(str, bundle.data_shape))}) like the run's "
                f"training data, got {tuple(other.data_shape)} from {args.data!r}"
            )
        data = torch.cat([t for t in (other.train, other.test) if t is not None]) if os.path.exists(args.data) else other.test
        source = args.data
    else:
        data, source = bundle.test, f"{config['data']} (test split)"
    if args.max_test is not None:
        data = data[: args.max_test]
    estimator = family.estimator
    if args.estimator is not None:
        known = tuple(getattr(family, "estimators", (family.estimator,)))
        if args.estimator not in known:
            from vi_models.errors import ConfigError

            raise ConfigError(
                f"expected --estimator to be one of {', '.join(known)} for the {family.name} family, "
                f"got {args.estimator!r}"
            )
        estimator = args.estimator
    # only families with a choice of estimators receive the keyword
    options = {"estimator": estimator} if len(getattr(family, "estimators", ())) > 1 else {}
    started = time.perf_counter()
    torch.manual_seed(0)
    ll = family.log_likelihood(model, guide, data, config["model_config"], num_samples=args.num_samples, **options)
    metrics = metrics_from_log_likelihood(
        ll, bundle, discrete=family.is_discrete(model),
        estimator=f"{estimator}" + (f"-{args.num_samples}" if estimator in ("iwae",) else ""),
        num_samples=args.num_samples if estimator == "iwae" else None,
    )
    metrics.update(family.extra_metrics(model, guide, data, config["model_config"], num_samples=args.num_samples))
    if bundle.density is not None and args.data is None:
        # KL(p_data || model) = E_p[log p - log q] on the test samples, with the exact log p.
        true_ll = bundle.density.log_prob(data.reshape(data.shape[0], -1)).to(ll)
        metrics["test_kl_to_truth"] = float((true_ll - ll).mean())
        metrics["test_true_entropy"] = float(-true_ll.mean())
    if "test_elbo" in metrics:
        metrics["test_elbo_bits_per_dim"] = float(bundle.bits_per_dim(metrics["test_elbo"], discrete=family.is_discrete(model)))
        metrics["elbo_gap"] = metrics["test_log_likelihood"] - metrics["test_elbo"]
    metrics.update({"model": family.name, "data": source, "eval_seconds": time.perf_counter() - started})
    if args.data is None:
        # Per-observation values for `vi-models compare` (elpd differences need them, not means).
        run.save_array(LOG_LIKELIHOOD_FILE, ll.detach().double().cpu().numpy())
        run.write_json("metrics.json", metrics)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from inference.diagnostics.plots import plot_samples
    from inference.engine.checkpoint import atomic_write_bytes

    from .families import get_family

    # refuse options the family does not have before loading anything
    family_options = _family_options(
        get_family(_run_model_name(args.run_dir)), "sample_options",
        {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "clip_x0": args.clip_x0},
    )
    run, family, bundle, model, guide, config = _open_run(args.run_dir, args.device)
    out = Path(args.out) if args.out else run.path / "samples.png"
    if out.suffix.lower() not in (".png", ".npy"):
        from vi_models.errors import ConfigError

        raise ConfigError(f"expected --out to end in .png or .npy, got {str(out)!r}")
    torch.manual_seed(args.seed)
    options = {"mean": True, **family_options} if args.mean else family_options
    samples = family.sample(model, guide, args.num, config["model_config"], **options)
    if out.suffix.lower() == ".npy":
        import io

        buffer = io.BytesIO()
        np.save(buffer, samples.detach().cpu().numpy())
        atomic_write_bytes(out, buffer.getvalue())
    else:
        from .runs import RunDir

        figure = plot_samples(samples, image_shape=bundle.image_shape,
                              reference=bundle.train[:2000] if bundle.image_shape is None else None)
        RunDir(out.parent).save_figure(out.name, figure)
    print(f"wrote {args.num} samples to {out}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    import torch

    from inference.diagnostics.plots import plot_history, plot_khat

    run, family, bundle, model, guide, config = _open_run(args.run_dir, args.device)
    data = bundle.test[: args.max_test]
    summary: dict[str, Any] = {"model": family.name, "num_test": int(data.shape[0]), "num_samples": args.num_samples}
    history = run.read_json("history.json") if (run.path / "history.json").exists() else {}
    if history.get("loss"):
        run.save_figure("elbo_trace.png", plot_history(history, title=f"{family.name}: -ELBO per observation"))
    from inference.diagnostics.inference_data import model_family, to_inference_data
    from inference.diagnostics.psis import psis_khat

    kind = model_family(model, guide)
    if kind == "no_density":
        print(f"{family.name} gives samples but no density: no log-likelihood or variational approximation to diagnose")
        run.write_json("diagnostics.json", {**summary, "khat": None})
        return 0
    torch.manual_seed(0)
    # A DDPM's importance ratio spans the whole reverse chain (T network calls per draw): fewer draws.
    num_samples = min(args.num_samples, 100) if kind == "diffusion" else args.num_samples
    if kind == "density":
        print(f"{family.name} has no latent variables: its log-likelihood is exact, k-hat not needed")
    elif guide is not None or kind == "diffusion":
        report = psis_khat(model, guide, data, num_samples, seed=0)
        print(report)
        khat = np.atleast_1d(report.khat)
        summary.update(num_samples=num_samples, khat_max=float(khat.max()), khat_words=str(report),
                       khat_scope=report.scope, khat_bad=int((khat >= 0.7).sum()),
                       khat_ok=int(((khat >= 0.5) & (khat < 0.7)).sum()))
        run.save_figure("khat.png", plot_khat(khat))
    else:
        print("no guide: the latents are summed out exactly (log-likelihood exact, k-hat not needed)")
    idata = to_inference_data(model, guide, data, num_samples=None if kind == "diffusion" else min(args.num_samples, 200),
                              seed=0)
    path = run.path / "inference_data.nc"
    tmp = run.path / ".inference_data.nc.tmp"
    idata.to_netcdf(str(tmp))
    os.replace(tmp, path)
    summary["groups"] = list(idata.groups())
    if "posterior" in idata.groups():
        from inference.diagnostics.arviz_io import import_arviz

        print(import_arviz().summary(idata, kind="stats").to_string())
    run.write_json("diagnostics.json", summary)
    print(f"wrote {path} and diagnostics.json")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from inference.diagnostics.loo import compare
    from vi_models.errors import ConfigError, RunDirectoryError

    from .runs import RunDir

    if len(args.run_dirs) < 2:
        raise ConfigError(f"expected at least two run directories to compare, got {len(args.run_dirs)}")
    scores: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for run_dir in args.run_dirs:
        run = RunDir.open(run_dir)
        path = run.path / LOG_LIKELIHOOD_FILE
        if not path.exists():
            raise RunDirectoryError(
                f"expected {LOG_LIKELIHOOD_FILE} in {str(run.path)!r}, got none; run `vi-models evaluate {run_dir}` first"
            )
        name = run.path.name if run.path.name not in scores else str(run.path)
        scores[name] = np.load(path, allow_pickle=False)
        sources[name] = str(run.read_json("metrics.json").get("data", "?"))
    if len(set(sources.values())) > 1:
        raise ConfigError(
            "expected every run scored on the same test data, got "
            + ", ".join(f"{name}: {src}" for name, src in sources.items())
            + "; compare runs fitted to the same dataset"
        )
    table = compare(scores)
    print(table.to_string())
    if args.out is not None:
        from inference.engine.checkpoint import atomic_write_text

        atomic_write_text(args.out, table.to_csv())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vi-models`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from vi_models.errors import VIModelsError

    handlers = {"fit": cmd_fit, "evaluate": cmd_evaluate, "sample": cmd_sample, "diagnose": cmd_diagnose,
                "compare": cmd_compare}
    try:
        return handlers[args.command](args)
    except (VIModelsError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"vi-models: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vi-models: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
