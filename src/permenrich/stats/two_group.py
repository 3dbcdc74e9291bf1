"""Two-group statistics of one labelling from class moments (device-neutral).

Written once as plain Python and compiled for the CPU (:mod:`permenrich.backends.cpu`)
and for CUDA (``kernels/``) by :func:`permenrich._compile.jit_family`.
"""

from __future__ import annotations

from .metrics import SCALAR_FUNCTIONS as METRIC_FUNCTIONS
from .metrics import _metric_from_moments  # noqa: F401  (bound by jit_family)


def _statistic_from_sums(sum_drawn, sumsq_drawn, total_sum, total_sumsq, gene_mean, n_samples, n_drawn,
                         drawn_is_case, metric):
    """One gene's statistic from the drawn class's sums of the gene-centred values and of
    their squares (the other class is total minus drawn)."""
    n_other = n_samples - n_drawn
    # Moments of the gene-centred data; the mean is added back for metrics that use it.
    mean_d = sum_drawn * (1.0 / n_drawn)
    var_d = (sumsq_drawn - n_drawn * mean_d * mean_d) / (n_drawn - 1)
    mean_o = (total_sum - sum_drawn) * (1.0 / n_other)
    var_o = (total_sumsq - sumsq_drawn - n_other * mean_o * mean_o) / (n_other - 1)
    mean_d += gene_mean
    mean_o += gene_mean
    if drawn_is_case:
        return _metric_from_moments(metric, mean_d, var_d, n_drawn, mean_o, var_o, n_other)
    return _metric_from_moments(metric, mean_o, var_o, n_other, mean_d, var_d, n_drawn)


def _gene_statistics(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                     n_samples, drawn, drawn_is_case, metric, sum_drawn, sumsq_drawn, stat):
    """Statistic of every gene for one labelling given by the drawn class's positions.

    Sums run over the drawn samples in their (sorted) order, vectorised over genes; a
    GPU thread per (labelling, gene) adds the same values in the same order, so both
    targets give identical float64 results.
    """
    n_genes = samples_by_gene.shape[1]
    n_drawn = drawn.shape[0]
    for g in range(n_genes):
        sum_drawn[g] = 0.0
        sumsq_drawn[g] = 0.0
    for j in range(n_drawn):
        row = samples_by_gene[drawn[j]]
        row_sq = squares_by_gene[drawn[j]]
        for g in range(n_genes):
            sum_drawn[g] += row[g]
            sumsq_drawn[g] += row_sq[g]
    for g in range(n_genes):
        stat[g] = _statistic_from_sums(sum_drawn[g], sumsq_drawn[g], total_sum[g], total_sumsq[g], gene_mean[g],
                                       n_samples, n_drawn, drawn_is_case, metric)


#: With the metric functions they call; compile together.
SCALAR_FUNCTIONS = (*METRIC_FUNCTIONS, _statistic_from_sums, _gene_statistics)
