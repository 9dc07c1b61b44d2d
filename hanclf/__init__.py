"""hanclf: batch document classification with Hierarchical Attention Networks (Yang et al., 2016)."""

import os

# PyTorch's OpenMP threads spin while waiting. HAN's many small GRU steps wait often, and when
# another process shares the cores (two jobs, a test runner) the spinning threads starve each
# other: 14-375 docs/s instead of ~900 measured on 2 cores. Passive waiting is the safe
# default, not the fastest: on an otherwise idle 2-core machine spinning predicted 10,000 IMDb
# reviews in 11.6 s instead of 16.3 s, and with one busy process beside it in 28.7 s instead of
# 16.5 s. Set before torch is imported; a user's own setting (OMP_WAIT_POLICY=ACTIVE) wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from hanclf import Predictor` without importing torch for `hanclf --help` and --version.
    if name == "Predictor":
        from hanclf.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'hanclf' has no attribute {name!r}")


__all__ = ["Predictor", "__version__"]
