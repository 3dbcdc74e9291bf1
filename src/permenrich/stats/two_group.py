"""Two-group statistics of one labelling from class moments (device-neutral).

Written once as plain Python and compiled for the CPU (:mod:`permenrich.backends.cpu`)
and for CUDA (``kernels/``) by :func:`permenrich._compile.jit_family`.
"""

from __future__ import annotations

from .metrics import SCALAR_FUNCTIONS as METRIC_FUNCTIONS
from .metrics import _metric_from_moments  # noqa: F401  (bound by jit_family)


def _gene_statistics(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                     n_samples, drawn, drawn_is_case, metric, sum_drawn, sumsq_drawn, stat):
    """Statistic of every gene for one labelling given by the drawn class's positions."""
    n_genes = samples_by_gene.shape[1]
    n_drawn = drawn.shape[0]
    n_other = n_samples - n_drawn
    sum_drawn[:] = 0.0
    sumsq_drawn[:] = 0.0
    for j in range(n_drawn):
        row = samples_by_gene[drawn[j]]
        row_sq = squares_by_gene[drawn[j]]
        for g in range(n_genes):
            sum_drawn[g] += row[g]
            sumsq_drawn[g] += row_sq[g]
    inv_drawn = 1.0 / n_drawn
    inv_other = 1.0 / n_other
    for g in range(n_genes):
        # Moments of the gene-centred data; the mean is added back for metrics that use it.
        mean_d = sum_drawn[g] * inv_drawn
        var_d = (sumsq_drawn[g] - n_drawn * mean_d * mean_d) / (n_drawn - 1)
        sum_o = total_sum[g] - sum_drawn[g]
        mean_o = sum_o * inv_other
        var_o = (total_sumsq[g] - sumsq_drawn[g] - n_other * mean_o * mean_o) / (n_other - 1)
        mean_d += gene_mean[g]
        mean_o += gene_mean[g]
        if drawn_is_case:
            stat[g] = metric_from_moments(metric, mean_d, var_d, n_drawn, mean_o, var_o, n_other)
        else:
            stat[g] = metric_from_moments(metric, mean_o, var_o, n_other, mean_d, var_d, n_drawn)


#: With the metric functions they call; compile together.
SCALAR_FUNCTIONS = (*METRIC_FUNCTIONS, _gene_statistics)
