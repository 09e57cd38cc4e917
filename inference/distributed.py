"""``inference.distributed``: the engine's data parallelism under ``torchrun`` (see :mod:`inference.engine.distributed`).

``inference.distributed.init()`` joins the process group torchrun describes; :func:`inference.fit`,
:func:`inference.fit_em` and :func:`inference.fit_diffusion` call it themselves.
"""

from inference.engine.distributed import *  # noqa: F403
from inference.engine.distributed import __all__  # noqa: F401
