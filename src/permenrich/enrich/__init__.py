"""Set statistics: the running-sum enrichment score, linear set statistics, overlaps."""

from .linear import SET_STATISTICS, LinearSetStatistic
from .overlap import OverlapCounter, leading_overlap_genes, overlap_counts, overlap_statistics
from .running_sum import RunningSumResult, running_sum, running_sum_dense

__all__ = ["SET_STATISTICS", "LinearSetStatistic", "OverlapCounter", "RunningSumResult", "leading_overlap_genes",
           "overlap_counts", "overlap_statistics", "running_sum", "running_sum_dense"]
