"""Set statistics that are linear in the gene scores: ``mean`` and ``maxmean``.

For a set S of k genes with scores z:

* ``mean``: (1/k) sum_{g in S} z_g;
* ``maxmean`` (Efron & Tibshirani 2007, GSA): with s+ = (1/k) sum max(z_g, 0) and
  s- = (1/k) sum max(-z_g, 0), the statistic is s+ if s+ > s- else -s-. "s+ > s-" means
  by more than a relative 1e-12 (:data:`~permenrich.enrich.running_sum.MAXMEAN_TIE`), so
  that parts equal in exact arithmetic give -s- whatever the rounding of their sums.

Both need finite gene scores: an infinite one (possible for Student's and Welch's t) is
refused with an error rather than averaged.

Both are sparse matrix products of the (n_sets x n_genes) membership matrix with a batch
of score vectors, written once against the array module ``xp`` and its sparse module
(SciPy or CuPy), so CPU and GPU share this code.

References
----------
Efron B, Tibshirani R (2007) On testing the significance of sets of genes. Ann Appl Stat 1:107-129.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import InputError
from .running_sum import MAXMEAN_TIE

SetStatisticName = Literal["ks", "mean", "maxmean"]
SET_STATISTICS = ("ks", "mean", "maxmean")


class LinearSetStatistic:
    """``mean`` or ``maxmean`` of every set for batches of gene scores.

    Parameters
    ----------
    kind
        ``"mean"`` or ``"maxmean"``.
    set_members, set_offsets
        The flat set index (members are gene indices).
    n_genes
        Number of genes (columns of the score batches).
    xp, sparse
        Array module and its sparse module (``numpy``/``scipy.sparse`` or
        ``cupy``/``cupyx.scipy.sparse``).
    """

    def __init__(self, kind: str, set_members: np.ndarray, set_offsets: np.ndarray, n_genes: int,
                 xp: Any = np, sparse: Any = None) -> None:
        import scipy.sparse

        self.kind = kind
        sizes = np.diff(set_offsets)
        rows = np.repeat(np.arange(sizes.size), sizes)
        data = np.repeat(1.0 / sizes, sizes)
        averaging = scipy.sparse.csr_matrix((data, (rows, np.asarray(set_members))), shape=(sizes.size, n_genes))
        # Built on the host; a device sparse module (cupyx) copies it over once.
        self.averaging = averaging if sparse is None or sparse is scipy.sparse else sparse.csr_matrix(averaging)
        self.xp = xp

    def scores(self, gene_scores: Any) -> Any:
        """Set statistics, shape (n_batch, n_sets), from gene scores (n_batch, n_genes).

        Raises
        ------
        InputError
            A gene score is infinite: a mean has no finite value then (and +inf with
            -inf none at all), unlike the running sum, which has a limit.
        """
        xp = self.xp
        if not bool(xp.isfinite(gene_scores).all()):
            raise InputError(f"set statistic {self.kind!r} needs finite gene statistics, but a permutation gave "
                             "an infinite one (Student's or Welch's t of a gene constant within both classes); "
                             "use the running-sum statistic ks, or a metric with a variance floor "
                             "(signal_to_noise, t_test) or mann_whitney")
        if self.kind == "mean":
            return xp.ascontiguousarray((self.averaging @ gene_scores.T).T)
        positive = (self.averaging @ xp.maximum(gene_scores, 0.0).T).T
        negative = (self.averaging @ xp.maximum(-gene_scores, 0.0).T).T
        wins = positive - negative > MAXMEAN_TIE * xp.maximum(positive, negative)
        return xp.ascontiguousarray(xp.where(wins, positive, -negative))


def linear_set_statistic_reference(kind: str, gene_scores: np.ndarray, members: np.ndarray) -> float:
    """One set's ``mean``/``maxmean`` from its members' scores (plain NumPy, for tests)."""
    z = np.asarray(gene_scores, dtype=np.float64)[members]
    if kind == "mean":
        return float(z.mean())
    positive, negative = np.maximum(z, 0).mean(), np.maximum(-z, 0).mean()
    return float(positive if positive - negative > MAXMEAN_TIE * max(positive, negative) else -negative)
