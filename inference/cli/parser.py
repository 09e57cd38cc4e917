"""The argument parser of ``vi-models``: one sub-parser per command and model family.

``fit`` has one sub-parser per family of :mod:`.families` (the options every family shares,
then the family's own, added by ``family.add_arguments``); ``evaluate``, ``sample``,
``diagnose`` and ``compare`` take run directories. The commands themselves live in
:mod:`.commands`.
"""

from __future__ import annotations

import argparse

__all__ = ["build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vi-models`` (one sub-parser per command and model family)."""
    from .families import FAMILIES

    parser = argparse.ArgumentParser(
        prog="vi-models",
        description="Fit deep generative models by variational inference, evaluate held-out "
        "likelihoods and draw samples.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    fit_parser = commands.add_parser("fit", help="fit a model and write a run directory")
    models = fit_parser.add_subparsers(dest="model", metavar="MODEL")
    models.required = True
    for name, family in sorted(FAMILIES.items()):
        sub = models.add_parser(name, help=family.help, description=family.help)
        sub.add_argument("--data", default="digits",
                         help="bundled dataset name (digits, digits-binary, moons, ...) or a file "
                              "(.npy, .npz, .csv, IDX); default digits")
        sub.add_argument("--out", required=True, help="run directory to create")
        sub.add_argument("--epochs", type=_positive_int, default=100, help="training epochs (default 100)")
        sub.add_argument("--batch-size", type=_positive_int, default=128, help="minibatch size (default 128)")
        sub.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default 1e-3)")
        sub.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
        sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        sub.add_argument("--resume", action="store_true", help="continue the run in --out up to --epochs")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
        sub.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        sub.add_argument("--validation-fraction", type=float, default=0.1,
                         help="share of the training split held out to monitor overfitting (default 0.1; 0: none)")
        sub.add_argument("--early-stopping", type=int, default=20,
                         help="stop after this many epochs without a better validation loss, keeping the best "
                              "epoch's weights (default 20; 0: never)")
        family.add_arguments(sub)

    ev = commands.add_parser("evaluate", help="held-out log-likelihood and bits/dim of a run")
    ev.add_argument("run_dir", help="a directory written by `vi-models fit`")
    ev.add_argument("--data", default=None,
                    help="score every row of this file (or bundled dataset's test split) instead of "
                         "the run's test split")
    ev.add_argument("--num-samples", type=_positive_int, default=1000,
                    help="importance samples per observation for bounds (default 1000)")
    ev.add_argument("--max-test", type=_positive_int, default=None,
                    help="score only the first N test rows (the 2-D densities have 100k)")
    ev.add_argument("--estimator", default=None,
                    help="log-likelihood estimator of the family (ddpm: ode, the default, or vlb); "
                         "default: the family's own")
    ev.add_argument("--device", default=None, help="device to evaluate on (default: the run's)")

    sm = commands.add_parser("sample", help="draw samples from a fitted run")
    sm.add_argument("run_dir", help="a directory written by `vi-models fit`")
    sm.add_argument("-n", "--num", type=_positive_int, default=64, help="number of samples (default 64)")
    sm.add_argument("--out", default=None, help="output file: .png (grid or scatter) or .npy (array); "
                                                "default RUN_DIR/samples.png")
    sm.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sm.add_argument("--mean", action="store_true", help="decoder means instead of noisy samples")
    sm.add_argument("--sampler", default=None,
                    help="sampler of the family (ddpm: ancestral, the default, or ddim)")
    sm.add_argument("--steps", type=_positive_int, default=None,
                    help="sampler steps (ddpm: DDIM steps S, 2 <= S <= T; implies --sampler ddim)")
    sm.add_argument("--eta", type=float, default=None,
                    help="DDIM stochasticity (ddpm: 0 deterministic, the default; 1 DDPM-like)")
    sm.add_argument("--clip-x0", type=_positive_float, default=None,
                    help="ddpm with ddim: clamp the standardised x_0 prediction to [-C, C] (diffusers' clip_sample)")
    sm.add_argument("--device", default=None, help="device (default: the run's)")
    cp = commands.add_parser(
        "compare",
        help="rank evaluated runs by held-out expected log predictive density (az.compare)",
        description="Rank runs scored by `vi-models evaluate` on the same test data by their elpd "
        "(the sum of per-observation held-out log-likelihoods), with standard errors of the "
        "differences and stacking weights, through inference.compare.",
    )
    cp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more evaluated run directories")
    cp.add_argument("--out", default=None, help="also write the table to this .csv file")
    dg = commands.add_parser("diagnose", help="ArviZ diagnostics of a run: k-hat, InferenceData file, plots")
    dg.add_argument("run_dir", help="a directory written by `vi-models fit`")
    dg.add_argument("--num-samples", type=_positive_int, default=500,
                    help="draws from the guide for k-hat and the InferenceData (default 500)")
    dg.add_argument("--max-test", type=_positive_int, default=200,
                    help="test observations to diagnose (default 200)")
    dg.add_argument("--device", default=None, help="device (default: the run's)")
    return parser
