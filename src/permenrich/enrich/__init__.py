"""Set statistics: the running-sum enrichment score and its leading edge."""

from .running_sum import RunningSumResult, running_sum, running_sum_dense

__all__ = ["RunningSumResult", "running_sum", "running_sum_dense"]
