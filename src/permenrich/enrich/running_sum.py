"""The weighted Kolmogorov–Smirnov running-sum enrichment score (GSEA).

With genes ranked by decreasing statistic ``s`` (positions ``0 .. N-1``) and a set of
``k`` members at positions ``r_1 < ... < r_k``, hits weigh ``w_j = |s_{r_j}|**p`` and
misses ``1 / (N - k)``. With ``N_R = sum_j w_j`` the running sum right after hit ``j`` is

    top_j = (w_1 + ... + w_j) / N_R - (r_j - (j - 1)) / (N - k)

and right before it ``top_j - w_j / N_R``; between hits it only decreases. The ES is
whichever of ``max(0, max_j top_j)`` and ``min(0, min_j before_j)`` is larger in absolute
value; on a tie, the one reached first along the ranked list (as ``argmax |RES|`` does
in the literal definition). Magnitudes within ``ES_TIE_TOLERANCE`` (1e-12) count as tied:
ties are common for small sets (e.g. the maximum at the last hit, ``1 - m_k/(N-k)``,
against the minimum at the first, ``-m_1/(N-k)``) and rounding must not decide them. The zeros stand for the start and the end of the walk,
where the running sum is 0. ``p = 0`` is the classic Kolmogorov–Smirnov
statistic, ``p = 1`` GSEA's default. When every member has weight 0 (``N_R = 0``) the ES is
defined as 0.

This module holds the exact O(k log k) NumPy version used for observed scores and the
leading edge; the compiled kernels walk all sets at once through the ranking (same
formula, one pass over the ranked genes).

References
----------
Subramanian et al. (2005) PNAS 102:15545. Korotkevich et al. (2021) bioRxiv 060012 (fgsea).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Positive and negative extremes whose magnitudes differ by at most this are tied.
ES_TIE_TOLERANCE = 1e-12


@dataclass
class RunningSumResult:
    """Observed ES and leading edge of one set.

    ``peak_position`` is the ranked-list position of the running-sum extremum;
    ``leading_edge_positions`` the ranked positions of the leading-edge members.
    """

    es: float
    peak_position: int
    leading_edge_positions: np.ndarray
    tags_fraction: float
    list_fraction: float
    signal_fraction: float


def running_sum(member_positions: np.ndarray, ranked_weights: np.ndarray) -> RunningSumResult:
    """ES and leading edge of one set from its members' ranked positions.

    Parameters
    ----------
    member_positions : ndarray of int, shape (k,)
        Positions (0-based, in the ranked list) of the set's members.
    ranked_weights : ndarray of float, shape (N,)
        ``|statistic| ** p`` in ranked order.

    Returns
    -------
    RunningSumResult
        Leading edge as GSEA reports it: for a positive ES the members at or before the
        peak, for a negative ES those at or after it. ``tags`` = leading-edge members / k,
        ``list`` = genes from the start to the peak (positive ES) or from the peak to the
        end (negative ES), peak included, / N,
        ``signal = tags * (1 - list) * N / (N - k)``.
    """
    n_genes = ranked_weights.shape[0]
    positions = np.sort(np.asarray(member_positions, dtype=np.int64))
    k = positions.size
    n_miss = n_genes - k
    weights = ranked_weights[positions]
    norm = weights.sum()
    if norm == 0.0:
        return RunningSumResult(0.0, 0, positions[:0], 0.0, 0.0, 0.0)
    misses_before = positions - np.arange(k)
    top = np.cumsum(weights) / norm - misses_before / n_miss
    before = top - weights / norm
    # First of the (tied within tolerance) extremes, as the walk kernels do.
    j_max = int(np.flatnonzero(top > top.max() - ES_TIE_TOLERANCE)[0]) if top.max() > ES_TIE_TOLERANCE else 0
    j_min = int(np.flatnonzero(before < before.min() + ES_TIE_TOLERANCE)[0]) if before.min() < -ES_TIE_TOLERANCE else 0
    max_top = top[j_max] if top.max() > ES_TIE_TOLERANCE else 0.0
    min_before = before[j_min] if before.min() < -ES_TIE_TOLERANCE else 0.0
    first_is_max = positions[j_max] < positions[j_min] - 1
    margin = max_top + min_before
    if margin > ES_TIE_TOLERANCE or (margin >= -ES_TIE_TOLERANCE and first_is_max):
        es = float(max_top)
        peak = int(positions[j_max])
        leading = positions[: j_max + 1]
        list_fraction = (peak + 1) / n_genes
    else:
        es = float(min_before)
        # The minimum is reached on the gene just before hit j_min (a miss).
        peak = int(positions[j_min]) - 1
        leading = positions[j_min:]
        list_fraction = (n_genes - peak) / n_genes  # the peak and every gene after it
    tags_fraction = leading.size / k
    signal_fraction = tags_fraction * (1.0 - list_fraction) * n_genes / n_miss
    return RunningSumResult(es, peak, leading, tags_fraction, list_fraction, signal_fraction)


def running_sum_dense(in_set: np.ndarray, ranked_stat: np.ndarray, weight: float) -> np.ndarray:
    """The full running sum, one value per ranked gene (literal GSEA definition).

    Slow (O(N) per set); the independent reference for tests and for plots.

    Parameters
    ----------
    in_set : ndarray of bool, shape (N,)
        Membership in ranked order.
    ranked_stat : ndarray of float, shape (N,)
        Statistics in ranked order.
    weight : float
        The exponent ``p``.
    """
    hit_weight = np.where(in_set, np.abs(ranked_stat) ** weight, 0.0)
    p_hit = np.cumsum(hit_weight) / hit_weight.sum()
    p_miss = np.cumsum(~in_set) / (~in_set).sum()
    return p_hit - p_miss
