"""Null accumulators for GSEA: counts and sums, never the whole null matrix.

Everything here reads one batch of null enrichment scores at a time (shape
``(n_batch, n_sets)``, on the backend's array module ``xp``) and keeps O(n_sets) state, so
memory does not grow with the number of permutations and batches can come in any order
or split (the accumulators add associatively).

Definitions (GSEA, Subramanian et al. 2005, with empirical p-values (b+1)/(m+1)):

* nominal p (sign-specific): for ES >= 0, b = #{null ES >= ES}, m = #{null ES >= 0};
  for ES < 0, b = #{null ES <= ES}, m = #{null ES < 0}; p = (b+1)/(m+1).
* NES = ES / mean(null ES of the same sign), in absolute value, per set.
* FDR q (for NES* >= 0; mirrored for negatives): the fraction of all sets' null NES
  >= NES* among null NES >= 0, divided by the fraction of observed NES >= NES* among
  observed NES >= 0; capped at 1.
* FWER p: the fraction of permutations whose largest null NES over all sets (smallest,
  for negative NES*) reaches NES*, as (b+1)/(m+1). Where the sets' null scores are not
  drawn jointly as GSEA draws them (preranked GSEA scores every set from one random
  sequence, GSEA draws each set's random sets on their own), the largest of a
  permutation's scores is not GSEA's: FWER is then P(some set's null NES >= NES*) for
  independently drawn sets, 1 - prod_s (1 - q_s), q_s the fraction of set s's null NES
  >= NES*, as (m P + 1)/(m + 1) (see ``fwer_groups``).

Under exact enumeration the observed labelling is one of the enumerated ones, so
p = b/m with no +1 (the observed score is already counted).

Ties: scores are computed along different arithmetic paths for different labellings, so
values equal in exact arithmetic (frequent with weight 0, small sets or few samples) can
differ in the last bits. Every comparison therefore treats values within a relative
:data:`TIE_TOLERANCE` of the scores' scale as equal (:func:`tie_tolerance`: 1e-12 for the
running sum, whose ES lies in [-1, 1]; 1e-12 x the largest |gene score| for mean/maxmean;
1e-12 for NES, a ratio), and ties count as exceedances (conservative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ._compile import cpu_family, inline


class NonFiniteScores(ValueError):
    """Null scores that are not finite reached an exact sum (the runner turns it into a
    one-line input error)."""


#: Scores closer than this are tied in every comparison (see module docs).
TIE_TOLERANCE = 1e-12


def tie_tolerance(score_scale: float) -> float:
    """Absolute tie tolerance for scores of magnitude up to ``score_scale``: relative
    :data:`TIE_TOLERANCE` (the running sum's ES lies in [-1, 1], scale 1; a mean of
    gene scores is bounded by the largest score)."""
    scale = float(score_scale)
    return TIE_TOLERANCE * (scale if math.isfinite(scale) and scale > 0 else 1.0)


def empirical_p(exceed: np.ndarray, total: np.ndarray, exact: bool) -> np.ndarray:
    """(b+1)/(m+1) for random permutations, b/m under exact enumeration (NaN if m = 0)."""
    exceed = np.asarray(exceed, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    if exact:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, exceed / np.maximum(total, 1), np.nan)
    return (exceed + 1.0) / (total + 1.0)


def bh_adjust(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN entries are left out and stay NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    m = order.size
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


#: Exact sums: float64 values are split into 32-bit integer digits of a fixed-point number
#: whose lowest bit is 2**_LSB_EXPONENT (below the smallest subnormal's mantissa), with
#: enough digits for the largest finite float64 and carries.
_DIGIT_BITS = 32
_LSB_EXPONENT = -1126
_N_DIGITS = 70


@inline
def _add_to_digits(pattern, digits, column):
    """Add the float64 whose IEEE-754 bits are ``pattern`` (as int64) to row ``column`` of
    ``digits``, exactly; False if it is not finite (then nothing is added). The CPU and the
    GPU kernels of the exact sums both go through here."""
    biased = (pattern >> 52) & 0x7FF
    fraction = pattern & 0xFFFFFFFFFFFFF
    if biased == 0x7FF:
        return False
    if biased == 0:
        if fraction == 0:
            return True  # +-0
        biased = 1  # subnormal: no hidden bit
    else:
        fraction |= np.int64(1) << 52
    # value = fraction * 2**(biased - 1075), lowest digit bit 2**_LSB_EXPONENT
    offset = biased - 1075 - _LSB_EXPONENT
    digit = offset >> 5
    shift = offset & (_DIGIT_BITS - 1)
    low_width = _DIGIT_BITS - shift
    rest = fraction >> low_width
    low = (fraction & ((np.int64(1) << low_width) - 1)) << shift
    if pattern >= 0:
        digits[column, digit] += low
        digits[column, digit + 1] += rest & 0xFFFFFFFF
        digits[column, digit + 2] += rest >> 32
    else:
        digits[column, digit] -= low
        digits[column, digit + 1] -= rest & 0xFFFFFFFF
        digits[column, digit + 2] -= rest >> 32
    return True


def _carry_digits(digits, column):
    """Carry row ``column`` of ``digits`` so that every digit but the top one lies in
    [0, 2**32): canonical, with room for the next batch."""
    for d in range(_N_DIGITS - 1):
        carry = digits[column, d] >> _DIGIT_BITS  # floor division, also for negative digits
        digits[column, d] -= carry << _DIGIT_BITS
        digits[column, d + 1] += carry


@inline
def _first_pass_value(value, tie, observed, positive_observed):
    """One null score of the GSEA null's first pass: (the score snapped to 0 within the
    tie tolerance, whether it counts as positive, whether it is as extreme as the
    observed score in the observed score's direction). Selects rather than branches: a
    null score's sign is a coin toss."""
    value = 0.0 if abs(value) <= tie else value
    positive = value >= 0
    above = value >= observed - tie
    below = value <= observed + tie
    return value, positive, above if positive_observed else below


