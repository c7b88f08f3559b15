"""Optimizer experiments: ``compare`` (one classifier per optimizer) and ``landscape`` (2-D paths).

    from momenta.compare import compare, landscape
    result = compare()                                   # the classic iris setup, seed's five
    result = compare(["adam", "torch:Adam"], epochs=50, out="runs/adam")
    result.results["adam"].runs[0].test_acc              # per-epoch curves, status, timings
    paths = landscape("rosenbrock", ["sgdm", "adam"], out="runs/rosenbrock", gif=True)

The command line (``momenta compare`` / ``momenta landscape``, ``momenta/cli.py``) calls these.
"""

from momenta.compare.errors import DataError, OutputError, UsageError
from momenta.compare.experiment import (
    CompareConfig,
    CompareResult,
    OptimizerResult,
    Run,
    compare,
)
from momenta.compare.landscape import (
    FUNCTIONS,
    LandscapeConfig,
    LandscapeResult,
    TestFunction,
    Trajectory,
    landscape,
)

__all__ = [
    "FUNCTIONS",
    "CompareConfig",
    "CompareResult",
    "DataError",
    "LandscapeConfig",
    "LandscapeResult",
    "OptimizerResult",
    "OutputError",
    "Run",
    "TestFunction",
    "Trajectory",
    "UsageError",
    "compare",
    "landscape",
]
