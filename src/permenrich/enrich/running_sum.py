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
against the minimum at the first, ``-m_1/(N-k)``) and rounding must not decide them. The
zeros stand for the start and the end of the walk,
where the running sum is 0. ``p = 0`` is the classic Kolmogorov–Smirnov
statistic, ``p = 1`` GSEA's default. When every member has weight 0 (``N_R = 0``) the ES is
defined as 0.

Infinite statistics (Student's or Welch's t of a gene constant within both classes)
rank first (+inf) or last (-inf). Their weight ``|s|**p`` is infinite, so in a set with
such members the weighted running sum has a limit in which those members share the
hits' weight equally and the finite members weigh nothing; that limit is the ES (the
same rule when ``|s|**p`` overflows). With ``p = 0`` every member weighs 1 as usual.

This module holds the exact O(k log k) NumPy version used for observed scores and the
leading edge; the compiled kernels walk all sets at once through the ranking (same
formula, one pass over the ranked genes).

References
----------
Subramanian et al. (2005) PNAS 102:15545. Korotkevich et al. (2021) bioRxiv 060012 (fgsea).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._compile import inline
from ..rng import SCALAR_FUNCTIONS as RNG_FUNCTIONS
from ..rng import STREAM_GENE_SET, _insert_sorted, _random_sequence, _random_sequence_sparse  # noqa: F401 (jit_family)
from ..stats.ranking import SCALAR_FUNCTIONS as RANKING_FUNCTIONS
from ..portable_math import SCALAR_FUNCTIONS as PORTABLE_MATH_FUNCTIONS
from ..portable_math import _power  # noqa: F401 (jit_family)

#: Positive and negative extremes whose magnitudes differ by at most this are tied.
ES_TIE_TOLERANCE = 1e-12
#: maxmean's positive part wins only if it exceeds the negative part by more than this,
#: relative (see :mod:`permenrich.enrich.linear`).
MAXMEAN_TIE = 1e-12


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


#: Hit weights are kept within 2**+-960 (and a set's sum of them well inside float64):
#: below, 1 / (sum of a set's weights) overflows or subnormal weights lose their digits.
WEIGHT_RANGE_LOG2 = 960


def scaled_for_weights(scores: np.ndarray, weight: float) -> tuple[np.ndarray, int]:
    """Fixed scores (a preranked list) scaled by a power of two, when needed and possible,
    so that every hit weight ``|s| ** weight`` lies within 2**+-:data:`WEIGHT_RANGE_LOG2`;
    the running sum's ES does not depend on the scores' scale, and scaling by 2**j leaves
    every bit of ordinary lists as it was (then ``j = 0`` and ``scores`` is returned).
    Where no power of two fits the whole range (a huge weight: weights of 0, 1 and inf),
    the scores are returned as they are: overflowing weights follow the infinite-weight
    rule, and an observed score that is still not finite is refused by the caller.
    Returns the scores and ``j``.
    """
    if weight <= 0:
        return scores, 0
    magnitude = np.abs(scores[np.isfinite(scores) & (scores != 0)])
    if magnitude.size == 0:
        return scores, 0
    low = weight * math.log2(float(magnitude.min()))
    high = weight * math.log2(float(magnitude.max())) + math.log2(scores.size)  # a set's sum of weights
    if low >= -WEIGHT_RANGE_LOG2 and high <= WEIGHT_RANGE_LOG2:
        return scores, 0
    if not (math.isfinite(low) and math.isfinite(high)) or high - low > 2 * WEIGHT_RANGE_LOG2:
        return scores, 0
    shift = math.ceil((-WEIGHT_RANGE_LOG2 - low) / weight) if low < -WEIGHT_RANGE_LOG2 else \
        math.floor((WEIGHT_RANGE_LOG2 - high) / weight)
    if not (-1020 <= low + weight * shift and high + weight * shift <= 1020):  # a large p steps too far
        return scores, 0
    return np.ldexp(scores, shift), shift


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
    infinite = np.isinf(weights)
    if infinite.any():  # infinite weights share the hits' weight equally (see _step_weight)
        weights = infinite.astype(np.float64)
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


# ---- device-neutral kernels' bodies (compiled for the CPU and CUDA by jit_family) ----------

