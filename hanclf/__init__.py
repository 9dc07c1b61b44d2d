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

# The library's functions, imported on first use: `import hanclf` stays instant (`hanclf --help`
# and --version never wait for torch), and only `train` pulls in Lightning.
_EXPORTS = {
    "Predictor": "hanclf.predictor",
    "predict_file": "hanclf.predict",
    "explain_file": "hanclf.explain",
    "evaluate_file": "hanclf.evaluate",
    "load_config": "hanclf.config",
    "train": "hanclf.training",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hanclf' has no attribute {name!r}")


__all__ = [*_EXPORTS, "__version__"]
