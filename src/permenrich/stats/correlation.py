"""Correlation with a continuous phenotype for batches of shuffled phenotypes.

Genes and phenotype are centred and scaled once (mid-ranks first for Spearman); the
correlation of a gene with a shuffled phenotype is then a dot product, summed over the
samples in their order by :func:`_shuffled_correlation` (compiled for the CPU and for
CUDA). A fixed order makes r independent of the batch shape, threads and device, which
a BLAS matrix product is not (its blocking follows the shapes).
"""

from __future__ import annotations

import numpy as np

from .metrics import mid_ranks


def _scipy_stats():  # noqa: ANN202
    """scipy.stats, imported on first use: it costs a third of a second at start-up and
    only some metrics need it (textbook p-values, mid-ranks)."""
    from scipy import stats

    return stats



def _shuffled_correlation(genes_by_sample, g, phenotype, shuffle):
    """r of gene ``g`` with the phenotype shuffled by ``shuffle``: the dot product of unit
    vectors, summed over samples in order (the CPU kernel runs the same sums)."""
    total = 0.0
    for j in range(shuffle.shape[0]):
        total += phenotype[shuffle[j]] * genes_by_sample[j, g]
    return total


#: Device-neutral functions; the GPU kernels compile the same list for CUDA.
SCALAR_FUNCTIONS = (_shuffled_correlation,)


class CorrelationStatistic:
    """Pearson/Spearman r of every gene with shuffled copies of a phenotype.

    Parameters
    ----------
    values : ndarray, shape (n_genes, n_samples)
    phenotype : ndarray, shape (n_samples,)
    spearman : bool
        Correlate mid-ranks instead of values.
    """

    def __init__(self, values: np.ndarray, phenotype: np.ndarray, *, spearman: bool) -> None:
        x = np.asarray(values, dtype=np.float64)
        y = np.asarray(phenotype, dtype=np.float64)
        if spearman:
            x = mid_ranks(x)
            y = _scipy_stats().rankdata(y)
        x = x - x.mean(axis=1, keepdims=True)
        norms = np.sqrt((x * x).sum(axis=1))
        y = y - y.mean()
        # Unit-norm genes: r is then a plain dot product. Samples-major, so that a sample's
        # values for consecutive genes are contiguous (CPU vector loads, coalesced on GPU).
        self.genes_by_sample = np.ascontiguousarray((x / norms[:, None]).T)
        self.phenotype = np.ascontiguousarray(y / np.sqrt(y @ y))

    @property
    def n_genes(self) -> int:
        return int(self.genes_by_sample.shape[1])
