"""CPU backend: NumPy/SciPy for the regular maths, Numba kernels for the irregular parts.

Kernels, each parallel over the permutations of a batch (``numba.prange`` over
contiguous chunks, per-thread scratch; a permutation's result never depends on which
thread computed it, nor on the tiles a kernel works in):

* :func:`whole_matrix_statistics` (in memory) and :func:`accumulate_block` /
  :func:`finish_statistics` (streamed) — class sums of a batch of two-group labellings,
  then the per-gene statistic (:mod:`permenrich.stats.two_group`);
* :func:`correlation_batch` and :func:`freedman_lane_batch` — dot products with shuffled
  vectors, summed in sample order (:func:`_shuffled_dots`;
  :mod:`permenrich.stats.correlation`, :mod:`permenrich.stats.covariates`);
  :func:`two_valued_correlation_batch` — the smaller class's sums for a 0/1 label;
* :func:`ks_scores` — rank (radix sort on value buckets), then the running-sum ES of every set from its
  members' ranks, sorted through a bitmap or, for sets that share genes heavily, by a
  walk down the ranked list, and scored in the closed form the GPU kernels use
  (:mod:`permenrich.enrich.running_sum`);
* :func:`random_set_scores` — the gene-set (gene-label) permutation null of preranked
  mode: random sets of each size drawn from the ranked list.

* :func:`linear_set_scores_batch` — ``mean``/``maxmean`` of every set
  (:mod:`permenrich.enrich.linear`).

The per-permutation bodies are device-neutral functions compiled here for the CPU and in
``kernels/`` for CUDA; these drivers only split a batch over threads.
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import Any

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from .._compile import cpu_family
from ..enrich.linear import SCALAR_FUNCTIONS as LINEAR_FUNCTIONS
from ..enrich.linear import LinearSetStatistic
from ..enrich.running_sum import SCALAR_FUNCTIONS as WALK_FUNCTIONS
from ..enrich.running_sum import _needs_power as _needs_power_py
from ..genesets import gene_to_sets
from ..stats import two_group
from ..stats.correlation import CorrelationStatistic
from ..stats.covariates import _freedman_lane_t as _freedman_lane_t_py
from ..stats.metrics import Metric, mid_ranks
from ..stats.ranking import CPU_PASSES, RADIX_SIZE

SET_STATISTIC_CODES = {"ks": 0, "mean": 1, "maxmean": 2}
#: Memberships per gene from which ES is scored by a walk down the ranked list rather
#: than by sorting each set's ranks (measured crossover about 3; cudaGSEA's shape is 59,
#: leukemia's Hallmark + KEGG 1.7).
WALK_MEMBERS_PER_GENE = 4
_cpu = cpu_family(dict.fromkeys(two_group.SCALAR_FUNCTIONS + WALK_FUNCTIONS + LINEAR_FUNCTIONS))
_linear_set_score = _cpu._linear_set_score
_accumulate_rows = _cpu._accumulate_rows
_accumulate_totals = _cpu._accumulate_totals
_statistic_from_sums = _cpu._statistic_from_sums
_hit_weight = _cpu._hit_weight
_needs_power = _cpu._needs_power
_ks_from_sorted_positions = _cpu._ks_from_sorted_positions
_ks_pair_from_sorted_positions = _cpu._ks_pair_from_sorted_positions
_sorted_positions_score = _cpu._sorted_positions_score
_random_set_null_row = _cpu._random_set_null_row
_freedman_lane_t = numba.njit(cache=True, error_model="numpy", inline="always")(_freedman_lane_t_py)
_rank_descending_by_value = _cpu._rank_descending_by_value


@numba.njit(cache=True, parallel=True, error_model="numpy")
def accumulate_block(block, block_start, block_stop, gene_offset, drawn_positions, cursors, gene_mean, sums,
                     sumsqs, n_chunks):
    """Add a block of the matrix to the class sums of every labelling of a batch."""
    n_batch = drawn_positions.shape[0]
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            cursors[b] = _accumulate_rows(block, block_start, block_stop, gene_offset, drawn_positions[b],
                                          cursors[b], gene_mean, sums[b], sumsqs[b])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, metric, out):
    for g in range(out.shape[0]):
        out[g] = _statistic_from_sums(sums[g], sumsqs[g], total_sum[g], total_sumsq[g], gene_mean[g], n_samples,
                                      n_drawn, drawn_is_case, metric)


@numba.njit(cache=True, error_model="numpy")
def _finish_genes_by_metric(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case,
                            metric, out):
    """``out[g]``: statistic of gene g from its drawn-class sums, with the metric a
    constant in each branch: the loop is then free of the metric's branches and runs in
    SIMD lanes (vector division and square root round exactly as scalar ones), 7.5x the
    per-gene branches for signal-to-noise."""
    if metric == 0:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 0, out)
    elif metric == 1:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 1, out)
    elif metric == 2:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 2, out)
    elif metric == 3:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 3, out)
    elif metric == 4:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 4, out)
    elif metric == 5:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 5, out)
    elif metric == 6:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 6, out)
    elif metric == 7:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 7, out)
    elif metric == 10:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, 10, out)
    else:
        _finish_genes(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case, metric,
                      out)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def finish_statistics(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, drawn_is_case,
                      metric, out):
    """``out[b, g]``: statistic of gene g from labelling b's drawn-class sums."""
    for b in numba.prange(sums.shape[0]):
        _finish_genes_by_metric(sums[b], sumsqs[b], total_sum, total_sumsq, gene_mean, n_samples, n_drawn,
                                drawn_is_case, metric, out[b])


#: Genes per tile of :func:`whole_matrix_statistics` (two sums of 1,024 float64 stay in
#: the L1 cache while the drawn samples' rows stream by).
STATISTIC_TILE_GENES = 1024


