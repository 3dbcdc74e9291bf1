"""Null accumulators on the device: the exact column sums and the GSEA null's two passes.

Nothing the size of a batch is allocated (the memory model counts only the scores).
First pass and exact sums: one thread per column (set) adds the column's values of
every row in turn, so no two threads touch the same digits (no atomics); consecutive
threads read consecutive columns of a row (coalesced). Second pass: one thread per
permutation computes its null NES, bisects the thresholds and adds to the FDR and FWER
histograms with integer atomics (for preranked GSEA's FWER, one row per group of sets of
the same null: :func:`group_tails_kernel`). The arithmetic is the CPU's
(:func:`permenrich.nulls._add_to_digits`, :func:`~permenrich.nulls._first_pass_value`,
:func:`~permenrich.nulls._second_pass_value`), and sums and counts are exact integers,
so any order gives the CPU's numbers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .device import (add_to_digits, carry_digits, count_at_most, first_pass_value, grid_1d, kernel_jit,
                     second_pass_value)


@kernel_jit
def exact_add_kernel(bits, digits, not_finite):
    """Add every row of ``bits`` (float64 bit patterns as int64, rows x columns) to the
    per-column ``digits``; ``not_finite[0]`` = 1 if a value is not finite."""
    column = cuda.grid(1)
    if column < bits.shape[1]:
        for row in range(bits.shape[0]):
            if not add_to_digits(bits[row, column], digits, column):
                not_finite[0] = 1
        carry_digits(digits, column)


@kernel_jit
def gsea_first_pass_kernel(null_es, bits, tie, observed, positive_observed, n_positive, n_negative, n_exceed,
                           digits_positive, digits_negative, not_finite):
    """The GSEA null's first pass over a batch ``null_es`` (permutations x sets; ``bits``
    the same memory as int64): sign counts, exceedances of the observed score and the
    exact sums of each sign, one thread per set."""
    s = cuda.grid(1)
    if s < null_es.shape[1]:
        positives = 0
        negatives = 0
        exceeding = 0
        for b in range(null_es.shape[0]):
            value, positive, exceeds = first_pass_value(null_es[b, s], tie, observed[s], positive_observed[s])
            positives += positive
            negatives += not positive
            exceeding += exceeds
            if value != 0.0:  # a snapped score adds nothing; others add their own bits
                if not add_to_digits(bits[b, s], digits_positive if positive else digits_negative, s):
                    not_finite[0] = 1
        n_positive[s] += positives
        n_negative[s] += negatives
        n_exceed[s] += exceeding
        carry_digits(digits_positive, s)
        carry_digits(digits_negative, s)


@kernel_jit
def gsea_second_pass_kernel(null_es, tie, scale_positive, scale_negative, thresholds_positive, thresholds_negative,
                            fdr_positive, fdr_negative, fwer_positive, fwer_negative, count_maxima, totals):
    """The GSEA null's second pass over a batch (permutations x sets): each null NES of
    each sign counted in the FDR histogram at the number of thresholds it reaches, each
    permutation's largest of each sign in the FWER one (if ``count_maxima``); ``totals``
    += the NES counted."""
    b = cuda.grid(1)
    if b < null_es.shape[0]:
        top_positive = -math.inf
        top_negative = -math.inf
        n_positive = 0
        n_negative = 0
        for s in range(null_es.shape[1]):
            nes, keep_positive, keep_negative = second_pass_value(null_es[b, s], tie, scale_positive[s],
                                                                  scale_negative[s])
            if keep_positive:
                cuda.atomic.add(fdr_positive, count_at_most(thresholds_positive, nes), 1)
                n_positive += 1
                top_positive = max(top_positive, nes)
            if keep_negative:
                cuda.atomic.add(fdr_negative, count_at_most(thresholds_negative, nes), 1)
                n_negative += 1
                top_negative = max(top_negative, nes)
        if count_maxima and top_positive >= 0:
            cuda.atomic.add(fwer_positive, count_at_most(thresholds_positive, top_positive), 1)
        if count_maxima and top_negative > 0:
            cuda.atomic.add(fwer_negative, count_at_most(thresholds_negative, top_negative), 1)
        cuda.atomic.add(totals, 0, n_positive)
        cuda.atomic.add(totals, 1, n_negative)


@kernel_jit
def group_tails_kernel(null_es, columns, tie, scale_positive, scale_negative, thresholds_positive,
                       thresholds_negative, histogram_positive, histogram_negative):
    """The FWER tails of independently drawn sets (:func:`permenrich.nulls._group_tails`),
    one thread per permutation: each group's null NES (column ``columns[g]``) of each sign
    counted in row ``g`` of that sign's histogram."""
    b = cuda.grid(1)
    if b < null_es.shape[0]:
        for g in range(columns.shape[0]):
            s = columns[g]
            nes, keep_positive, keep_negative = second_pass_value(null_es[b, s], tie, scale_positive[s],
                                                                  scale_negative[s])
            if keep_positive:
                cuda.atomic.add(histogram_positive, (g, count_at_most(thresholds_positive, nes)), 1)
            if keep_negative:
                cuda.atomic.add(histogram_negative, (g, count_at_most(thresholds_negative, nes)), 1)


