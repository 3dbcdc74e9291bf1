"""Multilevel p-values for preranked GSEA: adaptive multilevel splitting.

A permutation p-value cannot go below 1/(permutations + 1). For the gene-set null of
preranked GSEA, adaptive multilevel splitting (Korotkevich et al. 2016, the method of
fgseaMultilevel) estimates P(ES >= e) of a random set of k genes far below that:

1. Draw ``m`` (odd, default 101) random k-subsets of the ranked genes.
2. Sort them by positive ES (the maximum of the running sum); record the lower half's
   scores as the next levels of a *ruler*, and replace that half by copies of the upper
   half, so every set now scores at least the median.
3. Move each set by a Markov chain on k-subsets whose stationary law is the uniform law
   restricted to {positive ES > median}: swap a random member for a random gene, keep
   the swap only if the score stays above the median (about m·k accepted moves per level).
4. Repeat until the median passes ``e``. Each level halves the probability: with the
   index of ``e`` among the levels, log p = j·E[log B(h, m)] + E[log B(r + 1, m)] with
   h = (m + 1)/2 (the expected log of Beta order statistics), and for the signed ES a
   correction for the probability that the overall ES has the sign of its positive part.

The standard deviation of log2 p is reported as ``log2err`` (fgsea's formula:
sqrt(floor(-log2 p + 1) · (ψ'((m + 1)/2) - ψ'(m + 1))) / ln 2). Negative ES are the
positive ES of the reversed ranking. Random draws come from the project's Philox
generator, keyed by (seed, set size, sign): a ruler is a pure function of them, though
not the same draws as fgsea's Mersenne Twister, so results agree with fgsea within the
stated error, not in every bit.

References
----------
Korotkevich G, Sukhov V, Budin N, Shpak B, Artyomov MN, Sergushichev A (2021). Fast gene
set enrichment analysis. bioRxiv 060012.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..rng import random_sequence
from ..rng import _cpu as _rng

#: Fourth Philox counter word of multilevel draws ("ML"), apart from every other stream.
STREAM_MULTILEVEL = 0x4D4C0000
#: Scores closer than this to a level count as reaching it (fgsea's tolerance).
LEVEL_TOLERANCE = 1e-10

_bounded_index_buffered = _rng._bounded_index_buffered


@numba.njit(cache=True, error_model="numpy")
def _norm(weights, sample):
    total = 0.0
    for j in range(sample.shape[0]):
        total += weights[sample[j]]
    return total


@numba.njit(cache=True, error_model="numpy")
def _positive_es(weights, sample, norm):
    """Maximum of the running sum of a sorted set (0 if it never rises above 0)."""
    n, k = weights.shape[0], sample.shape[0]
    if norm <= 0.0:
        return 0.0
    miss, hit = 1.0 / (n - k), 1.0 / norm
    running, best, last = 0.0, 0.0, -1
    for j in range(k):
        position = sample[j]
        running += hit * weights[position] - miss * (position - last - 1)
        best = running if running > best else best
        last = position
    return best


@numba.njit(cache=True, error_model="numpy")
def _es_is_positive(weights, sample, norm):
    """Whether the signed ES (the extreme of larger magnitude) of a sorted set is > 0."""
    n, k = weights.shape[0], sample.shape[0]
    if norm <= 0.0:
        return False
    miss, hit = 1.0 / (n - k), 1.0 / norm
    running, extreme, last = 0.0, 0.0, -1
    for j in range(k):
        position = sample[j]
        running -= miss * (position - last - 1)
        if abs(running) > abs(extreme):
            extreme = running
        running += hit * weights[position]
        if abs(running) > abs(extreme):
            extreme = running
        last = position
    return extreme > 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _rise_at(weights, position, hit, miss, bound, running, last, weight, j):
    """One member of the running sum of a sorted set (``j`` members before it, the last
    at ``last``): (whether the sum now exceeds ``bound``, the sum, this member, the
    members' weight up to it, the index of the next member)."""
    running += hit * weights[position] - miss * (position - last - 1)
    weight += weights[position]
    return running > bound, running, position, weight, j + 1


@numba.njit(cache=True, error_model="numpy", inline="always")
def _rise_in(weights, sample, start, stop, hit, miss, bound, running, last, weight, j):
    """:func:`_rise_at` over ``sample[start:stop]``, stopping at the first member where
    the sum exceeds ``bound`` (then ``j`` is one past that member's index)."""
    for t in range(np.uint64(start), np.uint64(stop)):  # unsigned: no negative-index fix-up per access
        rises, running, last, weight, j = _rise_at(weights, sample[t], hit, miss, bound, running, last, weight, j)
        if rises:
            return True, running, last, weight, j
    return False, running, last, weight, j


@numba.njit(cache=True, error_model="numpy")
def _first_rise(weights, sample, index, value, low, norm, bound):
    """Where the running sum of the sample with ``sample[index]`` replaced by ``value``
    (not a member; ``low`` its insertion point) first exceeds ``bound``: (its index in
    the changed set, or -1 if it never does; the members' weight up to it; its position).
    The changed set is read in place, as stretches of ``sample`` around the new value,
    so a rejected move costs neither shifting the sample nor shifting it back. The
    running sum is the one every acceptance of the chain is decided by: only a candidate
    that exceeds the bound by more than its rounding can stand in for it (:func:`_move`)."""
    n, k = weights.shape[0], sample.shape[0]
    miss, hit = 1.0 / (n - k), 1.0 / norm
    running, last, weight, j = 0.0, -1, 0.0, 0
    later = value > sample[index]  # the new value comes after the removed one
    # members before the first of (removed, new), skipping the removed one
    first_stop = index if later else low
    rises, running, last, weight, j = _rise_in(weights, sample, 0, first_stop, hit, miss, bound, running, last,
                                               weight, j)
    if not rises and later:  # between the removed member and the new value
        rises, running, last, weight, j = _rise_in(weights, sample, index + 1, low, hit, miss, bound, running,
                                                   last, weight, j)
    if not rises:
        rises, running, last, weight, j = _rise_at(weights, value, hit, miss, bound, running, last, weight, j)
    if not rises and not later:  # between the new value and the removed member
        rises, running, last, weight, j = _rise_in(weights, sample, low, index, hit, miss, bound, running, last,
                                                   weight, j)
    if not rises:  # the rest, skipping the removed member
        rises, running, last, weight, j = _rise_in(weights, sample, low if later else index + 1, k, hit, miss,
                                                   bound, running, last, weight, j)
    if rises:
        return j - 1, weight, last
    return -1, weight, -1


#: Up to this many members, :func:`_insertion_point` counts rather than bisects.
_COUNT_BELOW_MAX = 1024


@numba.njit(cache=True, error_model="numpy")
def _insertion_point(sample, value):
    """The first index of the sorted ``sample`` holding an element >= ``value``: the
    number of members below it. For sets of up to ``_COUNT_BELOW_MAX`` members they are
    counted in one vectorised pass (at k = 176, 9 ns against a bisection's 28 ns: the
    bisection's steps wait on each other's loads); larger sets are bisected, with steps
    that select rather than branch (which half holds ``value`` is a coin toss)."""
    length = sample.shape[0]
    if length <= _COUNT_BELOW_MAX:
        below = 0
        for j in range(length):
            below += sample[j] < value
        return below
    base = 0
    while length > 1:
        half = length >> 1
        base += half * (sample[base + half] < value)
        length -= half
    return base + (sample[base] < value)


@numba.njit(cache=True, error_model="numpy")
def _shift_in(sample, index, value, low):
    """Replace ``sample[index]`` by ``value`` (not in the set; ``low`` its insertion
    point), keeping the sample sorted; return the new value's index. The indices are
    unsigned so that Numba adds no negative-index fix-up to each access, which kept the
    loops from being vectorised (at k = 176: 40 ns instead of 66 per shift)."""
    one = np.uint64(1)
    if value > sample[index]:
        for t in range(np.uint64(index), np.uint64(low - 1)):
            sample[t] = sample[t + one]
        sample[low - 1] = value
        return low - 1
    for t in range(np.uint64(low), np.uint64(index)):
        to = np.uint64(index) - (t - np.uint64(low))  # from index down to low + 1
        sample[to] = sample[to - one]
    sample[low] = value
    return low


#: Bound on the rounding of one float64 operation, relative to its result (2**-52).
_ROUNDING = 2.3e-16


@numba.njit(cache=True, error_model="numpy")
def _move(weights, samples, bound, seed, stream, tag, cursor):
    """About m·k moves of the chain restricted to {positive ES > bound}; returns the
    stream cursor.

    A move is accepted when the running sum of the changed set exceeds ``bound``
    somewhere (:func:`_first_rise`, O(k)). Most accepted moves leave the place where it
    last did above the bound: that candidate (a member, with the weight and count of the
    members up to it) is updated in O(1), and when it exceeds the bound by more than the
    rounding of both its own updates and the running sum (``_ROUNDING`` per operation),
    the running sum certainly exceeds it too: the move is accepted without a scan, and
    the sorted sample is shifted once, when the move is known to stay. Otherwise the scan
    decides, so every decision, the chain and every ruler are those a scan of every
    proposal gives. (Chunks of positions that let a rejection skip where the sum cannot
    reach the bound, as fgsea has, cost more to keep than they saved below k ~ 300.)
    """
    m, k = samples.shape
    n = weights.shape[0]
    proposals = max(1, int(0.1 * k))
    miss = 1.0 / (n - k)
    scan_error = (k + 1) * 4 * _ROUNDING  # four roundings per step of the running sum
    candidate = np.full(m, -1, dtype=np.int64)  # a member's position, -1: none
    candidate_weight = np.zeros(m)
    candidate_count = np.zeros(m, dtype=np.int64)  # members up to the candidate
    candidate_error = np.zeros(m)  # bound on the weight's rounding
    block = np.zeros(5, dtype=np.uint64)  # the stream's current Philox block
    moves = 0
    while moves < m * k:
        for s in range(m):
            sample = samples[s]
            norm = _norm(weights, sample)
            for _ in range(proposals):
                index, cursor = _bounded_index_buffered(seed, stream, tag, cursor, k, block)
                value, cursor = _bounded_index_buffered(seed, stream, tag, cursor, n, block)
                old = sample[index]
                low = _insertion_point(sample, value)
                if low < k and sample[low] == value:  # already a member
                    if value == old:
                        moves += 1
                    continue
                new_norm = norm - weights[old] + weights[value]
                if not new_norm > 0.0:
                    continue  # rejected, as the scan's caller rejects it
                hit = 1.0 / new_norm
                accepted = False
                at = candidate[s]
                if at >= 0 and old != at:
                    weight, count, error = candidate_weight[s], candidate_count[s], candidate_error[s]
                    if old < at:
                        weight -= weights[old]
                        count -= 1
                        error += _ROUNDING * abs(weight)
                    if value < at:
                        weight += weights[value]
                        count += 1
                        error += _ROUNDING * abs(weight)
                    if hit * weight - miss * (at + 1 - count) > bound + hit * error + scan_error:
                        _shift_in(sample, index, value, low)
                        candidate_weight[s], candidate_count[s], candidate_error[s] = weight, count, error
                        accepted = True
                if not accepted:
                    rise, weight, position = _first_rise(weights, sample, index, value, low, new_norm, bound)
                    if rise >= 0:
                        _shift_in(sample, index, value, low)
                        candidate[s] = position
                        candidate_weight[s], candidate_count[s] = weight, rise + 1
                        candidate_error[s] = (rise + 1) * _ROUNDING * weight
                        accepted = True
                if accepted:
                    norm = new_norm
                    moves += 1
    return cursor


@numba.njit(cache=True, error_model="numpy")
def _record_and_split(weights, samples, levels, corrector, filled):
    """Append the lower half's scores (ascending) and the counts of positive signed ES
    above each to the ruler; replace the samples by copies of the upper half. Returns the
    new number of levels."""
    m = samples.shape[0]
    scores = np.empty(m)
    positive = np.empty(m, dtype=np.bool_)
    for s in range(m):
        norm = _norm(weights, samples[s])
        scores[s] = _positive_es(weights, samples[s], norm)
        positive[s] = _es_is_positive(weights, samples[s], norm)
    order = np.argsort(scores, kind="mergesort")
    above = 0
    for s in range(m):
        above += 1 if positive[s] else 0
    t = 0
    while 2 * t < m:
        levels[filled] = scores[order[t]]
        if positive[order[t]]:
            above -= 1
        corrector[filled] = above
        filled += 1
        t += 1
    copies = np.empty_like(samples)
    row = 0
    t = 0
    while 2 * t < m - 2:
        for _ in range(2):
            copies[row] = samples[order[m - 1 - t]]
            row += 1
        t += 1
    copies[row] = samples[order[m >> 1]]
    samples[:] = copies
    return filled


@numba.njit(cache=True, nogil=True, error_model="numpy")  # rulers of several sizes run on threads
def multilevel_ruler(weights, k, target, m, seed, stream, max_rounds, levels, corrector):
    """Levels of the ruler of random k-subsets of ``weights`` (ranked order), extended
    until the median exceeds ``target`` (or cannot advance, or ``max_rounds`` rounds);
    returns how many levels were written into ``levels``/``corrector``."""
    n = weights.shape[0]
    samples = np.empty((m, k), dtype=np.int64)
    pool = np.arange(n)
    for s in range(m):
        random_sequence(seed, s, STREAM_MULTILEVEL | (stream & 0xFFFF), k, pool, samples[s])
        samples[s] = np.sort(samples[s])
    filled = _record_and_split(weights, samples, levels, corrector, 0)
    cursor = 0
    rounds = 1
    while levels[filled - 1] <= target - LEVEL_TOLERANCE and rounds < max_rounds:
        cursor = _move(weights, samples, levels[filled - 1], seed, stream, STREAM_MULTILEVEL, cursor)
        previous = levels[filled - 1]
        filled = _record_and_split(weights, samples, levels, corrector, filled)
        rounds += 1
        if levels[filled - 1] <= previous:
            break  # the median could not advance
    return filled


def _beta_mean_log(a: float, b: float) -> float:
    """E[log X] for X the a-th of b uniform order statistics: ψ(a) - ψ(b + 1)."""
    from scipy.special import digamma

    return float(digamma(a) - digamma(b + 1))


#: Default random sets per level, and the smallest p-value estimated (fgsea's defaults).
DEFAULT_SAMPLE_SIZE = 101
DEFAULT_EPS = 1e-50


def multilevel_error(pvalue: float, sample_size: int) -> float:
    """Standard deviation of log2 p of a multilevel estimate (fgsea's ``multilevelError``)."""
    from scipy.special import polygamma

    single = float(polygamma(1, (sample_size + 1) // 2) - polygamma(1, sample_size + 1))
    return math.sqrt(math.floor(-math.log2(pvalue) + 1) * single) / math.log(2)


def multilevel_pvalues(ranked_stat: np.ndarray, weight: float, size: int, scores: np.ndarray, *,
                       sample_size: int = DEFAULT_SAMPLE_SIZE, seed: int = 0, eps: float = DEFAULT_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Multilevel estimates of P(ES of a random set of ``size`` genes reaches each score
    with its sign), the quantity of fgseaMultilevelCpp; divide by P(ES has that sign) for
    GSEA's sign-specific nominal p (:func:`permenrich.modes.gsea.prerank` does).

    Parameters
    ----------
    ranked_stat : ndarray of float64
        Scores in ranked (decreasing) order.
    weight : float
        The running sum's exponent p (hit weights ``|s|**p``).
    size : int
        Set size k.
    scores : ndarray
        Observed ES of sets of that size (either sign).
    sample_size : int
        Random sets per level (m; made odd).
    seed : int
        Seed of the Philox streams; a ruler is a pure function of (seed, size, sign).
    eps : float
        The ruler stops extending once probabilities fall below ``eps`` (0: no bound).

    Returns
    -------
    probabilities : ndarray
    reliable : ndarray of bool
        False where the score lies beyond the ruler or the sign correction is below 1/2
        (fgsea's ``isCpGeHalf``): the estimate is then likely too large.
    """
    m = int(sample_size) | 1
    half = (m + 1) // 2
    weights = np.abs(np.asarray(ranked_stat, dtype=np.float64)) ** float(weight)
    scores = np.asarray(scores, dtype=np.float64)
    probabilities = np.full(scores.shape, np.nan)
    reliable = np.zeros(scores.shape, dtype=bool)
    max_rounds = 10_000 if eps <= 0 else int(-math.log2(eps)) + 2
    adjustment = _beta_mean_log(half, m)
    for sign in (1, -1):
        which = np.flatnonzero(scores >= 0) if sign > 0 else np.flatnonzero(scores < 0)
        if which.size == 0:
            continue
        ordered = weights if sign > 0 else np.ascontiguousarray(weights[::-1])
        target = float(np.max(np.abs(scores[which])))
        capacity = half * (max_rounds + 1)
        levels, corrector = np.empty(capacity), np.empty(capacity, dtype=np.int64)
        filled = multilevel_ruler(ordered, int(size), target, m, np.uint64(seed), 2 * int(size) + (sign < 0),
                                  max_rounds, levels, corrector)
        levels, corrector = levels[:filled], corrector[:filled]
        for i in which:
            value = abs(scores[i])
            within = True
            if value >= levels[-1]:
                index = filled - 1
                within = value <= levels[-1] + LEVEL_TOLERANCE
            else:
                index = int(np.searchsorted(levels, value, side="left"))
            rounds, remainder = index // half, m - index % half
            log_p = rounds * adjustment + _beta_mean_log(remainder + 1, m)
            correction = _beta_mean_log(int(corrector[index]) + 1, remainder)
            probabilities[i] = min(1.0, max(0.0, math.exp(log_p + correction)))
            reliable[i] = within and math.exp(correction) >= 0.5
    return probabilities, reliable


def permutation_error(n_exceed: int, n_total: int) -> float:
    """Standard deviation of log2 of a permutation p-value (b + 1)/(m + 1) (fgsea's)."""
    from scipy.special import polygamma

    return math.sqrt(float(polygamma(1, n_exceed + 1) - polygamma(1, n_total + 1))) / math.log(2)