@numba.njit(cache=True, parallel=True, error_model="numpy")
def whole_matrix_statistics(samples_by_gene, drawn_positions, gene_mean, total_sum, total_sumsq, drawn_is_case,
                            metric, n_chunks, out):
    """:func:`accumulate_block` + :func:`finish_statistics` for a matrix held whole in
    memory, a tile of genes at a time: each gene adds its drawn samples' centred values
    in sample order, four per pass over the tile's sums (the same additions in the same
    order as :func:`permenrich.stats.two_group._accumulate_rows`: same bits), then the
    tile's statistics."""
    n_samples, n_genes = samples_by_gene.shape
    n_batch, n_drawn = drawn_positions.shape
    chunk = (n_batch + n_chunks - 1) // n_chunks
    in_fours = n_drawn - n_drawn % 4
    for c in numba.prange(n_chunks):
        sums = np.empty(STATISTIC_TILE_GENES)
        sumsqs = np.empty(STATISTIC_TILE_GENES)
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            drawn = drawn_positions[b]
            for g0 in range(0, n_genes, STATISTIC_TILE_GENES):
                g1 = min(n_genes, g0 + STATISTIC_TILE_GENES)
                width = g1 - g0
                mean = gene_mean[g0:g1]
                tile_sums = sums[:width]
                tile_sumsqs = sumsqs[:width]
                tile_sums[:] = 0.0
                tile_sumsqs[:] = 0.0
                for j in range(0, in_fours, 4):
                    row0 = samples_by_gene[drawn[j], g0:g1]
                    row1 = samples_by_gene[drawn[j + 1], g0:g1]
                    row2 = samples_by_gene[drawn[j + 2], g0:g1]
                    row3 = samples_by_gene[drawn[j + 3], g0:g1]
                    for w in range(width):
                        m = mean[w]
                        c0 = row0[w] - m
                        c1 = row1[w] - m
                        c2 = row2[w] - m
                        c3 = row3[w] - m
                        tile_sums[w] = (((tile_sums[w] + c0) + c1) + c2) + c3
                        tile_sumsqs[w] = (((tile_sumsqs[w] + c0 * c0) + c1 * c1) + c2 * c2) + c3 * c3
                for j in range(in_fours, n_drawn):
                    row = samples_by_gene[drawn[j], g0:g1]
                    for w in range(width):
                        centred = row[w] - mean[w]
                        tile_sums[w] += centred
                        tile_sumsqs[w] += centred * centred
                _finish_genes_by_metric(tile_sums, tile_sumsqs, total_sum[g0:g1], total_sumsq[g0:g1], mean, n_samples,
                                        n_drawn, drawn_is_case, metric, out[b, g0:g1])


#: Tiles of the shuffled dot products (:func:`_shuffled_dots`): shuffles sharing each
#: load of a matrix row, and genes per tile (8 x 1,024 sums, 64 KB per vector, stay in
#: the L2 cache while the samples stream by).
SHUFFLE_TILE = 8
DOT_TILE_GENES = 1024


@numba.njit(cache=True, error_model="numpy", inline="always")
def _shuffled_dots(by_sample, vectors, shuffles, first, rows, g0, g1, ys, dots):
    """``dots[p, v, :g1 - g0]``: dot products of genes ``g0..g1-1`` (columns of
    ``by_sample``) with vector v permuted by shuffle ``first + p``, for ``rows``
    shuffles, each sum adding its samples one by one in order (so that its bits do not
    depend on the tile, the batch or the thread), four samples per pass over the tile's
    sums. Each row of the matrix, loaded once, serves every shuffle and vector of the
    tile: 2.3x the untiled loop on leukemia's correlation, 3.4x on 20,639 x 200."""
    n_samples = by_sample.shape[0]
    n_vectors = vectors.shape[0]
    width = g1 - g0
    in_fours = n_samples - n_samples % 4
    for p in range(rows):
        for v in range(n_vectors):
            for j in range(n_samples):
                ys[p, v, j] = vectors[v, shuffles[first + p, j]]
    dots[:rows, :, :width] = 0.0
    for j in range(0, in_fours, 4):
        x0 = by_sample[j, g0:g1]
        x1 = by_sample[j + 1, g0:g1]
        x2 = by_sample[j + 2, g0:g1]
        x3 = by_sample[j + 3, g0:g1]
        for p in range(rows):
            for v in range(n_vectors):
                y0 = ys[p, v, j]
                y1 = ys[p, v, j + 1]
                y2 = ys[p, v, j + 2]
                y3 = ys[p, v, j + 3]
                sums = dots[p, v, :width]
                for w in range(width):
                    sums[w] = (((sums[w] + y0 * x0[w]) + y1 * x1[w]) + y2 * x2[w]) + y3 * x3[w]
    for j in range(in_fours, n_samples):
        x = by_sample[j, g0:g1]
        for p in range(rows):
            for v in range(n_vectors):
                y = ys[p, v, j]
                sums = dots[p, v, :width]
                for w in range(width):
                    sums[w] += y * x[w]


