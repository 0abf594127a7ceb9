"""The metrics moved to :mod:`svrt.metrics` (the package's ground floor, so the runtime and the trainer import
them without standing on the benchmarks); this name is kept for scripts and results pages that import it."""

from svrt.metrics import *  # noqa: F401,F403
from svrt.metrics import __all__  # noqa: F401