# Per-set walk state, one row of a (n_sets, 8) array so that a set's state is one cache
# line: reciprocal of N_R, reciprocal of N - k, hits so far, cumulative hit weight,
# running maximum and minimum, and the positions where they were first reached.
_INV_NORM, _MISS_STEP, _HITS, _CUMULATIVE, _MAX, _MIN, _MAX_AT, _MIN_AT = range(8)
WALK_STATE_WIDTH = 8


@inline
def _needs_power(weight):
    """Whether :func:`_hit_weight` computes a power for ``weight`` (0, 1 and 2 are exact
    shortcuts): callers then weigh each gene once rather than each membership."""
    return weight != 0.0 and weight != 1.0 and weight != 2.0


@inline
def _hit_weight(value, weight):
    """|value| ** weight: the common weights 1, 0 and 2 exact and cheap, others by
    :func:`~permenrich.portable_math._power` (the same bits on every backend, unlike the
    C library's and CUDA's ``pow``)."""
    a = abs(value)
    if weight == 1.0:
        return a
    if weight == 0.0:
        return 1.0
    if weight == 2.0:
        return a * a
    return _power(a, weight)


@inline
def _step_weight(w):
    """A hit's weight in a set that has members of infinite weight |s|**p (an infinite
    statistic, or an overflowing power): those members share the hits' weight equally
    and finite ones weigh nothing, the limit of the weighted running sum."""
    return 1.0 if w == math.inf else 0.0


@inline
def _pick_extreme(max_top, min_before, max_at, min_at):
    """Larger magnitude wins; on a tie (within rounding), the extreme reached first."""
    margin = max_top + min_before
    if margin > ES_TIE_TOLERANCE or (margin >= -ES_TIE_TOLERANCE and max_at < min_at):
        return max_top
    return min_before


def _enrichment_scores(stat, order, weight, set_members, set_offsets, gene_set_offsets,
                       gene_set_ids, gene_weight, state, out):
    """ES of every set for one ranking, in one walk over the ranked genes."""
    n_genes = stat.shape[0]
    n_sets = set_offsets.shape[0] - 1
    for g in range(n_genes):
        gene_weight[g] = _hit_weight(stat[g], weight)
    for s in range(n_sets):
        total = 0.0
        n_infinite = 0
        for t in range(set_offsets[s], set_offsets[s + 1]):
            w = gene_weight[set_members[t]]
            if w == math.inf:
                n_infinite += 1
            else:
                total += w
        # Reciprocals turn the walk's divisions into multiplications; a set whose members
        # all weigh 0 is reported as ES 0 below. A negative reciprocal marks a set with
        # infinite weights, which share the hits' weight equally (see _step_weight).
        if n_infinite > 0:
            state[s, _INV_NORM] = -1.0 / n_infinite
        else:
            state[s, _INV_NORM] = 1.0 / total if total > 0.0 else 0.0
        state[s, _MISS_STEP] = 1.0 / (n_genes - (set_offsets[s + 1] - set_offsets[s]))
        state[s, _HITS] = 0.0
        state[s, _CUMULATIVE] = 0.0
        state[s, _MAX] = 0.0
        state[s, _MIN] = 0.0
        state[s, _MAX_AT] = n_genes
        state[s, _MIN_AT] = n_genes
    for position in range(n_genes):
        g = order[position]
        w = gene_weight[g]
        for t in range(gene_set_offsets[g], gene_set_offsets[g + 1]):
            row = state[gene_set_ids[t]]
            miss_part = (position - row[_HITS]) * row[_MISS_STEP]
            cumulative = row[_CUMULATIVE]
            inv_norm = row[_INV_NORM]
            step = w
            if inv_norm < 0.0:
                inv_norm = -inv_norm
                step = _step_weight(w)
            before = cumulative * inv_norm - miss_part
            # Extremes move only beyond the tie tolerance: the first of tied extremes
            # counts. Selects rather than branches: these comparisons are unpredictable.
            lower = before < row[_MIN] - ES_TIE_TOLERANCE
            row[_MIN] = before if lower else row[_MIN]
            row[_MIN_AT] = position - 1.0 if lower else row[_MIN_AT]
            cumulative += step
            row[_CUMULATIVE] = cumulative
            top = cumulative * inv_norm - miss_part
            higher = top > row[_MAX] + ES_TIE_TOLERANCE
            row[_MAX] = top if higher else row[_MAX]
            row[_MAX_AT] = position if higher else row[_MAX_AT]
            row[_HITS] += 1.0
    for s in range(n_sets):
        if state[s, _INV_NORM] == 0.0:
            out[s] = 0.0
        else:
            out[s] = _pick_extreme(state[s, _MAX], state[s, _MIN], state[s, _MAX_AT], state[s, _MIN_AT])


