"""Set statistics that are linear in the gene scores: ``mean`` and ``maxmean``.

For a set S of k genes with scores z:

* ``mean``: (1/k) sum_{g in S} z_g;
* ``maxmean`` (Efron & Tibshirani 2007, GSA): with s+ = (1/k) sum max(z_g, 0) and
  s- = (1/k) sum max(-z_g, 0), the statistic is s+ if s+ > s- else -s-. "s+ > s-" means
  by more than a relative 1e-12 (:data:`~permenrich.enrich.running_sum.MAXMEAN_TIE`), so
  that parts equal in exact arithmetic give -s- whatever the rounding of their sums.

Both need finite gene scores: an infinite one (possible for Student's and Welch's t) is
refused with an error rather than averaged.

Both are sums over each set's members in the order of the flat set index, each term
(1/k) * z rounded and added to a running total starting at zero:
:func:`_linear_set_score` is the one definition, compiled for the CPU (one thread per
chunk of permutations) and as a CUDA device function (one thread per set and
permutation), so the two backends give the same bits. (Sparse matrix products, as
before, left the order to cuSPARSE on the GPU, whose sums differed from SciPy's in the
last bits on an H200.)

References
----------
Efron B, Tibshirani R (2007) On testing the significance of sets of genes. Ann Appl Stat 1:107-129.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from .running_sum import MAXMEAN_TIE

SetStatisticName = Literal["ks", "mean", "maxmean"]
SET_STATISTICS = ("ks", "mean", "maxmean")


def _linear_set_score(gene_scores, b, set_members, start, stop, maxmean):
    """``mean`` (``maxmean`` False) or ``maxmean`` of the set whose members are
    ``set_members[start:stop]``, under row ``b`` of ``gene_scores``."""
    inv_k = 1.0 / (stop - start)
    if not maxmean:
        total = 0.0
        for i in range(start, stop):
            total += inv_k * gene_scores[b, set_members[i]]
        return total
    positive = 0.0
    negative = 0.0
    for i in range(start, stop):
        z = gene_scores[b, set_members[i]]
        # Select rather than max(): max(z, 0.0) keeps a -0.0, whose sign no sum needs.
        positive += inv_k * (z if z > 0.0 else 0.0)
        negative += inv_k * (-z if z < 0.0 else 0.0)
    return positive if positive - negative > MAXMEAN_TIE * max(positive, negative) else -negative


#: The device-neutral functions of this module (compiled for the CPU and for CUDA).
SCALAR_FUNCTIONS = (_linear_set_score,)


class LinearSetStatistic:
    """``mean`` or ``maxmean`` of every set for batches of gene scores.

    Parameters
    ----------
    kind
        ``"mean"`` or ``"maxmean"``.
    set_members, set_offsets
        The flat set index (members are gene indices), as arrays of the backend
        (host arrays on the CPU, device arrays on the GPU).
    xp
        The array module of the gene scores (``numpy`` or ``cupy``).
    launch
        ``launch(gene_scores, set_members, set_offsets, maxmean)`` -> scores
        (n_batch, n_sets): the backend's driver of :func:`_linear_set_score`.
    """

    def __init__(self, kind: str, set_members: Any, set_offsets: Any, xp: Any,
                 launch: Callable[[Any, Any, Any, bool], Any]) -> None:
        self.kind = kind
        self.n_sets = int(set_offsets.shape[0]) - 1
        self.set_members = set_members
        self.set_offsets = set_offsets
        self.xp = xp
        self.launch = launch

    def scores(self, gene_scores: Any) -> Any:
        """Set statistics, shape (n_batch, n_sets), from gene scores (n_batch, n_genes).

        Raises
        ------
        InputError
            A gene score is infinite: a mean has no finite value then (and +inf with
            -inf none at all), unlike the running sum, which has a limit.
        """
        if not bool(self.xp.isfinite(gene_scores).all()):
            raise InputError(f"set statistic {self.kind!r} needs finite gene statistics, but a permutation gave "
                             "an infinite one (Student's or Welch's t of a gene constant within both classes); "
                             "use the running-sum statistic ks, or a metric with a variance floor "
                             "(signal_to_noise, t_test) or mann_whitney")
        return self.launch(gene_scores, self.set_members, self.set_offsets, self.kind == "maxmean")


def linear_set_statistic_reference(kind: str, gene_scores: np.ndarray, members: np.ndarray) -> float:
    """One set's ``mean``/``maxmean`` from its members' scores (plain NumPy, for tests)."""
    z = np.asarray(gene_scores, dtype=np.float64)[members]
    if kind == "mean":
        return float(z.mean())
    positive, negative = np.maximum(z, 0).mean(), np.maximum(-z, 0).mean()
    return float(positive if positive - negative > MAXMEAN_TIE * max(positive, negative) else -negative)