@inline
def _second_pass_value(value, tie, scale_positive, scale_negative):
    """One null score of the GSEA null's second pass: (its null NES as a magnitude, whether
    it counts in the positive null, whether in the negative one); a NaN NES (a set whose
    null of that sign is empty) counts in neither."""
    value = 0.0 if abs(value) <= tie else value
    positive = value >= 0
    # Both quotients, then a select: a branch on the sign (a coin toss) mispredicts.
    positive_nes = value / scale_positive
    negative_nes = -(value / scale_negative)
    nes = positive_nes if positive else negative_nes
    return nes, positive and nes == nes, (not positive) and nes == nes


def _count_at_most(thresholds, value):
    """How many of the ascending ``thresholds`` are <= ``value`` (``np.searchsorted``,
    side "right"), by bisection."""
    low = 0
    high = thresholds.shape[0]
    while low < high:
        middle = (low + high) >> 1
        if thresholds[middle] <= value:
            low = middle + 1
        else:
            high = middle
    return low


#: The device-neutral functions of the null accumulators (compiled for the CPU here and
#: for CUDA in ``kernels/``).
SCALAR_FUNCTIONS = (_add_to_digits, _carry_digits, _first_pass_value, _second_pass_value, _count_at_most)
_cpu = cpu_family(SCALAR_FUNCTIONS)
_add_to_digits_cpu = _cpu._add_to_digits
_carry_digits_cpu = _cpu._carry_digits
_first_pass_value_cpu = _cpu._first_pass_value
_second_pass_value_cpu = _cpu._second_pass_value
_count_at_most_cpu = _cpu._count_at_most


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _exact_add(bits, digits, n_chunks):
    """CPU kernel of :meth:`ExactColumnSums.add` on the values' IEEE-754 bit patterns
    (``bits``: float64 viewed as int64), columns split over threads (each column's digits
    have one owner), then carries normalised. Returns False if a value is not finite."""
    n_rows, n_columns = bits.shape
    finite = np.ones(n_chunks, dtype=np.bool_)
    for chunk in numba.prange(n_chunks):
        first = chunk * n_columns // n_chunks
        last = (chunk + 1) * n_columns // n_chunks
        for r in range(n_rows):
            for c in range(first, last):
                if not _add_to_digits_cpu(bits[r, c], digits, c):
                    finite[chunk] = False
        for c in range(first, last):
            _carry_digits_cpu(digits, c)
    return finite.all()


class ExactColumnSums:
    """Per-column sums of float64 values that are exact, hence independent of the order
    and grouping in which the values arrive (any batch size, thread count, streaming or
    split of the permutations into merged parts gives the same bits).

    Each value ``m * 2**e`` (53-bit integer mantissa ``m``) is added as integers into a
    fixed-point number of :data:`_N_DIGITS` 32-bit digits per column; :meth:`totals`
    rounds the exact sum to float64 once (correctly rounded). NumPy batches are added by a
    CPU kernel, CuPy batches on the device by a CUDA kernel (one thread per column), both
    through :func:`_add_to_digits`.

    Parameters
    ----------
    n_columns : int
    xp : module
        NumPy or CuPy.
    """

    def __init__(self, n_columns: int, xp: Any = np) -> None:
        self.xp = xp
        self.n_columns = int(n_columns)
        self.digits = xp.zeros((self.n_columns, _N_DIGITS), dtype=xp.int64)

    def add(self, values: Any) -> None:
        """Add a batch, shape (n_rows, n_columns), of finite values."""
        xp = self.xp
        values = xp.ascontiguousarray(values, dtype=xp.float64)
        if xp is np:
            n_chunks = max(1, min(self.n_columns, 4 * numba.get_num_threads()))
            finite = _exact_add(values.view(np.int64), self.digits, n_chunks)
        else:  # device arrays (CuPy): one CUDA thread per column, no temporaries
            from permenrich.kernels.accumulators import launch_exact_add

            finite = launch_exact_add(values.view(xp.int64), self.digits)
        if not finite:
            raise NonFiniteScores("exact sums need finite values")

    def _normalise(self) -> None:
        """Carry so that every digit but the top one lies in [0, 2**32): a canonical form,
        and room for the next batch without int64 overflow."""
        digits = self.digits
        for d in range(_N_DIGITS - 1):
            carry = digits[:, d] >> _DIGIT_BITS  # floor division, also for negative digits
            digits[:, d] -= carry << _DIGIT_BITS
            digits[:, d + 1] += carry

    def merge(self, other: ExactColumnSums) -> None:
        """Add the sums of another part (of disjoint rows); exactly associative."""
        self.merge_digits(other.digits)

    def merge_digits(self, digits: Any) -> None:
        """Add another part's digits (e.g. returned by a worker as a host array)."""
        self.digits += self.xp.asarray(digits)
        self._normalise()

    def totals(self) -> np.ndarray:
        """The sums, each correctly rounded to float64 (host array)."""
        digits = _to_host(self.digits, self.xp)
        out = np.empty(self.n_columns)
        for column, row in enumerate(digits.tolist()):
            exact = 0
            for d in range(_N_DIGITS - 1, -1, -1):
                exact = (exact << _DIGIT_BITS) + row[d]
            out[column] = exact / (1 << -_LSB_EXPONENT)  # int / int: correctly rounded
        return out


#: Cells per threshold of the CPU tail counter's lookup grid (:func:`_tail_histogram`).
_CELLS_PER_THRESHOLD = 4