def _sorted_positions_score(positions, ranked_stat, weight, statistic, n_genes):
    """Set statistic of a set given its members' sorted ranked positions (closed form)."""
    k = positions.shape[0]
    if statistic == 1 or statistic == 2:
        positive = 0.0
        negative = 0.0
        for j in range(k):
            z = ranked_stat[positions[j]]
            if statistic == 1:
                positive += z
            elif z > 0.0:
                positive += z
            else:
                negative -= z
        if statistic == 1:
            return positive / k
        # s+ wins only beyond a relative 1e-12: an exact tie gives -s- whatever the rounding
        return positive / k if positive - negative > MAXMEAN_TIE * max(positive, negative) else -negative / k
    norm = 0.0
    n_infinite = 0
    for j in range(k):
        w = _hit_weight(ranked_stat[positions[j]], weight)
        if w == math.inf:
            n_infinite += 1
        else:
            norm += w
    return _ks_from_sorted_positions(positions, ranked_stat, weight, norm, n_infinite, n_genes)


@inline
def _ks_step(position, j, w, miss_step, inv_norm, cumulative, max_top, min_before, max_at, min_at):
    """One member of the closed form: the running sum just before and just after the
    ``j``-th member (at ranked ``position``, hit weight ``w``), and the running extremes
    with where they were first reached. Returns the new (cumulative, max_top, min_before,
    max_at, min_at)."""
    miss_part = (position - j) * miss_step
    before = cumulative * inv_norm - miss_part
    # Selects rather than branches: these comparisons are unpredictable.
    lower = before < min_before - ES_TIE_TOLERANCE
    min_before = before if lower else min_before
    min_at = position - 1 if lower else min_at
    cumulative += w
    top = cumulative * inv_norm - miss_part
    higher = top > max_top + ES_TIE_TOLERANCE
    max_top = top if higher else max_top
    max_at = position if higher else max_at
    return cumulative, max_top, min_before, max_at, min_at


def _ks_from_sorted_positions(positions, ranked_stat, weight, norm, n_infinite, n_genes):
    """Running-sum ES of a set from its members' ascending ranked positions, given the
    sum ``norm`` of its finite hit weights and the count ``n_infinite`` of infinite ones.

    The caller sums ``norm`` in the order its null kernel does (ranked order here, member
    order in the GPU's ES-from-ranks kernel, as in the CPU's walk), so that every path
    rounds alike; the walk (:func:`_enrichment_scores`) makes the same steps in the same
    order: same bits.
    """
    k = positions.shape[0]
    if n_infinite > 0:
        norm = float(n_infinite)
    if norm == 0.0:
        return 0.0
    inv_norm = 1.0 / norm
    miss_step = 1.0 / (n_genes - k)
    cumulative = 0.0
    max_top = 0.0
    min_before = 0.0
    max_at = n_genes
    min_at = n_genes
    for j in range(k):
        position = positions[j]
        w = _hit_weight(ranked_stat[position], weight)
        w = _step_weight(w) if n_infinite > 0 else w
        cumulative, max_top, min_before, max_at, min_at = _ks_step(position, j, w, miss_step, inv_norm, cumulative,
                                                                   max_top, min_before, max_at, min_at)
    return _pick_extreme(max_top, min_before, max_at, min_at)