def _flag():  # noqa: ANN202 - a device array
    return cuda.to_device(np.zeros(1, dtype=np.int32))


def launch_exact_add(bits, digits) -> bool:  # noqa: ANN001 - device arrays (CuPy or Numba)
    """:func:`exact_add_kernel` on the default stream; False if a value was not finite."""
    not_finite = _flag()
    if bits.shape[0] and bits.shape[1]:
        blocks, threads = grid_1d(bits.shape[1])
        exact_add_kernel[blocks, threads](bits, digits, not_finite)
    return not bool(not_finite.copy_to_host()[0])


def launch_gsea_first_pass(null_es, bits, tie: float, observed, positive_observed, n_positive,  # noqa: ANN001
                           n_negative, n_exceed, digits_positive, digits_negative) -> bool:
    """:func:`gsea_first_pass_kernel` on the default stream; False if a score was not finite."""
    not_finite = _flag()
    if null_es.shape[0] and null_es.shape[1]:
        blocks, threads = grid_1d(null_es.shape[1])
        gsea_first_pass_kernel[blocks, threads](null_es, bits, float(tie), observed, positive_observed, n_positive,
                                                n_negative, n_exceed, digits_positive, digits_negative, not_finite)
    return not bool(not_finite.copy_to_host()[0])


def launch_gsea_second_pass(null_es, tie: float, scale_positive, scale_negative, fdr_positive,  # noqa: ANN001
                            fdr_negative, fwer_positive, fwer_negative) -> tuple[int, int]:
    """:func:`gsea_second_pass_kernel` on the default stream; the tail counters are
    :class:`permenrich.nulls._TailCounter` (thresholds and histogram on the device).
    The FWER counters share the FDR ones' thresholds (both are made from the observed NES);
    None: no FWER of the permutations' largest scores (:func:`launch_group_tails` counts
    it instead). Returns how many null NES of each sign were counted."""
    totals = cuda.to_device(np.zeros(2, dtype=np.int64))
    count_maxima = fwer_positive is not None
    if null_es.shape[0] and null_es.shape[1]:
        blocks, threads = grid_1d(null_es.shape[0])
        gsea_second_pass_kernel[blocks, threads](
            null_es, float(tie), scale_positive, scale_negative, fdr_positive.thresholds, fdr_negative.thresholds,
            fdr_positive.histogram, fdr_negative.histogram,
            (fwer_positive if count_maxima else fdr_positive).histogram,
            (fwer_negative if count_maxima else fdr_negative).histogram, count_maxima, totals)
    n_positive, n_negative = totals.copy_to_host()
    return int(n_positive), int(n_negative)


def launch_group_tails(null_es, columns, tie: float, scale_positive, scale_negative, fwer_positive,  # noqa: ANN001
                       fwer_negative) -> None:
    """:func:`group_tails_kernel` on the default stream; the counters are
    :class:`permenrich.nulls._GroupTailCounter` (thresholds and histograms on the device)."""
    if null_es.shape[0] and columns.shape[0]:
        blocks, threads = grid_1d(null_es.shape[0])
        group_tails_kernel[blocks, threads](null_es, columns, float(tie), scale_positive, scale_negative,
                                            fwer_positive.thresholds, fwer_negative.thresholds,
                                            fwer_positive.histogram, fwer_negative.histogram)