@numba.njit(cache=True, error_model="numpy", inline="always")
def _grid_cell(value, low, scale, n_cells):
    """Cell of ``value`` on a uniform grid from ``low``: a non-decreasing function of the
    value (every step rounds monotonically), clamped to the grid (infinities included)."""
    y = (value - low) * scale
    if y >= n_cells - 1:
        return n_cells - 1
    if y >= 1.0:
        return np.int64(y)
    return 0


@numba.njit(cache=True, error_model="numpy")
def _tail_histogram(thresholds, low, scale, n_cells, values, histogram):
    """``histogram[i]`` += how many ``values`` have exactly i thresholds <= them:
    ``np.searchsorted(thresholds, values, side="right")`` binned, found through a grid of
    cells (a threshold in an earlier cell than a value is below it, one in a later cell
    above it, so only the value's own cell is searched: 15x the binary search and
    bincount on 1.2 million values), NaN last as NumPy sorts it."""
    n_thresholds = thresholds.shape[0]
    starts = np.zeros(n_cells + 1, dtype=np.int64)  # thresholds in the cells before each
    for t in thresholds:
        starts[_grid_cell(t, low, scale, n_cells) + 1] += 1
    for c in range(n_cells):
        starts[c + 1] += starts[c]
    for v in values:
        if v != v:
            histogram[n_thresholds] += 1
            continue
        i = starts[_grid_cell(v, low, scale, n_cells)]
        while i < n_thresholds and thresholds[i] <= v:
            i += 1
        histogram[i] += 1


@dataclass
class _TailCounter:
    """Counts, for each threshold, how many values are >= it (one sign of FDR/FWER)."""

    thresholds: Any  # sorted ascending, xp array
    histogram: Any
    grid: tuple[float, float, int] | None = None  # NumPy: (low, scale, cells)

    @classmethod
    def create(cls, thresholds: np.ndarray, xp: Any) -> _TailCounter:
        # Values within the tolerance below a threshold count as reaching it.
        t = xp.asarray(np.sort(thresholds) - TIE_TOLERANCE)
        grid = None
        if xp is np and t.size and np.isfinite(t[0]) and np.isfinite(t[-1]) and t[-1] > t[0]:
            n_cells = _CELLS_PER_THRESHOLD * int(t.size)
            low, scale = float(t[0]), n_cells / float(t[-1] - t[0])
            if math.isfinite(scale):
                grid = (low, scale, n_cells)
        return cls(t, xp.zeros(t.size + 1, dtype=xp.int64), grid)

    def add(self, values: Any, xp: Any) -> None:
        if self.grid is not None:
            low, scale, n_cells = self.grid
            _tail_histogram(self.thresholds, low, scale, n_cells,
                            np.ascontiguousarray(values, dtype=np.float64).ravel(), self.histogram)
            return
        # searchsorted(right) = number of thresholds <= value: the value counts for those.
        slots = xp.searchsorted(self.thresholds, values, side="right")
        self.histogram += xp.bincount(slots, minlength=self.thresholds.size + 1)

    def counts_at_least(self, xp: Any) -> np.ndarray:
        """count[i] = #values >= thresholds[i]."""
        h = np.asarray(_to_host(self.histogram, xp))
        return np.cumsum(h[::-1])[::-1][1:]

    def lookup(self, queries: np.ndarray, xp: Any) -> np.ndarray:
        """#values >= q for each q among the thresholds."""
        counts = self.counts_at_least(xp)
        t = np.asarray(_to_host(self.thresholds, xp))
        return counts[np.searchsorted(t, np.asarray(queries) - TIE_TOLERANCE, side="left")]


def _cumulative_max(a: Any, xp: Any) -> Any:
    """Running maximum along axis 1: NumPy's ufunc.accumulate, or a log-step scan for
    array modules whose ufuncs lack ``accumulate`` (CuPy offers it for few ufuncs)."""
    if xp is np:
        return np.maximum.accumulate(a, axis=1)
    out = xp.array(a, copy=True)
    shift = 1
    while shift < out.shape[1]:
        out[:, shift:] = xp.maximum(out[:, shift:], out[:, :-shift].copy())
        shift *= 2
    return out


#: Codes of the alternatives for compiled kernels.
ALTERNATIVE_CODES = {"two-sided": 0, "greater": 1, "less": 2}


