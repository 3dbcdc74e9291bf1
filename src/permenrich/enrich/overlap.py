"""Over-representation: overlaps of a gene list with many gene sets, and their statistics.

For a universe of ``N`` genes, a list of ``n`` of them (``selected``) and a set of ``K``
(all within the universe), the overlap ``x`` fills the 2x2 table

    ============  ============  ==================
    .             in list       not in list
    ============  ============  ==================
    in set        a = x         b = K - x
    not in set    c = n - x     d = N - K - n + x
    ============  ============  ==================

and under random lists ``x`` is hypergeometric(N, K, n). Every function here works on all
sets at once over the flat CSR form of :class:`permenrich.genesets.GeneSetIndex`
(``members``, ``offsets``): no Python loop over sets except to build strings.

Preconditions (not re-checked in the hot path): each set's members are distinct indices
in ``[0, n_universe)``, as :func:`permenrich.genesets.build_gene_set_index` makes them.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numba
import numpy as np
import scipy.sparse as sp

from ..nulls import extremeness_of

logger = logging.getLogger(__name__)

__all__ = ["OverlapCounter", "overlap_counts", "overlap_statistics", "leading_overlap_genes"]

# float32 sums of ones are exact below 2**24; past that use float64.
_FLOAT32_EXACT = 2**24
# Rows of the batch converted to float at a time: bounds the temporary to ~32 MiB.
_CHUNK_ELEMENTS = 8 * 2**20


def overlap_statistics(
    selected: np.ndarray, set_members: np.ndarray, set_offsets: np.ndarray, n_universe: int
) -> dict[str, np.ndarray]:
    """Overlap, odds ratio and one-sided hypergeometric p-value of every set.

    Parameters
    ----------
    selected : numpy.ndarray
        bool, shape ``(n_universe,)``: the genes of the list, restricted to the universe.
    set_members : numpy.ndarray
        int, universe indices of all sets concatenated (``GeneSetIndex.members``).
    set_offsets : numpy.ndarray
        int, length ``n_sets + 1``: set ``s`` is ``set_members[set_offsets[s]:set_offsets[s + 1]]``.
    n_universe : int
        Number of genes in the universe, ``N``.

    Returns
    -------
    dict of str to numpy.ndarray
        Each of length ``n_sets``:

        - ``overlap`` (int64): ``x``, set members in the list.
        - ``set_size`` (int64): ``K``.
        - ``list_size`` (int64): ``n``, the same for every set.
        - ``expected`` (float64): ``K * n / N``.
        - ``odds_ratio`` (float64): the sample odds ratio ``a*d / (b*c)``; ``inf`` when
          ``b*c == 0`` and NaN when a row or column of the table sums to 0, exactly as
          :func:`scipy.stats.fisher_exact` reports it.
        - ``pval`` (float64): ``P(X >= x)`` for ``X ~ hypergeom(N, K, n)``, i.e.
          Fisher's exact test with ``alternative="greater"``; 1 for the degenerate tables
          where the odds ratio is NaN.

    Raises
    ------
    ValueError
        ``selected`` is not a bool vector of length ``n_universe``, or the CSR arrays are
        inconsistent (a bug in the caller, not a user mistake).

    Notes
    -----
    ``pval = hypergeom.sf(x - 1, N, K, n) = sum_{k >= x} C(K, k) C(N - K, n - k) / C(N, n)``.

    References
    ----------
    Fisher, R. A. (1922) J. R. Stat. Soc. 85:87. Huang, Sherman & Lempicki (2009) NAR
    37:1 (gene-list enrichment tools).

    Examples
    --------
    >>> import numpy as np
    >>> selected = np.array([True, True, False, False, False, False])
    >>> stats = overlap_statistics(selected, np.array([0, 1, 2, 3, 4]), np.array([0, 2, 5]), 6)
    >>> stats["overlap"].tolist(), stats["pval"].round(4).tolist()
    ([2, 0], [0.0667, 1.0])
    """
    n_universe = _check_universe(n_universe)
    selected = np.asarray(selected)
    if selected.dtype != np.bool_ or selected.shape != (n_universe,):
        raise ValueError(
            f"selected must be a bool vector of length n_universe={n_universe}, got {selected.dtype} {selected.shape}"
        )
    members, offsets = _check_sets(set_members, set_offsets, n_universe)

    # Overlaps as differences of one running count over the concatenated members
    # (unlike np.add.reduceat, right for empty sets too).
    running = np.zeros(members.size + 1, dtype=np.int64)
    np.cumsum(selected[members], out=running[1:])
    overlap = running[offsets[1:]] - running[offsets[:-1]]
    set_size = np.diff(offsets)
    n_selected = int(np.count_nonzero(selected))
    list_size = np.full(set_size.shape, n_selected, dtype=np.int64)

    a = overlap
    b = set_size - overlap
    c = list_size - overlap
    d = n_universe - set_size - list_size + overlap
    degenerate = (a + b == 0) | (c + d == 0) | (a + c == 0) | (b + d == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # int64 products then true division, the arithmetic scipy.stats.fisher_exact uses
        odds_ratio = np.where((b > 0) & (c > 0), (a * d) / np.maximum(b * c, 1), np.inf)
    odds_ratio[degenerate] = np.nan

    from scipy.stats import hypergeom  # at first use: scipy.stats is slow to import

    pval = hypergeom.sf(overlap - 1, n_universe, set_size, list_size)
    pval = np.clip(np.asarray(pval, dtype=np.float64), 0.0, 1.0)
    pval[degenerate] = 1.0
    return {
        "overlap": overlap,
        "set_size": set_size,
        "list_size": list_size,
        "expected": set_size * (n_selected / n_universe),
        "odds_ratio": odds_ratio.astype(np.float64),
        "pval": pval,
    }


class OverlapCounter:
    """Overlap counts of many gene lists with fixed sets, for permutation nulls.

    The set-membership matrix (sparse, ``n_universe x n_sets``) is built once; each call
    to :meth:`counts` is then one dense-times-sparse product.

    Parameters
    ----------
    set_members, set_offsets : numpy.ndarray
        The flat CSR sets (see :func:`overlap_statistics`).
    n_universe : int
        Length of each selection row.

    Examples
    --------
    >>> import numpy as np
    >>> counter = OverlapCounter(np.array([0, 1, 2]), np.array([0, 2, 3]), 4)
    >>> counter.counts(np.array([[True, True, True, False], [False, True, False, True]])).tolist()
    [[2, 1], [1, 0]]
    """

    def __init__(self, set_members: np.ndarray, set_offsets: np.ndarray, n_universe: int) -> None:
        self.n_universe = _check_universe(n_universe)
        members, offsets = _check_sets(set_members, set_offsets, self.n_universe)
        self.n_sets = int(offsets.size - 1)
        self._dtype = np.float32 if self.n_universe < _FLOAT32_EXACT else np.float64
        owner = np.repeat(np.arange(self.n_sets, dtype=np.int64), np.diff(offsets))
        self._membership = sp.csr_matrix(
            (np.ones(members.size, dtype=self._dtype), (members, owner)), shape=(self.n_universe, self.n_sets)
        )

    def counts(self, selected_matrix: np.ndarray) -> np.ndarray:
        """Overlap of every selection row with every set.

        Parameters
        ----------
        selected_matrix : numpy.ndarray
            bool, shape ``(n_batch, n_universe)``: one gene list per row.

        Returns
        -------
        numpy.ndarray
            int64, shape ``(n_batch, n_sets)``.

        Raises
        ------
        ValueError
            ``selected_matrix`` is not a 2-D bool array with ``n_universe`` columns.
        """
        selected_matrix = np.asarray(selected_matrix)
        if selected_matrix.dtype != np.bool_ or selected_matrix.ndim != 2 or (
            selected_matrix.shape[1] != self.n_universe
        ):
            raise ValueError(
                f"selected_matrix must be bool of shape (n_batch, {self.n_universe}), "
                f"got {selected_matrix.dtype} {selected_matrix.shape}"
            )
        n_batch = selected_matrix.shape[0]
        out = np.empty((n_batch, self.n_sets), dtype=np.int64)
        if n_batch == 0 or self.n_sets == 0:
            out[...] = 0
            return out
        step = max(1, _CHUNK_ELEMENTS // max(self.n_universe, 1))
        for start in range(0, n_batch, step):
            block = selected_matrix[start : start + step].astype(self._dtype)
            # Sums of ones below 2**24 (float32) are exact, so the cast back is too.
            out[start : start + step] = np.asarray(block @ self._membership)
        return out


@numba.njit(cache=True, parallel=True, error_model="numpy")
def top_genes_mask(stats, top, alternative, centre, out):
    """``out[b]``: the ``top`` most extreme genes of row ``b`` of ``stats`` (extremeness
    as in :func:`permenrich.nulls.extremeness_of` for an alternative code; NaN least
    extreme), ties in gene-index order: exactly the first ``top`` of a stable sort by
    decreasing extremeness, found by one partition per row instead of a sort."""
    n_batch, n_genes = stats.shape
    for b in numba.prange(n_batch):
        key = np.empty(n_genes)  # smaller = more extreme
        for g in range(n_genes):
            u = extremeness_of(stats[b, g], centre, alternative)
            key[g] = np.inf if np.isnan(u) else -u
        kth = np.partition(key, top - 1)[top - 1]
        room = top
        for g in range(n_genes):
            if key[g] < kth:
                room -= 1
        for g in range(n_genes):
            if key[g] < kth:
                out[b, g] = True
            elif key[g] == kth and room > 0:
                out[b, g] = True
                room -= 1
            else:
                out[b, g] = False


def overlap_counts(selected_matrix: np.ndarray, set_members: np.ndarray, set_offsets: np.ndarray) -> np.ndarray:
    """Overlap of every row of ``selected_matrix`` with every set.

    Parameters
    ----------
    selected_matrix : numpy.ndarray
        bool, shape ``(n_batch, n_universe)``.
    set_members, set_offsets : numpy.ndarray
        The flat CSR sets (see :func:`overlap_statistics`).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_batch, n_sets)``.

    Notes
    -----
    Builds an :class:`OverlapCounter` for one call; for repeated batches against the same
    sets build the counter once and call :meth:`OverlapCounter.counts`.
    """
    selected_matrix = np.asarray(selected_matrix)
    if selected_matrix.ndim != 2:
        raise ValueError(f"selected_matrix must be 2-D (n_batch, n_universe), got shape {selected_matrix.shape}")
    return OverlapCounter(set_members, set_offsets, selected_matrix.shape[1]).counts(selected_matrix)


def leading_overlap_genes(
    selected: np.ndarray,
    set_members: np.ndarray,
    set_offsets: np.ndarray,
    gene_ids: Sequence[str] | np.ndarray,
) -> list[str]:
    """The overlapping genes of every set, comma-joined.

    Parameters
    ----------
    selected : numpy.ndarray
        bool, shape ``(n_universe,)``.
    set_members, set_offsets : numpy.ndarray
        The flat CSR sets (see :func:`overlap_statistics`).
    gene_ids : sequence of str
        Universe gene ids, length ``n_universe``.

    Returns
    -------
    list of str
        One entry per set: ids of its members that are selected, in the set's member
        order, joined by ``","``; ``""`` for no overlap.
    """
    gene_ids = np.asarray(gene_ids, dtype=object)
    selected = np.asarray(selected)
    if selected.dtype != np.bool_ or selected.shape != gene_ids.shape:
        raise ValueError(
            f"selected must be a bool vector as long as gene_ids ({gene_ids.shape[0]}), "
            f"got {selected.dtype} {selected.shape}"
        )
    members, offsets = _check_sets(set_members, set_offsets, gene_ids.shape[0])
    hit = selected[members]
    hit_ids = gene_ids[members[hit]].astype(str)
    running = np.zeros(members.size + 1, dtype=np.int64)
    np.cumsum(hit, out=running[1:])
    bounds = running[offsets]
    return [",".join(hit_ids[bounds[s] : bounds[s + 1]]) for s in range(offsets.size - 1)]


def _check_universe(n_universe: int) -> int:
    if isinstance(n_universe, bool) or not isinstance(n_universe, (int, np.integer)) or n_universe < 1:
        raise ValueError(f"n_universe must be a positive integer, got {n_universe!r}")
    return int(n_universe)


def _check_sets(set_members: np.ndarray, set_offsets: np.ndarray, n_universe: int) -> tuple[np.ndarray, np.ndarray]:
    """Members as int64 in range, offsets as int64 non-decreasing from 0 to ``len(members)``."""
    members = np.asarray(set_members)
    offsets = np.asarray(set_offsets)
    if members.ndim != 1 or members.dtype.kind not in "iu":
        raise ValueError(f"set_members must be a 1-D integer array, got {members.dtype} {members.shape}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or offsets.size < 1:
        raise ValueError(
            f"set_offsets must be a 1-D integer array of length n_sets + 1, got {offsets.dtype} {offsets.shape}"
        )
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] != 0 or offsets[-1] != members.size or np.any(np.diff(offsets) < 0):
        raise ValueError(
            f"set_offsets must rise from 0 to len(set_members)={members.size}, got {offsets[0]} .. {offsets[-1]}"
        )
    if members.size and (int(members.min()) < 0 or int(members.max()) >= n_universe):
        raise ValueError(
            f"set_members must lie in [0, {n_universe}), got {int(members.min())} .. {int(members.max())}"
        )
    return members.astype(np.int64, copy=False), offsets