@numba.njit(cache=True, parallel=True, error_model="numpy")
def correlation_batch(genes_by_sample, phenotype, shuffles, n_chunks, out):
    """``out[b, g]``: r of gene g with shuffle b, the sums of
    :func:`permenrich.stats.correlation._shuffled_correlation` (samples in order), by
    :func:`_shuffled_dots`."""
    n_batch, n_samples = shuffles.shape
    n_genes = genes_by_sample.shape[1]
    vectors = phenotype.reshape((1, n_samples))
    n_groups = (n_batch + SHUFFLE_TILE - 1) // SHUFFLE_TILE
    chunk = (n_groups + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        ys = np.empty((SHUFFLE_TILE, 1, n_samples))
        dots = np.empty((SHUFFLE_TILE, 1, DOT_TILE_GENES))
        for group in range(c * chunk, min(n_groups, (c + 1) * chunk)):
            first = group * SHUFFLE_TILE
            rows = min(SHUFFLE_TILE, n_batch - first)
            for g0 in range(0, n_genes, DOT_TILE_GENES):
                g1 = min(n_genes, g0 + DOT_TILE_GENES)
                _shuffled_dots(genes_by_sample, vectors, shuffles, first, rows, g0, g1, ys, dots)
                for p in range(rows):
                    out[first + p, g0:g1] = dots[p, 0, :g1 - g0]


@numba.njit(cache=True, error_model="numpy")
def hit_weights(values, weight):
    """``|values| ** weight`` element by element, by the kernels' own hit weight (for the
    leading edge, which must see the weights the scores saw)."""
    out = np.empty(values.shape[0])
    for i in range(values.shape[0]):
        out[i] = _hit_weight(values[i], weight)
    return out


def closed_form_inputs(ranked_stat: np.ndarray, weight: float, set_statistic: str) -> tuple[np.ndarray, float]:
    """The ranked values and weight to give the closed-form scorers of a fixed ranked list
    (preranked mode's observed scores and gene-set permutation null): for the running sum
    with a weight that needs a power (not 0, 1 or 2), the hit weights themselves and
    weight 1 (|w| = w: the same values, so the same bits), computed once for the list
    rather than once per member of every random set."""
    ranked_stat = np.ascontiguousarray(ranked_stat, dtype=np.float64)
    if set_statistic == "ks" and _needs_power_py(weight):
        return hit_weights(ranked_stat, float(weight)), 1.0
    return ranked_stat, float(weight)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def linear_set_scores_batch(gene_scores, set_members, set_offsets, maxmean, n_chunks, out):
    """``out[b, s]``: ``mean`` (or ``maxmean``) of set s under row b of ``gene_scores``,
    by :func:`permenrich.enrich.linear._linear_set_score`."""
    n_batch = gene_scores.shape[0]
    n_sets = set_offsets.shape[0] - 1
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            for s in range(n_sets):
                out[b, s] = _linear_set_score(gene_scores, b, set_members, set_offsets[s], set_offsets[s + 1],
                                              maxmean)


#: Genes per tile of :func:`two_valued_correlation_batch` (2,048: 6% faster than 1,024 on
#: leukemia; a shuffle reads only its picked rows, so a tile may be wider than the products').
TWO_VALUED_TILE_GENES = 2048


@numba.njit(cache=True, parallel=True, error_model="numpy")
def two_valued_correlation_batch(genes_by_sample, phenotype, picked, step, other, gene_totals, shuffles, n_chunks,
                                 out):
    """``out[b, g]``: r of gene g with a two-valued phenotype shuffled by ``shuffles[b]``,
    :func:`permenrich.stats.correlation._two_valued_correlation`'s sums: the samples the
    shuffle gives ``picked`` (the smaller class), added one by one in order, eight per
    pass over a tile of 2,048 genes; 8 shuffles take their turns on a tile, reading its
    rows from cache. Half the work of :func:`correlation_batch`'s products for a
    balanced 0/1 label, less for an unbalanced one: 0.025 -> 0.017 ms per permutation on
    leukemia (24 of 48 samples)."""
    n_batch, n_samples = shuffles.shape
    n_genes = genes_by_sample.shape[1]
    n_picked = 0
    for j in range(n_samples):
        n_picked += phenotype[j] == picked
    in_eights = n_picked - n_picked % 8
    n_groups = (n_batch + SHUFFLE_TILE - 1) // SHUFFLE_TILE
    chunk = (n_groups + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        picks = np.empty((SHUFFLE_TILE, n_picked), dtype=np.int64)
        sums = np.empty(TWO_VALUED_TILE_GENES)
        for group in range(c * chunk, min(n_groups, (c + 1) * chunk)):
            first = group * SHUFFLE_TILE
            rows = min(SHUFFLE_TILE, n_batch - first)
            for p in range(rows):
                k = 0
                for j in range(n_samples):
                    if phenotype[shuffles[first + p, j]] == picked:
                        picks[p, k] = j
                        k += 1
            for g0 in range(0, n_genes, TWO_VALUED_TILE_GENES):
                g1 = min(n_genes, g0 + TWO_VALUED_TILE_GENES)
                width = g1 - g0
                totals = gene_totals[g0:g1]
                for p in range(rows):
                    tile = sums[:width]  # a view of the tile's width: 10% faster than indexing sums
                    tile[:] = 0.0
                    for q in range(0, in_eights, 8):
                        x0 = genes_by_sample[picks[p, q], g0:g1]
                        x1 = genes_by_sample[picks[p, q + 1], g0:g1]
                        x2 = genes_by_sample[picks[p, q + 2], g0:g1]
                        x3 = genes_by_sample[picks[p, q + 3], g0:g1]
                        x4 = genes_by_sample[picks[p, q + 4], g0:g1]
                        x5 = genes_by_sample[picks[p, q + 5], g0:g1]
                        x6 = genes_by_sample[picks[p, q + 6], g0:g1]
                        x7 = genes_by_sample[picks[p, q + 7], g0:g1]
                        for w in range(width):
                            tile[w] = (((((((tile[w] + x0[w]) + x1[w]) + x2[w]) + x3[w]) + x4[w]) + x5[w]) + x6[w]
                                       ) + x7[w]
                    for q in range(in_eights, n_picked):
                        x = genes_by_sample[picks[p, q], g0:g1]
                        for w in range(width):
                            tile[w] += x[w]
                    row = out[first + p, g0:g1]
                    for w in range(width):
                        row[w] = step * tile[w] + other * totals[w]


@numba.njit(cache=True, parallel=True, error_model="numpy")
def freedman_lane_batch(by_sample, vectors, shuffles, residual_ss, sxx, sqrt_sxx, df, n_chunks, out):
    """``out[b, g]``: the Freedman–Lane t of gene g under shuffle b
    (:mod:`permenrich.stats.covariates`): its dot products with the shuffled vectors
    (:func:`_shuffled_dots`, samples in order as the GPU's per-vector kernel adds them),
    then :func:`~permenrich.stats.covariates._freedman_lane_t`."""
    n_batch, n_samples = shuffles.shape
    n_genes = by_sample.shape[1]
    n_vectors = vectors.shape[0]
    n_groups = (n_batch + SHUFFLE_TILE - 1) // SHUFFLE_TILE
    chunk = (n_groups + n_chunks - 1) // n_chunks
    tile_genes = DOT_TILE_GENES // 2  # a few vectors per shuffle: half the genes keep the tile in L2
    for c in numba.prange(n_chunks):
        ys = np.empty((SHUFFLE_TILE, n_vectors, n_samples))
        dots = np.empty((SHUFFLE_TILE, n_vectors, tile_genes))
        for group in range(c * chunk, min(n_groups, (c + 1) * chunk)):
            first = group * SHUFFLE_TILE
            rows = min(SHUFFLE_TILE, n_batch - first)
            for g0 in range(0, n_genes, tile_genes):
                g1 = min(n_genes, g0 + tile_genes)
                _shuffled_dots(by_sample, vectors, shuffles, first, rows, g0, g1, ys, dots)
                for p in range(rows):
                    for w in range(g1 - g0):
                        explained = 0.0
                        for v in range(1, n_vectors):
                            explained = explained + dots[p, v, w] * dots[p, v, w]
                        out[first + p, g0 + w] = _freedman_lane_t(dots[p, 0, w], explained, residual_ss[g0 + w], sxx,
                                                                  sqrt_sxx, df)


@numba.njit(cache=True, error_model="numpy")
def accumulate_totals(block, gene_offset, gene_mean, centre, sums, sumsqs):
    _accumulate_totals(block, gene_offset, gene_mean, centre, sums, sumsqs)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _mark_rank(bits, summary, r):
    """Set bit ``r`` of a bitmap of the ranked list and its word's bit in the summary."""
    one = np.uint64(1)
    word = r >> 6
    bits[word] |= one << np.uint64(r & 63)
    summary[word >> 6] |= one << np.uint64(word & 63)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _marked_ranks(bits, summary, positions):
    """Write the set bits of a bitmap into ``positions`` in ascending order, clearing the
    bitmap and its summary (empty stretches of 64 words are skipped through the summary);
    return how many. ``positions`` needs one spare slot."""
    one = np.uint64(1)
    k = 0
    for block in range(summary.shape[0]):
        words = summary[block]
        summary[block] = 0
        while words:
            word = block * 64 + trailing_zeros(words)
            words &= words - one
            members = bits[word]
            bits[word] = 0
            # A word holds one or two members most often: take two without a branch (the
            # second counted only if real) and loop only for the rest. Halves the
            # mispredicted loop exits.
            base = word * 64
            positions[k] = base + trailing_zeros(members)
            members &= members - one
            k += 1
            positions[k] = base + trailing_zeros(members)
            k += members != 0
            members &= members - one
            while members:
                positions[k] = base + trailing_zeros(members)
                members &= members - one
                k += 1
    return k


@numba.njit(cache=True, error_model="numpy")
def _set_scores_from_ranks(stat_a, stat_b, order_a, order_b, weight, set_members, set_offsets, rank, ranked_weight,
                           gene_weight, bits, summary, positions, out_a, out_b):
    """``out_a[s]``, ``out_b[s]``: running-sum ES of every set under two rankings
    (``order_a``, ``order_b``; the same one twice for an odd last permutation), from each
    set's members' ranks: sorted through a bitmap of the ranked list per ranking, and
    scored in closed form
    (:func:`permenrich.enrich.running_sum._ks_pair_from_sorted_positions`, the steps of
    the GPU's ``_ks_from_sorted_positions``) with ``N_R`` added in member order: the
    walk's bits. Two rankings share each set's member loads and their sums are
    independent chains that the CPU overlaps (17% less time than one at a time).
    Scratch has a row per ranking; ``bits`` and ``summary`` must be zero and are left
    zero; ``positions`` has room for the largest set plus one.

    A weight that needs a power (not 0, 1 or 2) is computed once per gene (``gene_weight``,
    and ``ranked_weight`` in ranked order, which the closed form then takes with weight 1:
    |w| = w) rather than once per membership and ranking: the same values, so the same
    bits, for n_genes powers instead of 2 k per set (2.2x faster than the C library's
    pow per membership on the cudaGSEA shape at p = 1.5). The cheap weights stay per
    membership, on the statistics, which is about 5% faster for them."""
    n_genes = stat_a.shape[0]
    costly = _needs_power(weight)
    for position in range(n_genes):
        gene = order_a[position]
        rank[0, gene] = position
        w = _hit_weight(stat_a[gene], weight) if costly else stat_a[gene]
        ranked_weight[0, position] = w
        gene_weight[0, gene] = w
        gene = order_b[position]
        rank[1, gene] = position
        w = _hit_weight(stat_b[gene], weight) if costly else stat_b[gene]
        ranked_weight[1, position] = w
        gene_weight[1, gene] = w
    closed_form_weight = 1.0 if costly else weight
    for s in range(set_offsets.shape[0] - 1):
        norm_a = 0.0
        norm_b = 0.0
        n_infinite_a = 0
        n_infinite_b = 0
        for t in range(set_offsets[s], set_offsets[s + 1]):
            gene = set_members[t]
            w = _hit_weight(gene_weight[0, gene], closed_form_weight)
            if w == math.inf:
                n_infinite_a += 1
            else:
                norm_a += w
            w = _hit_weight(gene_weight[1, gene], closed_form_weight)
            if w == math.inf:
                n_infinite_b += 1
            else:
                norm_b += w
            _mark_rank(bits[0], summary[0], rank[0, gene])
            _mark_rank(bits[1], summary[1], rank[1, gene])
        k = _marked_ranks(bits[0], summary[0], positions[0])
        _marked_ranks(bits[1], summary[1], positions[1])
        out_a[s], out_b[s] = _ks_pair_from_sorted_positions(positions[0, :k], positions[1, :k], ranked_weight[0],
                                                            ranked_weight[1], closed_form_weight, norm_a, norm_b,
                                                            n_infinite_a, n_infinite_b, n_genes)


@numba.njit(cache=True, error_model="numpy")
def _set_scores_by_walk(stat, order, weight, set_offsets, gene_set_offsets, gene_set_ids, cursors, norms,
                        n_infinite, slots, ranked_weight, gene_weight, out):
    """:func:`_set_scores_from_ranks` for many sets per gene (sets sorted by gene index):
    one walk down the ranked list appends each gene's position to the slots of its
    sets, which leaves every set's positions in ascending order with no per-set sort;
    ``N_R`` is added gene by gene, which for members sorted by gene index is member order.
    Same bits, at about 5 ns against 7 per membership when genes average dozens of sets
    (the cudaGSEA shape); slower when they average one or two, where a walk pays for
    every gene outside all sets."""
    n_genes = stat.shape[0]
    n_sets = set_offsets.shape[0] - 1
    for s in range(n_sets):
        cursors[s] = set_offsets[s]
        norms[s] = 0.0
        n_infinite[s] = 0
    for position in range(n_genes):
        gene = order[position]
        w = _hit_weight(stat[gene], weight)  # once per gene (see the pair version)
        ranked_weight[position] = w
        gene_weight[gene] = w
        for t in range(gene_set_offsets[gene], gene_set_offsets[gene + 1]):
            s = gene_set_ids[t]
            slot = cursors[s]
            slots[slot] = position
            cursors[s] = slot + 1
    for gene in range(n_genes):
        w = gene_weight[gene]
        infinite = w == math.inf
        for t in range(gene_set_offsets[gene], gene_set_offsets[gene + 1]):
            s = gene_set_ids[t]
            if infinite:
                n_infinite[s] += 1
            else:
                norms[s] += w
    for s in range(n_sets):
        out[s] = _ks_from_sorted_positions(slots[set_offsets[s]:set_offsets[s + 1]], ranked_weight, 1.0, norms[s],
                                           n_infinite[s], n_genes)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def ks_scores(stats, weight, set_members, set_offsets, largest_set, gene_set_offsets, gene_set_ids, walk,
              n_chunks, out):
    """``out[b, s]``: running-sum ES of set s when genes are ranked by ``stats[b]``;
    ``walk`` picks :func:`_set_scores_by_walk` (given the inverse index) over
    :func:`_set_scores_from_ranks` (two permutations at a time): the same bits either way."""
    n_batch, n_genes = stats.shape
    n_sets = set_offsets.shape[0] - 1
    n_words = (n_genes + 63) // 64
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        first, stop = c * chunk, min(n_batch, (c + 1) * chunk)
        order = np.empty((2, n_genes), dtype=np.int64)
        keys = np.empty(n_genes, dtype=np.uint64)
        keys_tmp = np.empty(n_genes, dtype=np.uint64)
        order_tmp = np.empty(n_genes, dtype=np.int64)
        histogram = np.empty((CPU_PASSES, RADIX_SIZE), dtype=np.int64)
        stats_bits = stats.view(np.uint64)
        if walk:
            ranked_weight = np.empty(n_genes)
            gene_weight = np.empty(n_genes)
            cursors = np.empty(n_sets, dtype=np.int64)
            norms = np.empty(n_sets)
            n_infinite = np.empty(n_sets, dtype=np.int64)
            slots = np.empty(set_members.shape[0], dtype=np.int32)
            for b in range(first, stop):
                _rank_descending_by_value(stats[b], stats_bits[b], order[0], keys, keys_tmp, order_tmp, histogram)
                _set_scores_by_walk(stats[b], order[0], weight, set_offsets, gene_set_offsets, gene_set_ids, cursors,
                                    norms, n_infinite, slots, ranked_weight, gene_weight, out[b])
        else:
            rank = np.empty((2, n_genes), dtype=np.int32)  # half the cache lines of int64
            ranked_weights = np.empty((2, n_genes))
            gene_weights = np.empty((2, n_genes))
            bits = np.zeros((2, n_words), dtype=np.uint64)
            summary = np.zeros((2, (n_words + 63) // 64), dtype=np.uint64)
            positions = np.empty((2, largest_set + 1), dtype=np.int64)
            for b in range(first, stop, 2):
                b_next = min(b + 1, stop - 1)
                _rank_descending_by_value(stats[b], stats_bits[b], order[0], keys, keys_tmp, order_tmp, histogram)
                _rank_descending_by_value(stats[b_next], stats_bits[b_next], order[1], keys, keys_tmp, order_tmp,
                                          histogram)
                _set_scores_from_ranks(stats[b], stats[b_next], order[0], order[1], weight, set_members, set_offsets,
                                       rank, ranked_weights, gene_weights, bits, summary, positions, out[b],
                                       out[b_next])


@numba.njit(cache=True, parallel=True, error_model="numpy")
def random_set_scores(seed, perm_start, ranked_stat, weight, statistic, sizes, n_chunks, out):
    """``out[b, i]``: statistic of a random set of ``sizes[i]`` genes (``sizes`` ascending)
    under gene-set permutation ``perm_start + b``: the prefixes of one random sequence
    (:func:`permenrich.enrich.running_sum._random_set_null_row`)."""
    n_batch = out.shape[0]
    largest = sizes[sizes.shape[0] - 1]
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        pool = np.arange(ranked_stat.shape[0])
        sequence = np.empty(largest, dtype=np.int64)
        prefix = np.empty(largest, dtype=np.int64)
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            _random_set_null_row(seed, perm_start + b, ranked_stat, weight, statistic, sizes, pool, sequence, prefix,
                                 out[b])


@numba.njit(cache=True, error_model="numpy")
def _sorted_positions_scores(members, offsets, ranked_stat, weight, statistic, out):
    n_genes = ranked_stat.shape[0]
    for s in range(offsets.shape[0] - 1):
        positions = np.sort(members[offsets[s]:offsets[s + 1]])
        out[s] = _sorted_positions_score(positions, ranked_stat, weight, statistic, n_genes)


def sorted_positions_scores(members: np.ndarray, offsets: np.ndarray, ranked_stat: np.ndarray, weight: float,
                            set_statistic: str) -> np.ndarray:
    """Set statistics of sets given by their members' positions in a ranked list, with the
    closed form the gene-set permutation null uses (:func:`random_set_scores`, and the
    same device function on the GPU): observed and null scores take one arithmetic path.

    Parameters
    ----------
    members, offsets : ndarray of int64
        Flat set index whose members are ranked positions (0 = top).
    ranked_stat : ndarray of float64, shape (n_genes,)
        Scores in ranked (decreasing) order.
    weight : float
    set_statistic : {"ks", "mean", "maxmean"}

    Returns
    -------
    ndarray of float64, shape (n_sets,)
    """
    out = np.empty(np.asarray(offsets).size - 1)
    values, weight = closed_form_inputs(ranked_stat, weight, set_statistic)
    _sorted_positions_scores(np.ascontiguousarray(members, dtype=np.int64),
                             np.ascontiguousarray(offsets, dtype=np.int64), values, weight,
                             SET_STATISTIC_CODES[set_statistic], out)
    return out


class InMemoryMatrix:
    """A matrix held in memory, served as one block of all samples and genes."""

    storage = "in memory"

    def __init__(self, values: np.ndarray) -> None:
        # samples x genes, C order: a sample's values are contiguous for the row gathers
        self.samples_by_gene = np.ascontiguousarray(np.asarray(values, dtype=np.float64).T)
        self.n_samples, self.n_genes = self.samples_by_gene.shape

    def blocks(self) -> Any:
        yield 0, self.n_samples, 0, self.n_genes, self.samples_by_gene


#: :func:`class_moment_totals` of the matrices still alive: a streamed matrix's totals
#: are read once per run, however many users they have (the statistic of the backend,
#: the t tests' textbook p-values).
_MOMENT_TOTALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def class_moment_totals(matrix: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-gene mean, and sums of the centred values and of their squares over all
    samples, of a matrix served in blocks (two passes, sequential sums in sample order;
    computed once per matrix object, and shared: callers must not write into them).

    Shared by the CPU and GPU backends: the other class's moments are these totals minus
    the drawn class's.
    """
    if matrix in _MOMENT_TOTALS:
        return _MOMENT_TOTALS[matrix]
    n_genes, n_samples = matrix.n_genes, matrix.n_samples
    zeros = np.zeros(n_genes)
    sums, squares = np.zeros(n_genes), np.zeros(n_genes)
    for _, _, gene_start, _, block in matrix.blocks():  # x - 0 is x: the raw sums and squares
        accumulate_totals(block, gene_start, zeros, True, sums, squares)
    gene_mean = sums / n_samples
    # The spread only sizes the centre's grid, so the raw squares' cancellation does no
    # harm (see coarse_centre); a spread it wipes out keeps the mean itself.
    centre = coarse_centre(gene_mean, squares / n_samples - gene_mean * gene_mean)
    total_sum, total_sumsq = np.zeros(n_genes), np.zeros(n_genes)
    for _, _, gene_start, _, block in matrix.blocks():
        accumulate_totals(block, gene_start, centre, True, total_sum, total_sumsq)
    _MOMENT_TOTALS[matrix] = centre, total_sum, total_sumsq
    return centre, total_sum, total_sumsq


#: Binary digits below a gene's standard deviation kept in its centre (:func:`coarse_centre`).
CENTRE_BITS = 20


def coarse_centre(gene_mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Each gene's centre for the class sums: its mean rounded to a multiple of a power of
    two about 2**-20 of its standard deviation. Integer, half-integer (mid-ranks) and
    other values on a binary grid then centre exactly and their class sums are exact, so
    classes with equal sums get equal means and equal statistics whatever values they
    hold (ties that the ranking's row-index rule must see as ties: with the mean itself,
    x - mean rounds, and genes with class sums (6, 4) had differences of means 1 ulp
    apart); a class of exact zeros has a mean of exactly 0. The centre is within 2**-20
    standard deviations of the mean, so the sums of squares lose nothing to it. A gene
    without spread keeps its mean. ``variance`` need only be of the right size: one too
    large by the cancellation of raw sums of squares, about n x 1e-16 x mean**2, still puts
    the centre within a fraction of a standard deviation of the mean, where the sums of
    squares lose nothing either."""
    exponent = np.frexp(np.sqrt(np.where(variance > 0, variance, 1.0)))[1]
    grid = np.ldexp(1.0, exponent - 1 - CENTRE_BITS)
    return np.where((variance > 0) & np.isfinite(gene_mean), np.round(gene_mean / grid) * grid, gene_mean)


def drawn_class_sums(matrix: Any, gene_mean: np.ndarray, drawn_positions: np.ndarray,
                     n_chunks: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Each labelling's sums of its drawn samples' gene-centred values and of their
    squares, shape (n_batch, n_genes), over a matrix served in blocks (one pass;
    sequential sums in sample order)."""
    n_batch = drawn_positions.shape[0]
    sums = np.zeros((n_batch, matrix.n_genes))
    sumsqs = np.zeros((n_batch, matrix.n_genes))
    cursors = np.zeros(n_batch, dtype=np.int64)
    for sample_start, sample_stop, gene_start, gene_stop, block in matrix.blocks():
        if gene_stop - gene_start < matrix.n_genes:
            cursors[:] = 0  # a gene block holds every sample: walk each labelling from its start
        accumulate_block(block, sample_start, sample_stop, gene_start, drawn_positions, cursors, gene_mean, sums,
                         sumsqs, n_chunks)
    return sums, sumsqs


def observed_class_moments(matrix: Any, is_case: np.ndarray, code: int
                           ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, int]:
    """The two-group statistic ``code`` of the observed labelling and its class variances
    (ddof 1), from the same sums as the permutation statistics: (statistic, var_case,
    n_case, var_control, n_control), per gene.

    For a matrix served in blocks (in memory or streamed: the same bits): the totals of
    :func:`class_moment_totals` (shared with the run's statistic), then one pass for the
    case class's sums."""
    gene_mean, total_sum, total_sumsq = class_moment_totals(matrix)
    case = np.flatnonzero(is_case).astype(np.int64)[None, :]
    sums, sumsqs = drawn_class_sums(matrix, gene_mean, case)
    n_case, n_control = case.shape[1], matrix.n_samples - case.shape[1]
    statistic = np.empty((1, matrix.n_genes))
    finish_statistics(sums, sumsqs, total_sum, total_sumsq, gene_mean, matrix.n_samples, n_case, True, code,
                      statistic)
    # the variances as _statistic_from_sums forms them (the other class: totals minus the case's)
    mean_case = sums[0] * (1.0 / n_case)
    var_case = (sumsqs[0] - n_case * mean_case * mean_case) / (n_case - 1)
    mean_control = (total_sum - sums[0]) * (1.0 / n_control)
    var_control = (total_sumsq - sumsqs[0] - n_control * mean_control * mean_control) / (n_control - 1)
    return statistic[0], var_case, n_case, var_control, n_control


class _TwoGroupStatistic:
    """Two-group statistics from class moments of the gene-centred values (centring keeps
    float64 sums of squares exact enough for intensities in the thousands).

    ``matrix`` yields blocks ``(sample_start, sample_stop, gene_start, gene_stop,
    values)`` covering every (sample, gene) once: one block in memory
    (:class:`InMemoryMatrix`), or blocks read from disk for every batch
    (:class:`permenrich.streaming.StreamedMatrix`). Means and totals are sequential sums
    in sample order, so both give identical statistics.
    """

    def __init__(self, matrix: Any, drawn_is_case: bool, metric: Metric, backend: CpuBackend) -> None:
        self.matrix = matrix
        self.gene_mean, self.total_sum, self.total_sumsq = class_moment_totals(matrix)
        self.drawn_is_case = bool(drawn_is_case)
        self.code = metric.code
        self.backend = backend

    def batch(self, drawn_positions: np.ndarray) -> np.ndarray:
        drawn_positions = np.ascontiguousarray(drawn_positions, dtype=np.int64)
        n_batch, n_drawn = drawn_positions.shape
        n_genes = self.matrix.n_genes
        chunks = self.backend.chunks(n_batch)
        if isinstance(self.matrix, InMemoryMatrix):
            out = np.empty((n_batch, n_genes))
            whole_matrix_statistics(self.matrix.samples_by_gene, drawn_positions, self.gene_mean, self.total_sum,
                                    self.total_sumsq, self.drawn_is_case, self.code, chunks, out)
            return out
        sums, sumsqs = drawn_class_sums(self.matrix, self.gene_mean, drawn_positions, chunks)
        out = np.empty((n_batch, n_genes))
        finish_statistics(sums, sumsqs, self.total_sum, self.total_sumsq, self.gene_mean, self.matrix.n_samples,
                          n_drawn, self.drawn_is_case, self.code, out)
        return out


class _CorrelationKernel:
    """Correlation statistics of shuffled phenotypes on the CPU (fixed summation order)."""

    def __init__(self, statistic: CorrelationStatistic, backend: CpuBackend) -> None:
        self.statistic = statistic
        self.backend = backend

    def batch(self, shuffles: np.ndarray) -> np.ndarray:
        shuffles = np.ascontiguousarray(shuffles, dtype=np.int64)
        statistic = self.statistic
        out = np.empty((shuffles.shape[0], statistic.n_genes))
        if statistic.two_valued:
            two_valued_correlation_batch(statistic.genes_by_sample, statistic.phenotype, statistic.picked,
                                         statistic.step, statistic.other, statistic.gene_totals, shuffles,
                                         self.backend.chunks(shuffles.shape[0]), out)
        else:
            correlation_batch(statistic.genes_by_sample, statistic.phenotype, shuffles,
                              self.backend.chunks(shuffles.shape[0]), out)
        if statistic.gene_scale is not None:
            out *= statistic.gene_scale  # Spearman's exact sums to r (one rounding, as on the GPU)
        return out


class _CovariateKernel:
    """Freedman–Lane t-statistics on the CPU: the dot products with permuted vectors of
    :class:`permenrich.stats.covariates.CovariateStatistic`, summed in sample order."""

    def __init__(self, statistic: Any, backend: CpuBackend) -> None:
        self.statistic = statistic
        self.backend = backend

    def batch(self, shuffles: np.ndarray) -> np.ndarray:
        shuffles = np.ascontiguousarray(shuffles, dtype=np.int64)
        statistic = self.statistic
        out = np.empty((shuffles.shape[0], statistic.n_genes))
        freedman_lane_batch(statistic.residuals_by_sample, statistic.vectors, shuffles, statistic.residual_ss,
                            statistic.sxx, statistic.sqrt_sxx, float(statistic.df),
                            self.backend.chunks(shuffles.shape[0]), out)
        return out


class _KsStatistic:
    def __init__(self, set_members: np.ndarray, set_offsets: np.ndarray, weight: float, n_genes: int,
                 backend: CpuBackend) -> None:
        self.members = np.ascontiguousarray(set_members, dtype=np.int64)
        self.offsets = np.ascontiguousarray(set_offsets, dtype=np.int64)
        self.largest = int(np.diff(self.offsets).max()) if self.offsets.size > 1 else 0
        self.weight = float(weight)
        self.backend = backend
        self.n_genes = int(n_genes)
        # The walk pays per gene and the bitmap per member: walk when genes average
        # WALK_MEMBERS_PER_GENE sets or more, and members are in gene order (as the
        # set index stores them), so that the walk adds N_R in member order too.
        increasing = np.diff(self.members) > 0  # [i]: members i and i + 1 in order
        starts = self.offsets[1:-1]
        increasing[starts[(starts > 0) & (starts < self.members.size)] - 1] = True  # a set boundary
        ascending = bool(increasing.all())
        self.walk = ascending and self.members.size >= WALK_MEMBERS_PER_GENE * max(1, self.n_genes)
        if self.walk:
            self.gene_set_offsets, self.gene_set_ids = gene_to_sets(self.members, self.offsets, self.n_genes)
        else:
            self.gene_set_offsets = np.zeros(1, dtype=np.int64)
            self.gene_set_ids = np.zeros(0, dtype=np.int32)

    def scores(self, stats: np.ndarray) -> np.ndarray:
        stats = np.ascontiguousarray(stats, dtype=np.float64)
        out = np.empty((stats.shape[0], self.offsets.size - 1))
        ks_scores(stats, self.weight, self.members, self.offsets, self.largest, self.gene_set_offsets,
                  self.gene_set_ids, self.walk, self.backend.chunks(stats.shape[0]), out)
        return out


class CpuBackend:
    """NumPy + SciPy + Numba; the reference backend and the one CI runs.

    Parameters
    ----------
    threads
        Threads for the Numba kernels (``None``: Numba's default, all cores).
    """

    name = "cpu"
    xp = np
    #: Permutations per kernel call inside :meth:`score`: bounds the gene-statistic buffer.
    chunk_rows = 256

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._statistic: Any = None
        self._set_statistic: Any = None

    def chunks(self, n_rows: int) -> int:
        """Work chunks for ``n_rows`` permutations: a few per thread evens out the load."""
        return max(1, min(n_rows, 4 * numba.get_num_threads()))

    # -- configuration ------------------------------------------------------------------
    def prepare_statistic(self, values: np.ndarray, metric: Metric, *, drawn_is_case: bool = True,
                          phenotype: np.ndarray | None = None, covariates: Any = None) -> None:
        """Per-gene statistic for labellings of ``values`` (n_genes, n_samples); with
        ``covariates`` (a :class:`~permenrich.stats.covariates.CovariateStatistic`), the
        Freedman–Lane t of the phenotype."""
        # The statistic objects reach the backend (its thread chunks) through a weak proxy:
        # a strong reference back would be a cycle that keeps the backend and its copy of
        # the matrix alive after the run, until Python's cyclic collector happens to run
        # (a memory audit measured +400 MB per contrast of a one-vs-rest screen).
        backend = weakref.proxy(self)
        if covariates is not None:
            self._statistic = _CovariateKernel(covariates, backend)
            return
        if metric.kind == "correlation":
            self._statistic = _CorrelationKernel(CorrelationStatistic(values, phenotype,
                                                                      spearman=metric.rank_transform), backend)
            return
        if hasattr(values, "blocks"):  # a streamed matrix
            matrix = values
        else:
            values = np.asarray(values, dtype=np.float64)
            matrix = InMemoryMatrix(mid_ranks(values) if metric.rank_transform else values)
        self._statistic = _TwoGroupStatistic(matrix, drawn_is_case, metric, backend)

    def prepare_sets(self, set_statistic: str, set_members: np.ndarray, set_offsets: np.ndarray, weight: float,
                     n_genes: int) -> None:
        """Set statistic (``ks``, ``mean`` or ``maxmean``) over the flat set index."""
        if set_statistic == "ks":
            self._set_statistic = _KsStatistic(set_members, set_offsets, weight, n_genes, weakref.proxy(self))
        else:
            self._set_statistic = LinearSetStatistic(set_statistic, np.asarray(set_members, dtype=np.int64),
                                                     np.asarray(set_offsets, dtype=np.int64), np,
                                                     functools.partial(CpuBackend._linear_scores, weakref.proxy(self)))

    def _linear_scores(self, gene_scores: np.ndarray, set_members: np.ndarray, set_offsets: np.ndarray,
                       maxmean: bool) -> np.ndarray:
        gene_scores = np.ascontiguousarray(gene_scores, dtype=np.float64)
        out = np.empty((gene_scores.shape[0], set_offsets.size - 1))
        linear_set_scores_batch(gene_scores, set_members, set_offsets, maxmean, self.chunks(gene_scores.shape[0]),
                                out)
        return out

    # -- kernels --------------------------------------------------------------------------
    def labellings(self, plan: Any, start: int, stop: int) -> np.ndarray:
        """Labellings ``[start, stop)`` of ``plan`` (drawn on the host)."""
        return plan.labellings(start, stop)

    def gene_statistics(self, labellings: np.ndarray) -> np.ndarray:
        """Per-gene statistics, shape (n_batch, n_genes)."""
        with self._threads():
            return self._statistic.batch(labellings)

    def set_scores(self, stats: np.ndarray) -> np.ndarray:
        """Set statistics, shape (n_batch, n_sets), of gene statistics (n_batch, n_genes)."""
        with self._threads():
            return self._set_statistic.scores(stats)

    def score(self, labellings: np.ndarray, keep_stat: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Set statistics for each labelling, shape (n_batch, n_sets); with ``keep_stat``
        also the gene statistics (n_batch, n_genes)."""
        es_parts, stat_parts = [], []
        # A streamed matrix is read once per call: take the whole batch (sized for it).
        rows = self.chunk_rows if self._statistic_in_memory() else max(1, labellings.shape[0])
        with self._threads():
            for start in range(0, labellings.shape[0], rows):
                stats = self._statistic.batch(labellings[start:start + rows])
                es_parts.append(self._set_statistic.scores(stats))
                if keep_stat:
                    stat_parts.append(stats)
        es = np.concatenate(es_parts) if len(es_parts) > 1 else es_parts[0]
        return es, (np.concatenate(stat_parts) if keep_stat else None)

    def random_set_null(self, seed: int, perm_start: int, perm_stop: int, ranked_stat: np.ndarray,
                        weight: float, set_statistic: str, sizes: np.ndarray) -> np.ndarray:
        """Gene-set permutation null: statistic of random sets of each size, shape
        (n_batch, n_sizes)."""
        out = np.empty((perm_stop - perm_start, sizes.size))
        values, weight = closed_form_inputs(ranked_stat, weight, set_statistic)
        with self._threads():
            random_set_scores(np.uint64(seed), perm_start, values, weight, SET_STATISTIC_CODES[set_statistic],
                              np.ascontiguousarray(sizes, dtype=np.int64), self.chunks(out.shape[0]), out)
        return out

    def _statistic_in_memory(self) -> bool:
        return not (isinstance(self._statistic, _TwoGroupStatistic)
                    and not isinstance(self._statistic.matrix, InMemoryMatrix))

    @staticmethod
    def to_host(array: np.ndarray) -> np.ndarray:
        return array

    def _threads(self) -> Any:
        return NumbaThreads(self.threads)

    def describe(self) -> dict:
        return {"backend": "cpu", "threads": numba.get_num_threads() if self.threads is None else self.threads,
                "numba_threading_layer": numba.config.THREADING_LAYER}


class NumbaThreads:
    """Temporarily set Numba's thread count (restored on exit)."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        self.previous = numba.get_num_threads()
        if self.threads is not None:
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))

    def __exit__(self, *exc: object) -> None:
        numba.set_num_threads(self.previous)
