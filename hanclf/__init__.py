"""hanclf: batch document classification with Hierarchical Attention Networks (Yang et al., 2016)."""

__version__ = "0.1.0"
