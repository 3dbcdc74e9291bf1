"""Correlation with a continuous phenotype for batches of shuffled phenotypes.

Genes and phenotype are centred and scaled once (mid-ranks first for Spearman); the
correlations of all genes with a batch of shuffled phenotypes are then one matrix
product, written against the array module ``xp`` so that CPU (BLAS) and GPU (cuBLAS)
share it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from .metrics import mid_ranks


class CorrelationStatistic:
    """Pearson/Spearman r of every gene with shuffled copies of a phenotype.

    Parameters
    ----------
    values : ndarray, shape (n_genes, n_samples)
    phenotype : ndarray, shape (n_samples,)
    spearman : bool
        Correlate mid-ranks instead of values.
    xp : module
        NumPy or CuPy.
    """

    def __init__(self, values: np.ndarray, phenotype: np.ndarray, *, spearman: bool, xp: Any = np) -> None:
        x = np.asarray(values, dtype=np.float64)
        y = np.asarray(phenotype, dtype=np.float64)
        if spearman:
            x = mid_ranks(x)
            y = scipy_stats.rankdata(y)
        x = x - x.mean(axis=1, keepdims=True)
        norms = np.sqrt((x * x).sum(axis=1))
        y = y - y.mean()
        # Unit-norm rows: r is then a plain dot product.
        self.genes = xp.asarray(np.ascontiguousarray(x / norms[:, None]))
        self.phenotype = xp.asarray(y / np.sqrt(y @ y))
        self.xp = xp

    def batch(self, shuffles: Any) -> Any:
        """r of every gene for each shuffle (row: source sample of each sample),
        shape (n_batch, n_genes)."""
        xp = self.xp
        shuffled = self.phenotype[xp.asarray(shuffles)]
        return shuffled @ self.genes.T
