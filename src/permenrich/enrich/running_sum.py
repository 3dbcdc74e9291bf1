"""The weighted Kolmogorov–Smirnov running-sum enrichment score (GSEA).

With genes ranked by decreasing statistic ``s`` (positions ``0 .. N-1``) and a set of
``k`` members at positions ``r_1 < ... < r_k``, hits weigh ``w_j = |s_{r_j}|**p`` and
misses ``1 / (N - k)``. With ``N_R = sum_j w_j`` the running sum right after hit ``j`` is

    top_j = (w_1 + ... + w_j) / N_R - (r_j - (j - 1)) / (N - k)

and right before it ``top_j - w_j / N_R``; between hits it only decreases. The ES is
whichever of ``max(0, max_j top_j)`` and ``min(0, min_j before_j)`` is larger in absolute
value (the positive one on an exact tie); the zeros stand for the start and the end of
the walk, where the running sum is 0. ``p = 0`` is the classic Kolmogorov–Smirnov
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
    j_max = int(np.argmax(top))
    j_min = int(np.argmin(before))
    max_top = max(top[j_max], 0.0)
    min_before = min(before[j_min], 0.0)
    if max_top >= -min_before:
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
