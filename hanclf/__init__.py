"""hanclf: batch document classification with Hierarchical Attention Networks (Yang et al., 2016)."""

import os

# PyTorch's OpenMP threads spin while waiting. HAN's many small GRU steps wait often, and when
# another process shares the cores (two jobs, a test runner) the spinning threads starve each
# other: 14-375 docs/s instead of ~900 measured on 2 cores. Passive waiting costs ~5% when the
# machine is idle. Set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
