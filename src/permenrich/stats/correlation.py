"""Correlation with a continuous phenotype for batches of shuffled phenotypes.

Genes and phenotype are centred once (mid-ranks first for Spearman); the correlation of
a gene with a shuffled phenotype is then a dot product, summed over the samples in their
order by :func:`_shuffled_correlation` (compiled for the CPU and for CUDA). A fixed order
makes r independent of the batch shape, threads and device, which a BLAS matrix product
is not (its blocking follows the shapes).

Pearson's vectors are scaled to unit length before the products. Spearman's are not:
centred mid-ranks are multiples of 1/2, so their products and sums are exact and r is
the exact dot product times one per-gene scale (:attr:`CorrelationStatistic.gene_scale`),
applied after the sums. Correlations equal in exact arithmetic (frequent with few
samples) then have the same bits, whichever order the shuffle adds the samples in, among
genes with the same scale (the same ties: all genes without ties share one), and such
genes keep their row order in a ranked list instead of an order set by rounding.
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
    """The dot product of gene ``g`` with the phenotype shuffled by ``shuffle``, summed
    over samples in order (the CPU kernel runs the same sums): r for unit vectors
    (Pearson), r / gene_scale[g] for Spearman's centred mid-ranks."""
    total = 0.0
    for j in range(shuffle.shape[0]):
        total += phenotype[shuffle[j]] * genes_by_sample[j, g]
    return total


def _two_valued_correlation(genes_by_sample, g, phenotype, shuffle, picked, step, other, gene_total):
    """:func:`_shuffled_correlation` of a phenotype with two values (a 0/1 label): with
    ``picked`` the value of the smaller class, ``step = picked - other`` and ``gene_total``
    the gene's sum over all samples in order, r = step * S + other * gene_total, where S
    adds, in sample order, the gene's values at the samples the shuffle gives ``picked``:
    the smaller class's values only, not a product per sample. Equal to
    :func:`_shuffled_correlation` up to rounding; the CPU kernel runs these sums."""
    total = 0.0
    for j in range(shuffle.shape[0]):
        if phenotype[shuffle[j]] == picked:
            total += genes_by_sample[j, g]
    return step * total + other * gene_total


#: Device-neutral functions; the GPU kernels compile the same list for CUDA.
SCALAR_FUNCTIONS = (_shuffled_correlation, _two_valued_correlation)


def centred(values: np.ndarray) -> np.ndarray:
    """Values minus their mean along the last axis, twice: the rounding of the first mean
    leaves a constant residue, as large as the variation of a nearly constant gene or
    phenotype (a gene at 0.1 plus a few units in the last place: r 0.466 for 0.494);
    the second pass removes it. Exact values (Spearman's mid-ranks) are left as one pass
    leaves them."""
    once = values - values.mean(axis=-1, keepdims=True)
    return once - once.mean(axis=-1, keepdims=True)


class CorrelationStatistic:
    """Pearson/Spearman r of every gene with shuffled copies of a phenotype.

    Parameters
    ----------
    values : ndarray, shape (n_genes, n_samples)
    phenotype : ndarray, shape (n_samples,)
    spearman : bool
        Correlate mid-ranks instead of values.

    Attributes
    ----------
    gene_scale : ndarray or None
        For Spearman, the factor each gene's sums are multiplied by to give r (the sums
        are exact; see the module docstring); None for Pearson, whose sums are r.
    """

    def __init__(self, values: np.ndarray, phenotype: np.ndarray, *, spearman: bool) -> None:
        x = np.asarray(values, dtype=np.float64)
        y = np.asarray(phenotype, dtype=np.float64)
        if spearman:
            x = mid_ranks(x)
            y = _scipy_stats().rankdata(y)
        x, y = centred(x), centred(y)
        norms = np.sqrt((x * x).sum(axis=1))
        self.gene_scale: np.ndarray | None = None
        if spearman:
            # Exact: mid-ranks, their mean (n + 1)/2 and the differences are multiples of
            # 1/2, so every product and sum below is exact and one rounding scales it.
            self.gene_scale = 1.0 / (norms * np.sqrt(y @ y))
        else:
            # Unit-norm vectors: r is then a plain dot product.
            x = x / norms[:, None]
            y = y / np.sqrt(y @ y)
        # Samples-major, so that a sample's values for consecutive genes are contiguous
        # (CPU vector loads, coalesced on GPU).
        self.genes_by_sample = np.ascontiguousarray(x.T)
        self.phenotype = np.ascontiguousarray(y)
        # A phenotype of two values (a 0/1 label: fgseaLabel's design) correlates through
        # its smaller class's sums (:func:`_two_valued_correlation`), half the work or less.
        values, counts = np.unique(self.phenotype, return_counts=True)
        self.two_valued = values.size == 2
        if self.two_valued:
            smaller = int(np.argmin(counts)) if counts[0] != counts[1] else 1
            self.picked, self.other = float(values[smaller]), float(values[1 - smaller])
            self.step = self.picked - self.other
            totals = np.zeros(self.genes_by_sample.shape[1])
            for row in self.genes_by_sample:  # sample order, one rounding per addition
                totals = totals + row
            self.gene_totals = totals

    @property
    def n_genes(self) -> int:
        return int(self.genes_by_sample.shape[1])
