"""The comparison table of issue 5: every density family against the peers, from one script.

Datasets and figures (the issue's conventions):

* **2-D densities** (8gaussians, moons, swissroll, pinwheel, 2spirals, checkerboard): 10k
  training draws and 100k fresh test draws from ``load_dataset(name)``; the figure is
  ``KL(p || q) = E_p[log p(x) - log q(x)]`` in nats on the test draws, with ``log p`` the
  dataset's exact ``density.log_prob`` and its standard error. The DDPM's ODE likelihood costs
  hundreds of network passes per point, so it is scored on the first ``DDPM_TEST`` test draws
  (the standard error says how much that costs in precision).
* **digits** (1437 train / 360 test images, 17 levels): held-out bits/dim by
  ``load_dataset("digits").bits_per_dim(ll, discrete=...)``: discrete models of the levels
  exactly, continuous densities on the dequantised pixels by the dequantisation bound.

Families (ours): VAE (IWAE estimate), Gaussian mixture (``fit_em``; and ``gmm-avg``, the
average of 10 EM runs by ``fit_em_average``), KDE (leave-one-out CV bandwidth), normalizing flow (rational-quadratic spline coupling), MADE (Gaussian-mixture
conditionals on the toys; on digits an ensemble of categorical MADEs over 4 orderings, each
fitted separately), DDPM (probability-flow ODE on the toys, L_VLB bound on digits), GAN
(samples only: no density). Peers: scikit-learn KernelDensity (bandwidth by 5-fold
cross-validation), scikit-learn GaussianMixture (K by held-out likelihood on the toys,
40 diagonal components on digits), PCA(40).score and a numpy EM mixture of 10 categoricals
(digits). Every neural fit runs through ``inference.fit`` (``fit_adversarial`` for the GAN)
for a fixed wall-clock budget with a cosine learning-rate decay over that budget; fit time
and the time to draw 10 000 samples are reported.

Results are cached row by row in ``benchmarks/results/density_table.json`` (read-modify-write
under a file lock, so several processes can fill different datasets); a rerun skips rows
already there unless ``--force``.

    .venv/bin/python benchmarks/bench_density_table.py                         # everything
    .venv/bin/python benchmarks/bench_density_table.py --datasets moons,digits  # a subset
    .venv/bin/python benchmarks/bench_density_table.py --table                  # print the cached table
    BENCH_QUICK=1 .venv/bin/python benchmarks/bench_density_table.py --out /tmp/t.json  # smoke test

Layout (scripts on ``sys.path``, not an installed package): this file is the runner (flags, the loop, the
cache, the printed table); ``density_table/`` holds the settings and scoring helpers (``base.py``), one spec
module per family group (``specs_flows.py``, ``specs_made.py``, ``specs_kde.py``, ``specs_mixtures.py``,
``specs_vae.py``, ``specs_gan.py``, ``specs_ddpm.py``, ``specs_peers.py``), the registry and run order
(``specs.py``) and the cache, verdicts and markdown (``report.py``); helpers shared with the other benchmark
scripts are in ``_common.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import QUICK, machine
from density_table.base import DATASETS, DEFAULT_OUT, DIGITS_GOAL, FLOW_GOALS, OURS, TOYS, Context
from density_table.report import locked, markdown, summarize
from density_table.specs import ORDER_DIGITS, ORDER_TOY, RUNNERS


def _machine() -> dict[str, Any]:
    import sklearn

    return machine(sklearn=sklearn.__version__, load_average=os.getloadavg()[0], quick=QUICK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ", ".join(DATASETS))
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ", ".join(RUNNERS))
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON cache (default benchmarks/results/density_table.json)")
    parser.add_argument("--force", action="store_true", help="recompute rows already in the cache")
    parser.add_argument("--table", action="store_true", help="only print the cached table")
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.set_num_threads(1)
    names = [n for n in args.datasets.split(",") if n]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"expected datasets among {', '.join(DATASETS)}, got {', '.join(unknown)}")
    if not args.table:
        # Model-major: the flows of every dataset first (the goals hang on them), then the peers, ...
        contexts: dict[str, Context] = {}
        for m in dict.fromkeys(ORDER_TOY + ORDER_DIGITS):
            if args.models is not None and m not in args.models.split(","):
                continue
            for name in names:
                if m not in (ORDER_TOY if name in TOYS else ORDER_DIGITS):
                    continue
                with locked(out) as table:
                    if not args.force and f"{name}/{m}" in table["rows"]:
                        continue
                if name not in contexts:
                    contexts[name] = Context(name)
                ctx = contexts[name]
                print(f"[{time.strftime('%H:%M:%S')}] {name} / {m} ...", flush=True)
                try:
                    row = RUNNERS[m](ctx)
                except Exception as exc:  # noqa: BLE001 - a failed row is reported, the others still run
                    print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
                    continue
                row.update(dataset=name, model=m, ours=m in OURS, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), **_machine())
                print(f"  {row['label']}: {row['value']} (fit {row['fit_s']:.0f} s)", flush=True)
                with locked(out) as table:
                    table["rows"][f"{name}/{m}"] = row
                    table["summary"] = summarize(table["rows"])
                    table["goals"] = {"flow_kl": FLOW_GOALS, "digits_bits_per_dim": DIGITS_GOAL}
    with locked(out) as table:
        if not args.table and table["rows"]:
            table["summary"] = summarize(table["rows"])  # the current verdict rules, also when every row was cached
        print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
