"""Per-gene statistics and ranking."""

from .metrics import METRIC_CODES, MetricName, metric_code, metric_reference
from .ranking import rank_genes, ranking_reference

__all__ = ["METRIC_CODES", "MetricName", "metric_code", "metric_reference", "rank_genes", "ranking_reference"]
