"""Two-group statistics of one labelling from class moments (device-neutral).

Written once as plain Python and compiled for the CPU (:mod:`permenrich.backends.cpu`)
and for CUDA (``kernels/``) by :func:`permenrich._compile.jit_family`.
"""

from __future__ import annotations

from .._compile import inline
from .metrics import SCALAR_FUNCTIONS as METRIC_FUNCTIONS
from .metrics import _metric_from_moments  # noqa: F401  (bound by jit_family)


#: 2**-52: a bound on one float64 rounding relative to its result (twice the unit roundoff).
ROUNDING = 2.220446049250313e-16


@inline
def _class_mean(centred_mean, gene_mean, n_class):
    """A class's mean from the mean of its gene-centred values. The centring's rounding
    leaves a class of exact zeros (log-CPM, counts) about n x 1e-16 x the gene mean away
    from 0, and GSEA's standard-deviation floor takes 0.2 at a mean of exactly 0 but
    0.2 x |mean| elsewhere (2e-17 there: signal-to-noise -5.0 for -4.19); a mean within
    (n + 2) roundings of the gene mean of 0 is therefore exactly 0."""
    mean = centred_mean + gene_mean
    if abs(mean) <= (n_class + 2) * ROUNDING * abs(gene_mean):
        return 0.0
    return mean


@inline
def _statistic_from_sums(sum_drawn, sumsq_drawn, total_sum, total_sumsq, gene_mean, n_samples, n_drawn,
                         drawn_is_case, metric):
    """One gene's statistic from the drawn class's sums of the gene-centred values and of
    their squares (the other class is total minus drawn)."""
    n_other = n_samples - n_drawn
    if metric == 7 or metric == 11:
        # Mann-Whitney on mid-ranks: U - n_A n_B / 2 is the case class's sum of centred
        # mid-ranks, multiples of 1/2 summed exactly, so U is exact (tied U, frequent,
        # are equal floats) instead of rebuilt from a rounded mean rank.
        centred_u = sum_drawn if drawn_is_case else total_sum - sum_drawn
        n_case = n_drawn if drawn_is_case else n_other
        return centred_u if metric == 11 else centred_u + n_case * (n_samples - n_case) * 0.5
    # Moments of the gene-centred data; the difference of the means is taken there, and
    # the gene mean is added back for the metrics that use the means themselves.
    sum_other = total_sum - sum_drawn
    centred_d = sum_drawn * (1.0 / n_drawn)
    var_d = (sumsq_drawn - n_drawn * centred_d * centred_d) / (n_drawn - 1)
    centred_o = sum_other * (1.0 / n_other)
    var_o = (total_sumsq - sumsq_drawn - n_other * centred_o * centred_o) / (n_other - 1)
    mean_d = _class_mean(centred_d, gene_mean, n_drawn)
    mean_o = _class_mean(centred_o, gene_mean, n_other)
    # One rounding, of the quotient: with sums on a binary grid (integer data; see
    # backends.cpu.coarse_centre) the numerator is exact, so differences equal in exact
    # arithmetic, (9, 7) and (6, 4) over 6 and 6, are equal floats.
    difference = (sum_drawn * n_other - sum_other * n_drawn) / (n_drawn * n_other)
    if drawn_is_case:
        return _metric_from_moments(metric, mean_d, var_d, n_drawn, mean_o, var_o, n_other, difference)
    return _metric_from_moments(metric, mean_o, var_o, n_other, mean_d, var_d, n_drawn, -difference)


def _accumulate_rows(block, block_start, block_stop, gene_offset, drawn, cursor, gene_mean, sums, sumsqs):
    """Add one labelling's drawn samples that fall in ``[block_start, block_stop)`` to its
    running class sums, from position ``cursor`` of the sorted ``drawn`` on; return the
    new cursor.

    ``block`` rows are samples ``block_start..``, its columns genes ``gene_offset..``:
    a block of all genes (sample-major storage) or of all samples (gene-major storage,
    ``cursor`` 0). Either way each gene adds its drawn samples' centred values in sample
    order, so in-memory, streamed and GPU runs add the same numbers in the same order
    and give identical float64 sums.
    """
    n_columns = block.shape[1]
    j = cursor
    while j < drawn.shape[0] and drawn[j] < block_stop:
        row = block[drawn[j] - block_start]
        for c in range(n_columns):
            centred = row[c] - gene_mean[gene_offset + c]
            sums[gene_offset + c] += centred
            sumsqs[gene_offset + c] += centred * centred
        j += 1
    return j


def _accumulate_totals(block, gene_offset, gene_mean, centre, sums, sumsqs):
    """Sequential per-gene sums over all rows of ``block`` (samples in order): of the raw
    values when ``centre`` is False (for the means), else of the centred values and
    their squares (the totals the other class is derived from)."""
    n_rows, n_columns = block.shape
    for r in range(n_rows):
        for c in range(n_columns):
            value = block[r, c]
            if centre:
                value -= gene_mean[gene_offset + c]
                sumsqs[gene_offset + c] += value * value
            sums[gene_offset + c] += value


#: With the metric functions they call; compile together.
SCALAR_FUNCTIONS = (*METRIC_FUNCTIONS, _class_mean, _statistic_from_sums, _accumulate_rows, _accumulate_totals)