@numba.njit(cache=True, error_model="numpy")
def extremeness_of(value, centre, alternative):
    """How extreme ``value`` is under an alternative code (larger = more extreme):
    ``|value - centre|``, ``value - centre`` (greater) or ``centre - value`` (less)."""
    if alternative == 1:
        return value - centre
    if alternative == 2:
        return centre - value
    return abs(value - centre)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _exceedance_counts(null, centre, alternative, threshold, order, threshold_ordered, n_chunks, n_exceed,
                       n_exceed_max):
    """The CPU kernel of :meth:`ExceedanceAccumulator.add`: the same extremeness, the same
    comparisons and the same running maxima, fused into two walks per permutation row
    (rows split over threads; per-thread counts summed at the end)."""
    n_batch, n_features = null.shape
    exceed = np.zeros((n_chunks, n_features), dtype=np.int64)
    exceed_max = np.zeros((n_chunks, n_features), dtype=np.int64)
    for chunk in numba.prange(n_chunks):
        for b in range(chunk * n_batch // n_chunks, (chunk + 1) * n_batch // n_chunks):
            for g in range(n_features):
                if extremeness_of(null[b, g], centre[g], alternative) >= threshold[g]:  # never for NaN
                    exceed[chunk, g] += 1
            running = -np.inf
            for j in range(n_features - 1, -1, -1):
                g = order[j]
                u = extremeness_of(null[b, g], centre[g], alternative)
                if u > running:  # False for NaN: NaN counts as -inf
                    running = u
                if running >= threshold_ordered[j]:
                    exceed_max[chunk, j] += 1
    for chunk in range(n_chunks):
        for g in range(n_features):
            n_exceed[g] += exceed[chunk, g]
            n_exceed_max[g] += exceed_max[chunk, g]


@numba.njit(cache=True, error_model="numpy")
def _first_pass_split(null_es, tie, observed, positive_observed, n_positive, n_negative, n_exceed, positive_part,
                      negative_part):
    """CPU kernel of :meth:`GseaNullAccumulator.add_first_pass`: in one pass over a batch,
    the same snapping to 0, sign counts and exceedances as the array-module version, and
    the positive and negative parts for the exact sums. Selects, not branches: a null
    score's sign is a coin toss, and which comparison a set needs repeats only with the
    set count."""
    n_batch, n_sets = null_es.shape
    for b in range(n_batch):
        for s in range(n_sets):
            value, positive, exceeds = _first_pass_value_cpu(null_es[b, s], tie, observed[s], positive_observed[s])
            n_positive[s] += positive
            n_negative[s] += not positive
            positive_part[b, s] = value if positive else 0.0
            negative_part[b, s] = 0.0 if positive else value
            n_exceed[s] += exceeds


@numba.njit(cache=True, error_model="numpy")
def _second_pass_split(null_es, tie, scale_positive, scale_negative, positive_nes, negative_nes, max_positive,
                       max_negative):
    """CPU kernel of :meth:`GseaNullAccumulator.add_second_pass`'s arithmetic: in one pass,
    the null NES of each sign (magnitudes, NaN left out, row-major order as the
    device version's order) and each permutation's largest of each sign (-inf where none).
    Returns how many of each sign were written. The NES is written at both cursors, each
    advancing only if kept: no branch on the sign. ``positive_nes`` and ``negative_nes``
    need one spare slot."""
    n_batch, n_sets = null_es.shape
    n_positive = 0
    n_negative = 0
    for b in range(n_batch):
        top_positive = -math.inf
        top_negative = -math.inf
        for s in range(n_sets):
            nes, keep_positive, keep_negative = _second_pass_value_cpu(null_es[b, s], tie, scale_positive[s],
                                                                       scale_negative[s])
            positive_nes[n_positive] = nes
            n_positive += keep_positive
            top_positive = nes if keep_positive and nes > top_positive else top_positive
            negative_nes[n_negative] = nes
            n_negative += keep_negative
            top_negative = nes if keep_negative and nes > top_negative else top_negative
        max_positive[b] = top_positive
        max_negative[b] = top_negative
    return n_positive, n_negative


@numba.njit(cache=True, error_model="numpy")
def _group_tails(null_es, columns, tie, scale_positive, scale_negative, thresholds_positive, thresholds_negative,
                 histogram_positive, histogram_negative):
    """CPU kernel of the FWER tails of independently drawn sets: each group's null NES
    (its first set's column, ``columns[g]``) of each sign counted in row ``g`` of that
    sign's histogram at the number of thresholds it reaches."""
    for b in range(null_es.shape[0]):
        for g in range(columns.shape[0]):
            s = columns[g]
            nes, keep_positive, keep_negative = _second_pass_value_cpu(null_es[b, s], tie, scale_positive[s],
                                                                       scale_negative[s])
            if keep_positive:
                histogram_positive[g, _count_at_most_cpu(thresholds_positive, nes)] += 1
            if keep_negative:
                histogram_negative[g, _count_at_most_cpu(thresholds_negative, nes)] += 1


@dataclass
class _GroupTailCounter:
    """Per group of sets, how many of its null NES reach each threshold (one sign of the
    FWER of independently drawn sets); thresholds as :class:`_TailCounter`'s."""

    thresholds: Any  # sorted ascending, minus the tolerance, xp array
    histogram: Any  # (groups, thresholds + 1)

    @classmethod
    def create(cls, thresholds: np.ndarray, n_groups: int, xp: Any) -> _GroupTailCounter:
        shifted = _TailCounter.create(thresholds, xp).thresholds
        return cls(shifted, xp.zeros((n_groups, shifted.size + 1), dtype=xp.int64))

    def counts_at_least(self, queries: np.ndarray, xp: Any) -> np.ndarray:
        """count[g, i] = #null NES of group g >= queries[i] (queries among the thresholds)."""
        h = np.asarray(_to_host(self.histogram, xp))
        at_least = np.cumsum(h[:, ::-1], axis=1)[:, ::-1][:, 1:]
        t = np.asarray(_to_host(self.thresholds, xp))
        return at_least[:, np.searchsorted(t, np.asarray(queries) - TIE_TOLERANCE, side="left")]


def independent_sets_fwer(counts: np.ndarray, sets_per_group: np.ndarray, n_perm: int, exact: bool) -> np.ndarray:
    """FWER of independently drawn sets from each group's tail counts ``counts[g, i]``
    (null NES of group g reaching query i, of ``n_perm``): P = 1 - prod over sets of
    (1 - q), q = counts / n_perm, summed in logs (``log1p``) over the groups in order;
    (n_perm P + 1)/(n_perm + 1), or P under exact enumeration."""
    with np.errstate(divide="ignore"):
        log_none = (sets_per_group[:, None] * np.log1p(-counts / float(n_perm))).sum(axis=0)
    reached = -np.expm1(log_none)
    return reached if exact else (n_perm * reached + 1.0) / (n_perm + 1.0)


def _to_host(a: Any, xp: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") and xp is not np else np.asarray(a)


class GseaNullAccumulator:
    """Two-pass accumulator of GSEA's null statistics.

    Pass 1 (:meth:`add_first_pass`) gives nominal p-values and the per-set null means
    that define NES; pass 2 (:meth:`add_second_pass`, over the *same* permutations,
    regenerated or cached) gives FDR and FWER, which need every set's NES scale first.

    Parameters
    ----------
    observed_es : ndarray, shape (n_sets,)
    n_perm : int
    exact : bool
        Whether the permutations are an exact enumeration that includes the observed
        labelling.
    xp : module
        NumPy or CuPy: the array module of the batches.
    tie_tolerance : float
        Scores closer than this to an observed score tie with it (and count as
        exceedances): :func:`tie_tolerance` of the scores' scale. NES comparisons (FDR,
        FWER) use :data:`TIE_TOLERANCE`, NES being a ratio of scores.
    fwer_groups : ndarray of int, shape (n_sets,), optional
        For a null whose sets are not drawn jointly as GSEA draws them: group ids
        0..G-1 such that sets of one group have the same null scores in every
        permutation (preranked GSEA: the sets of one size). FWER is then that of sets
        drawn independently (GSEA preranked's: each set its own random sets), from each
        group's null distribution (:func:`independent_sets_fwer`), not from each
        permutation's largest score. None: the sets' nulls are drawn jointly (sample
        labels permuted), FWER from the largest score of each permutation.
    """

    def __init__(self, observed_es: np.ndarray, n_perm: int, exact: bool, xp: Any = np,
                 tie_tolerance: float = TIE_TOLERANCE, fwer_groups: np.ndarray | None = None) -> None:
        self.xp = xp
        self.fwer_groups = None
        if fwer_groups is not None:
            groups = np.asarray(fwer_groups, dtype=np.int64)
            self.fwer_groups = groups
            self._sets_per_group = np.bincount(groups).astype(np.float64)
            first = np.unique(groups, return_index=True)[1]  # groups are 0..G-1
            self._group_columns = xp.asarray(first.astype(np.int64))
        self.tie_tolerance = float(tie_tolerance)
        self.observed_es = self._snap_zero(np.asarray(observed_es, dtype=np.float64), np)
        self.n_perm = int(n_perm)
        self.exact = bool(exact)
        n_sets = self.observed_es.size
        self._es_dev = xp.asarray(self.observed_es)
        self._positive_obs = xp.asarray(self.observed_es >= 0)
        self.n_positive = xp.zeros(n_sets, dtype=xp.int64)
        self.n_negative = xp.zeros(n_sets, dtype=xp.int64)
        # Exact sums: NES must not depend on how the permutations were batched.
        self.sum_positive = ExactColumnSums(n_sets, xp)
        self.sum_negative = ExactColumnSums(n_sets, xp)
        self.n_exceed = xp.zeros(n_sets, dtype=xp.int64)
        self.seen_first = 0
        self.seen_second = 0

    def _snap_zero(self, scores: Any, xp: Any) -> Any:
        """Scores within the tie tolerance of 0 are 0: their sign is rounding, and it
        decides which null (positive or negative) a score belongs to."""
        return xp.where(xp.abs(scores) <= self.tie_tolerance, 0.0, scores)

    # ---- pass 1 -------------------------------------------------------------------
    def add_first_pass(self, null_es: Any) -> None:
        """Accumulate counts and sums from a batch of null ES, shape (n_batch, n_sets)."""
        xp = self.xp
        self.seen_first += int(null_es.shape[0])
        if xp is np:  # one compiled pass instead of a dozen array passes: same counts
            null_es = np.ascontiguousarray(null_es, dtype=np.float64)
            positive_part, negative_part = np.empty_like(null_es), np.empty_like(null_es)
            _first_pass_split(null_es, self.tie_tolerance, self._es_dev, self._positive_obs, self.n_positive,
                              self.n_negative, self.n_exceed, positive_part, negative_part)
            self.sum_positive.add(positive_part)
            self.sum_negative.add(negative_part)
            return
        # Device arrays: one CUDA thread per set, counts and exact sums in one pass and
        # without temporaries the size of the batch (which the memory model does not hold).
        from permenrich.kernels.accumulators import launch_gsea_first_pass

        null_es = xp.ascontiguousarray(null_es, dtype=xp.float64)
        if not launch_gsea_first_pass(null_es, null_es.view(xp.int64), self.tie_tolerance, self._es_dev,
                                      self._positive_obs, self.n_positive, self.n_negative, self.n_exceed,
                                      self.sum_positive.digits, self.sum_negative.digits):
            raise NonFiniteScores("exact sums need finite values")

    def finish_first_pass(self) -> None:
        """Compute NES, nominal p and the thresholds the second pass counts against."""
        host = lambda a: _to_host(a, self.xp)  # noqa: E731
        self.n_pos_h, self.n_neg_h = host(self.n_positive), host(self.n_negative)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean_positive = self.sum_positive.totals() / self.n_pos_h
            self.mean_negative_abs = -self.sum_negative.totals() / self.n_neg_h
        es = self.observed_es
        positive = es >= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            self.nes = np.where(positive, es / self.mean_positive, es / self.mean_negative_abs)
        total = np.where(positive, self.n_pos_h, self.n_neg_h)
        self.n_same_sign = total
        self.pval = empirical_p(host(self.n_exceed), total, self.exact)
        finite = np.isfinite(self.nes)
        self.begin_pass(1, {
            "pos_thresholds": np.sort(self.nes[finite & (self.nes >= 0)]),
            "neg_thresholds": np.sort(-self.nes[finite & (self.nes < 0)]),  # as magnitudes
            "scale_pos": np.where(np.isfinite(self.mean_positive), self.mean_positive, np.nan),
            "scale_neg": np.where(np.isfinite(self.mean_negative_abs), self.mean_negative_abs, np.nan)})

    # ---- passes as mergeable parts (the runner's protocol) ------------------------
    passes = 2

    def add(self, pass_index: int, null_es: Any) -> None:
        """Add a batch of null ES to pass 0 (counts, sums) or pass 1 (FDR/FWER tails)."""
        (self.add_first_pass if pass_index == 0 else self.add_second_pass)(null_es)

    def end_pass(self, pass_index: int) -> dict | None:
        """After every part of pass 0 was merged: NES and nominal p, and the setup (host
        arrays) that pass 1's parts need, wherever they run."""
        if pass_index != 0:
            return None
        self.finish_first_pass()
        return dict(self._second_pass_setup)

    def begin_pass(self, pass_index: int, setup: dict | None) -> None:
        """Start pass 1 from :meth:`end_pass`'s setup (the NES scales and thresholds)."""
        if pass_index != 1:
            return
        xp = self.xp
        self._second_pass_setup = setup
        self._pos_thresholds = np.asarray(setup["pos_thresholds"])
        self._neg_thresholds = np.asarray(setup["neg_thresholds"])
        self._fdr_pos = _TailCounter.create(self._pos_thresholds, xp)
        self._fdr_neg = _TailCounter.create(self._neg_thresholds, xp)
        if self.fwer_groups is None:
            self._fwer_pos = _TailCounter.create(self._pos_thresholds, xp)
            self._fwer_neg = _TailCounter.create(self._neg_thresholds, xp)
        else:
            n_groups = self._sets_per_group.size
            self._fwer_pos = _GroupTailCounter.create(self._pos_thresholds, n_groups, xp)
            self._fwer_neg = _GroupTailCounter.create(self._neg_thresholds, n_groups, xp)
        self._scale_pos = xp.asarray(setup["scale_pos"])
        self._scale_neg = xp.asarray(setup["scale_neg"])
        self._null_nes_pos_total = 0
        self._null_nes_neg_total = 0
        self.seen_second = 0

    def state(self, pass_index: int) -> dict:
        """This part's counters of a pass, as host integers: what a worker returns."""
        host = lambda a: _to_host(a, self.xp)  # noqa: E731
        if pass_index == 0:
            return {"n_positive": host(self.n_positive), "n_negative": host(self.n_negative),
                    "sum_positive": host(self.sum_positive.digits), "sum_negative": host(self.sum_negative.digits),
                    "n_exceed": host(self.n_exceed), "seen": self.seen_first}
        return {"fdr_pos": host(self._fdr_pos.histogram), "fdr_neg": host(self._fdr_neg.histogram),
                "fwer_pos": host(self._fwer_pos.histogram), "fwer_neg": host(self._fwer_neg.histogram),
                "null_pos": self._null_nes_pos_total, "null_neg": self._null_nes_neg_total,
                "seen": self.seen_second}

    def merge(self, pass_index: int, state: dict) -> None:
        """Add another part's :meth:`state` of the same pass (disjoint permutations):
        integer additions only, so any split and any order give the same result."""
        xp = self.xp
        if pass_index == 0:
            self.n_positive += xp.asarray(state["n_positive"])
            self.n_negative += xp.asarray(state["n_negative"])
            self.sum_positive.merge_digits(state["sum_positive"])
            self.sum_negative.merge_digits(state["sum_negative"])
            self.n_exceed += xp.asarray(state["n_exceed"])
            self.seen_first += int(state["seen"])
            return
        for name in ("fdr_pos", "fdr_neg", "fwer_pos", "fwer_neg"):
            getattr(self, f"_{name}").histogram += xp.asarray(state[name])
        self._null_nes_pos_total += int(state["null_pos"])
        self._null_nes_neg_total += int(state["null_neg"])
        self.seen_second += int(state["seen"])

    # ---- pass 2 -------------------------------------------------------------------
    def add_second_pass(self, null_es: Any) -> None:
        """Accumulate FDR/FWER tail counts from a batch of null ES (same permutations)."""
        xp = self.xp
        if xp is np:  # one compiled pass instead of a dozen array passes: same values
            null_es = np.ascontiguousarray(null_es, dtype=np.float64)
            pos_values, neg_values = np.empty(null_es.size + 1), np.empty(null_es.size + 1)
            max_pos, max_neg = np.empty(null_es.shape[0]), np.empty(null_es.shape[0])
            n_pos, n_neg = _second_pass_split(null_es, self.tie_tolerance, self._scale_pos, self._scale_neg,
                                              pos_values, neg_values, max_pos, max_neg)
            pos_values, neg_values = pos_values[:n_pos], neg_values[:n_neg]
        else:  # device arrays: one CUDA thread per permutation, counting straight into the tails
            from permenrich.kernels.accumulators import launch_gsea_second_pass

            null_es = xp.ascontiguousarray(null_es, dtype=xp.float64)
            joint = self.fwer_groups is None
            n_pos, n_neg = launch_gsea_second_pass(
                null_es, self.tie_tolerance, self._scale_pos, self._scale_neg, self._fdr_pos, self._fdr_neg,
                self._fwer_pos if joint else None, self._fwer_neg if joint else None)
            if not joint:
                from permenrich.kernels.accumulators import launch_group_tails

                launch_group_tails(null_es, self._group_columns, self.tie_tolerance, self._scale_pos,
                                   self._scale_neg, self._fwer_pos, self._fwer_neg)
            self._null_nes_pos_total += n_pos
            self._null_nes_neg_total += n_neg
            self.seen_second += int(null_es.shape[0])
            return
        self._null_nes_pos_total += int(pos_values.size)
        self._null_nes_neg_total += int(neg_values.size)
        self._fdr_pos.add(pos_values, xp)
        self._fdr_neg.add(neg_values, xp)
        if self.fwer_groups is None:
            self._fwer_pos.add(max_pos[max_pos >= 0], xp)
            self._fwer_neg.add(max_neg[max_neg > 0], xp)
        else:
            _group_tails(null_es, self._group_columns, self.tie_tolerance, self._scale_pos, self._scale_neg,
                         self._fwer_pos.thresholds, self._fwer_neg.thresholds, self._fwer_pos.histogram,
                         self._fwer_neg.histogram)
        self.seen_second += int(null_es.shape[0])

    def finish(self) -> dict[str, np.ndarray]:
        """Per-set ``es`` (observed, with scores within the tie tolerance of 0 set to 0),
        ``nes``, ``pval``, ``n_null_same_sign`` (the m of p = (b+1)/(m+1): the null scores
        of the observed score's sign), ``fdr``, ``fwer`` (host NumPy arrays)."""
        if self.seen_first != self.n_perm or self.seen_second != self.n_perm:
            raise RuntimeError(
                f"accumulator saw {self.seen_first}/{self.seen_second} of {self.n_perm} permutations"
            )
        xp = self.xp
        nes = self.nes
        fdr = np.full(nes.shape, np.nan)
        fwer = np.full(nes.shape, np.nan)
        for sign, thresholds, fdr_counter, fwer_counter, null_total in (
            (1.0, self._pos_thresholds, self._fdr_pos, self._fwer_pos, self._null_nes_pos_total),
            (-1.0, self._neg_thresholds, self._fdr_neg, self._fwer_neg, self._null_nes_neg_total),
        ):
            finite = np.isfinite(nes)
            which = finite & ((nes >= 0) if sign > 0 else (nes < 0))
            if not which.any():
                continue
            magnitude = sign * nes[which]
            null_at_least = fdr_counter.lookup(magnitude, xp)
            # observed NES of this sign that are >= each query (thresholds are the observed values)
            obs_at_least = thresholds.size - np.searchsorted(thresholds, magnitude - TIE_TOLERANCE, side="left")
            with np.errstate(invalid="ignore", divide="ignore"):
                null_fraction = null_at_least / null_total if null_total else np.zeros_like(magnitude)
                obs_fraction = obs_at_least / thresholds.size
                fdr[which] = np.minimum(1.0, null_fraction / obs_fraction)
            if self.fwer_groups is None:
                fwer[which] = empirical_p(fwer_counter.lookup(magnitude, xp), np.full(magnitude.shape, self.n_perm),
                                          self.exact)
            else:
                fwer[which] = independent_sets_fwer(fwer_counter.counts_at_least(magnitude, xp),
                                                    self._sets_per_group, self.n_perm, self.exact)
        return {"es": self.observed_es, "nes": nes, "pval": self.pval, "n_null_same_sign": self.n_same_sign,
                "fdr": fdr, "fwer": fwer}


class ExceedanceAccumulator:
    """Per-feature permutation p-values and Westfall–Young maxT adjusted p-values.

    Features are genes (per-gene tests) or sets (ORA overlaps). Each observed statistic is
    first turned into an *extremeness* ``u`` (larger = more extreme): ``|T - centre|``
    for a two-sided test, ``T - centre`` for ``greater``, ``centre - T`` for ``less``.

    * p_g = (#{perm: u_perm_g >= u_g} + 1) / (m + 1)  (b/m under exact enumeration);
    * maxT (step-down, Westfall & Young 1993, Algorithm 4.1): order features by decreasing
      observed u; per permutation take the successive maxima of the permuted u from the
      least extreme feature upwards, count where they reach the observed u; adjusted
      p-values are then made monotone in that order.

    Memory is O(n_features) for any number of permutations: the null matrix is never
    kept. Values within 1e-12 relative to the larger of the observed value and the
    largest finite observed extremeness count as ties (relative to the observed value
    alone where features have scales of their own, ``shared_scale=False``), and ties count
    as exceedances.

    Parameters
    ----------
    observed : ndarray, shape (n_features,)
    alternative : {"two-sided", "greater", "less"}
    centre : float or ndarray
        Value of the statistic under no effect (0 for t and r; n_A n_B / 2 for U).
    n_perm, exact, xp
        As for :class:`GseaNullAccumulator`.
    threads
        Threads of the CPU kernel used when ``xp`` is NumPy (None: Numba's default).
    shared_scale
        Whether every feature's statistic has the same scale (see
        :attr:`permenrich.stats.metrics.Metric.shared_scale`).
    """

    def __init__(self, observed: np.ndarray, *, alternative: str, centre: Any, n_perm: int, exact: bool,
                 xp: Any = np, threads: int | None = None, shared_scale: bool = True) -> None:
        self.xp = xp
        self.threads = threads
        self.alternative = alternative
        self.centre = centre
        self.n_perm = int(n_perm)
        self.exact = bool(exact)
        u = self.extremeness(np.asarray(observed, dtype=np.float64), np)
        self.observed_u = u
        valid = ~np.isnan(u)
        # Features whose statistic is undefined (NaN) never count as extreme.
        self._order = np.argsort(np.where(valid, -u, np.inf), kind="stable")
        # Relative to the larger of the value and the statistics' scale (the largest finite
        # observed extremeness): values near 0 get the scale's rounding, not a fixed 1e-12.
        finite = np.abs(u[np.isfinite(u)])
        scale = float(finite.max()) if finite.size and finite.max() > 0 and shared_scale else 0.0
        with np.errstate(invalid="ignore"):
            threshold = u - TIE_TOLERANCE * np.maximum(scale, np.abs(u))
        # An infinite observed value (t of a gene constant within both classes) is reached
        # only by a null value as infinite: its threshold is itself, not inf - inf = NaN.
        threshold = np.where(np.isinf(u), u, threshold)
        self._threshold = xp.asarray(np.where(valid, threshold, np.inf))
        self._threshold_ordered = self._threshold[xp.asarray(self._order)]
        self._order_dev = xp.asarray(self._order)
        self.n_exceed = xp.zeros(u.size, dtype=xp.int64)
        self.n_exceed_max = xp.zeros(u.size, dtype=xp.int64)
        self.seen = 0

    def extremeness(self, t: Any, xp: Any) -> Any:
        if self.alternative == "greater":
            return t - self.centre
        if self.alternative == "less":
            return self.centre - t
        return xp.abs(t - self.centre)

    def add(self, pass_index: int, null_statistics: Any) -> None:
        """Accumulate a batch of null statistics, shape (n_batch, n_features) (one pass:
        ``pass_index`` is 0)."""
        if self.xp is np:
            self._add_cpu(null_statistics)
        else:
            self._add_arrays(null_statistics)
        self.seen += int(null_statistics.shape[0])

    def _add_cpu(self, null_statistics: np.ndarray) -> None:
        from .backends.cpu import NumbaThreads

        null = np.ascontiguousarray(null_statistics, dtype=np.float64)
        centre = np.broadcast_to(np.asarray(self.centre, dtype=np.float64), (null.shape[1],)).copy()
        with NumbaThreads(self.threads):
            n_chunks = max(1, min(null.shape[0], 4 * numba.get_num_threads()))
            _exceedance_counts(null, centre, ALTERNATIVE_CODES[self.alternative], self._threshold, self._order,
                               self._threshold_ordered, n_chunks, self.n_exceed, self.n_exceed_max)

    def _add_arrays(self, null_statistics: Any) -> None:
        """Array-module version (CuPy on the GPU): the same counts as the CPU kernel."""
        xp = self.xp
        u = self.extremeness(null_statistics, xp)
        u = xp.where(xp.isnan(u), -xp.inf, u)
        self.n_exceed += (u >= self._threshold).sum(axis=0)
        # successive maxima from the least extreme feature up: reverse cumulative max
        ordered = u[:, self._order_dev][:, ::-1]
        running_max = _cumulative_max(ordered, xp)[:, ::-1]
        self.n_exceed_max += (running_max >= self._threshold_ordered).sum(axis=0)

    # ---- one pass as mergeable parts (the runner's protocol) ------------------------
    passes = 1

    def end_pass(self, pass_index: int) -> None:
        return None

    def begin_pass(self, pass_index: int, setup: dict | None) -> None:
        return None

    def state(self, pass_index: int) -> dict:
        """This part's counts, as host integers: what a worker returns."""
        return {"n_exceed": _to_host(self.n_exceed, self.xp), "n_exceed_max": _to_host(self.n_exceed_max, self.xp),
                "seen": self.seen}

    def merge(self, pass_index: int, state: dict) -> None:
        """Add another part's :meth:`state` (disjoint permutations); integer additions."""
        self.n_exceed += self.xp.asarray(state["n_exceed"])
        self.n_exceed_max += self.xp.asarray(state["n_exceed_max"])
        self.seen += int(state["seen"])

    def finish(self) -> dict[str, np.ndarray]:
        """``pval`` and ``p_maxt`` per feature (host NumPy arrays; NaN where undefined)."""
        if self.seen != self.n_perm:
            raise RuntimeError(f"accumulator saw {self.seen} of {self.n_perm} permutations")
        total = np.full(self.observed_u.size, self.n_perm)
        pval = empirical_p(_to_host(self.n_exceed, self.xp), total, self.exact)
        stepped = empirical_p(_to_host(self.n_exceed_max, self.xp), total, self.exact)
        adjusted = np.empty_like(stepped)
        adjusted[self._order] = np.maximum.accumulate(stepped)  # monotone in the step-down order
        undefined = np.isnan(self.observed_u)
        pval[undefined] = np.nan
        adjusted[undefined] = np.nan
        return {"pval": pval, "p_maxt": np.minimum(adjusted, 1.0)}


class StackedAccumulator:
    """Several accumulators fed from one batch of stacked scores, shape
    (n_parts, n_batch, ...): part i gets ``batch[i]`` (e.g. a meta-analysis and each of
    its leave-one-study-out variants, scored from the same permutations). Follows the
    runner's protocol; merging, and so byte identity, is each part's own."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.xp = parts[0].xp
        self.passes = max(part.passes for part in parts)

    def add(self, pass_index: int, batch: Any) -> None:
        for part, scores in zip(self.parts, batch):
            if pass_index < part.passes:
                part.add(pass_index, scores)

    def state(self, pass_index: int) -> dict:
        return {f"{i}/{key}": value for i, part in enumerate(self.parts) if pass_index < part.passes
                for key, value in part.state(pass_index).items()}

    def merge(self, pass_index: int, state: dict) -> None:
        for i, part in enumerate(self.parts):
            if pass_index < part.passes:
                prefix = f"{i}/"
                part.merge(pass_index, {key[len(prefix):]: value for key, value in state.items()
                                        if key.startswith(prefix)})

    def end_pass(self, pass_index: int) -> list:
        return [part.end_pass(pass_index) if pass_index < part.passes else None for part in self.parts]

    def begin_pass(self, pass_index: int, setup: list | None) -> None:
        for part, part_setup in zip(self.parts, setup or [None] * len(self.parts)):
            if pass_index < part.passes:
                part.begin_pass(pass_index, part_setup)

    def finish(self) -> list:
        return [part.finish() for part in self.parts]