def _ks_pair_from_sorted_positions(positions_a, positions_b, ranked_a, ranked_b, weight, norm_a, norm_b,
                                   n_infinite_a, n_infinite_b, n_genes):
    """:func:`_ks_from_sorted_positions` of one set under two rankings (same size k) in
    one loop: the two running sums are independent chains, so the CPU overlaps them
    (about 30% less time than two calls). Same steps, same bits."""
    k = positions_a.shape[0]
    if n_infinite_a > 0:
        norm_a = float(n_infinite_a)
    if n_infinite_b > 0:
        norm_b = float(n_infinite_b)
    if norm_a == 0.0 or norm_b == 0.0:
        return (_ks_from_sorted_positions(positions_a, ranked_a, weight, norm_a, n_infinite_a, n_genes),
                _ks_from_sorted_positions(positions_b, ranked_b, weight, norm_b, n_infinite_b, n_genes))
    inv_a = 1.0 / norm_a
    inv_b = 1.0 / norm_b
    miss_step = 1.0 / (n_genes - k)
    cum_a = 0.0
    top_a = 0.0
    bottom_a = 0.0
    top_at_a = n_genes
    bottom_at_a = n_genes
    cum_b = 0.0
    top_b = 0.0
    bottom_b = 0.0
    top_at_b = n_genes
    bottom_at_b = n_genes
    for j in range(k):
        position_a = positions_a[j]
        position_b = positions_b[j]
        w_a = _hit_weight(ranked_a[position_a], weight)
        w_a = _step_weight(w_a) if n_infinite_a > 0 else w_a
        w_b = _hit_weight(ranked_b[position_b], weight)
        w_b = _step_weight(w_b) if n_infinite_b > 0 else w_b
        cum_a, top_a, bottom_a, top_at_a, bottom_at_a = _ks_step(position_a, j, w_a, miss_step, inv_a, cum_a, top_a,
                                                                 bottom_a, top_at_a, bottom_at_a)
        cum_b, top_b, bottom_b, top_at_b, bottom_at_b = _ks_step(position_b, j, w_b, miss_step, inv_b, cum_b, top_b,
                                                                 bottom_b, top_at_b, bottom_at_b)
    return (_pick_extreme(top_a, bottom_a, top_at_a, bottom_at_a),
            _pick_extreme(top_b, bottom_b, top_at_b, bottom_at_b))


def _random_set_null_row(seed, perm_index, ranked_stat, weight, statistic, sizes, pool, sequence, prefix, out):
    """``out[i]``: statistic of the random set of ``sizes[i]`` ranked genes under gene-set
    permutation ``perm_index``, for ``sizes`` ascending.

    One random sequence of distinct ranked positions, as long as the largest set, serves
    every size: the set of size k is its first k elements, a uniform random k-subset (the
    cumulative null of fgsea). Scratch: ``pool`` (the identity, restored), ``sequence``
    and ``prefix`` (as long as the largest set). See :func:`_score_prefixes`.
    """
    _random_sequence(seed, perm_index, STREAM_GENE_SET, sizes[sizes.shape[0] - 1], pool, sequence)
    _score_prefixes(sequence, ranked_stat, weight, statistic, sizes, prefix, out)


def _random_set_null_row_sparse(seed, perm_index, ranked_stat, weight, statistic, sizes, table_keys, table_values,
                                sequence, prefix, out):
    """:func:`_random_set_null_row` without a pool as long as the gene list: the same
    sequence drawn by :func:`_random_sequence_sparse` (a hash table as large as twice the
    largest set), for the device, where a pool per thread would not fit."""
    _random_sequence_sparse(seed, perm_index, STREAM_GENE_SET, sizes[sizes.shape[0] - 1], ranked_stat.shape[0],
                            table_keys, table_values, sequence)
    _score_prefixes(sequence, ranked_stat, weight, statistic, sizes, prefix, out)


def _score_prefixes(sequence, ranked_stat, weight, statistic, sizes, prefix, out):
    """``out[i]``: statistic of the set made of the first ``sizes[i]`` elements of
    ``sequence`` (ranked positions). The elements are inserted one by one into ``prefix``,
    kept sorted, and each size is scored on it by :func:`_sorted_positions_score` (the
    observed sets' scores take the same function)."""
    n_genes = ranked_stat.shape[0]
    filled = 0
    for i in range(sizes.shape[0]):
        k = sizes[i]
        for t in range(filled, k):
            prefix[t] = sequence[t]
        _insert_sorted(prefix, filled, k)  # the new elements into the sorted prefix
        filled = k
        out[i] = _sorted_positions_score(prefix[:k], ranked_stat, weight, statistic, n_genes)


#: Walk and random-set scoring with the ranking and the draws they use; compile together.
SCALAR_FUNCTIONS = (*RANKING_FUNCTIONS, *RNG_FUNCTIONS, *PORTABLE_MATH_FUNCTIONS, _needs_power, _hit_weight,
                    _step_weight, _pick_extreme, _enrichment_scores, _sorted_positions_score, _ks_step,
                    _ks_from_sorted_positions, _ks_pair_from_sorted_positions, _score_prefixes,
                    _random_set_null_row, _random_set_null_row_sparse)
