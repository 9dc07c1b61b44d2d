"""hanclf: batch document classification with Hierarchical Attention Networks (Yang et al., 2016)."""

import os

# PyTorch's OpenMP threads spin while waiting. HAN's many small GRU steps wait often, and when
# another process shares the cores (two jobs, a test runner) the spinning threads starve each
# other: 14-375 docs/s instead of ~900 measured on 2 cores. Passive waiting costs ~5% when the
# machine is idle. Set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from hanclf import Predictor` without importing torch for `hanclf --help` and --version.
    if name == "Predictor":
        from hanclf.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'hanclf' has no attribute {name!r}")


__all__ = ["Predictor", "__version__"]
