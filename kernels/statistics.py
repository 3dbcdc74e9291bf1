"""Per-gene two-group statistics on the device: one thread per (labelling, gene).

Consecutive threads take consecutive genes, so the reads of a sample row are coalesced;
each thread adds the drawn samples in their sorted order, as the CPU does.
"""

from __future__ import annotations

from numba import cuda

from .device import statistic_from_sums


@cuda.jit
def two_group_kernel(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq, drawn_positions,
                     drawn_is_case, metric, out):
    """``out[b, g]``: statistic of gene g under labelling b (rows of ``drawn_positions``)."""
    g, b = cuda.grid(2)
    n_samples, n_genes = samples_by_gene.shape
    if g >= n_genes or b >= drawn_positions.shape[0]:
        return
    n_drawn = drawn_positions.shape[1]
    total = 0.0
    total_sq = 0.0
    for j in range(n_drawn):
        sample = drawn_positions[b, j]
        total += samples_by_gene[sample, g]
        total_sq += squares_by_gene[sample, g]
    out[b, g] = statistic_from_sums(total, total_sq, total_sum[g], total_sumsq[g], gene_mean[g], n_samples,
                                    n_drawn, drawn_is_case, metric)
