"""Every row of the table: the model name -> its spec (``run_<model>(ctx) -> row``), and the run order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from density_table.base import PEERS_DIGITS, PEERS_TOY, Context
from density_table.specs_ddpm import run_ddpm
from density_table.specs_flows import run_flow, run_flow_mixture
from density_table.specs_gan import run_gan
from density_table.specs_kde import run_kde
from density_table.specs_made import run_made
from density_table.specs_mixtures import run_gmm, run_gmm_average
from density_table.specs_peers import run_em_categorical, run_sklearn_gmm, run_sklearn_kde, run_sklearn_pca
from density_table.specs_vae import run_vae

RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "flow": run_flow, "flow-mixture": run_flow_mixture, "made": run_made, "kde": run_kde, "gmm": run_gmm, "gmm-avg": run_gmm_average, "vae": run_vae, "ddpm": run_ddpm,
    "gan": run_gan, "sklearn-kde": run_sklearn_kde, "sklearn-gmm": run_sklearn_gmm, "sklearn-pca": run_sklearn_pca,
    "em-categorical": run_em_categorical,
}
#: Order of the runs per dataset: the flow and the peers first (the goals need them), the rest after.
ORDER_TOY = ("flow", "flow-mixture", *PEERS_TOY, "kde", "gmm", "gmm-avg", "made", "vae", "gan", "ddpm")
ORDER_DIGITS = ("made", *PEERS_DIGITS, "gmm", "gmm-avg", "kde", "flow", "vae", "gan", "ddpm")
