"""CPU backend: one fused Numba kernel per batch of permutations.

Per permutation, on one thread with its own scratch:

1. class sums: gather the drawn class's sample rows of the gene-centred matrix (and of its
   squares) and add them, vectorised over genes; the other class is total minus drawn;
2. the metric for every gene (:func:`permenrich.stats.metrics.metric_from_moments`);
3. the ranking (:func:`permenrich.stats.ranking.rank_descending`, radix sort);
4. the enrichment score of every set in one walk down the ranked genes through the
   gene -> sets index, using the closed form of :mod:`permenrich.enrich.running_sum`.

Threads split the batch into contiguous chunks (``numba.prange``); a permutation's result
does not depend on which thread computed it.
"""

from __future__ import annotations

import numba
import numpy as np

from ..enrich.running_sum import ES_TIE_TOLERANCE
from ..stats.metrics import metric_from_moments
from ..stats.ranking import _RADIX_PASSES, _RADIX_SIZE, rank_descending


@numba.njit(cache=True, error_model="numpy")
def _gene_statistics(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                     n_samples, drawn, drawn_is_case, metric, sum_drawn, sumsq_drawn, stat):
    """Metric of every gene for one labelling given by the drawn class's positions."""
    n_genes = samples_by_gene.shape[1]
    n_drawn = drawn.shape[0]
    n_other = n_samples - n_drawn
    sum_drawn[:] = 0.0
    sumsq_drawn[:] = 0.0
    for j in range(n_drawn):
        row = samples_by_gene[drawn[j]]
        row_sq = squares_by_gene[drawn[j]]
        for g in range(n_genes):
            sum_drawn[g] += row[g]
            sumsq_drawn[g] += row_sq[g]
    inv_drawn = 1.0 / n_drawn
    inv_other = 1.0 / n_other
    for g in range(n_genes):
        # Moments of the gene-centred data; the mean is added back for metrics that use it.
        mean_d = sum_drawn[g] * inv_drawn
        var_d = (sumsq_drawn[g] - n_drawn * mean_d * mean_d) / (n_drawn - 1)
        sum_o = total_sum[g] - sum_drawn[g]
        mean_o = sum_o * inv_other
        var_o = (total_sumsq[g] - sumsq_drawn[g] - n_other * mean_o * mean_o) / (n_other - 1)
        mean_d += gene_mean[g]
        mean_o += gene_mean[g]
        if drawn_is_case:
            stat[g] = metric_from_moments(metric, mean_d, var_d, n_drawn, mean_o, var_o, n_other)
        else:
            stat[g] = metric_from_moments(metric, mean_o, var_o, n_other, mean_d, var_d, n_drawn)


# Per-set walk state, one row of a (n_sets, 8) array so that a set's state is one cache
# line: reciprocal of N_R, reciprocal of N - k, hits so far, cumulative hit weight,
# running maximum and minimum, and the positions where they were first reached.
_INV_NORM, _MISS_STEP, _HITS, _CUMULATIVE, _MAX, _MIN, _MAX_AT, _MIN_AT = range(8)
WALK_STATE_WIDTH = 8


@numba.njit(cache=True, error_model="numpy")
def _enrichment_scores(stat, order, weight, set_members, set_offsets, gene_set_offsets,
                       gene_set_ids, gene_weight, state, out):
    """ES of every set for one ranking, in one walk over the ranked genes."""
    n_genes = stat.shape[0]
    n_sets = set_offsets.shape[0] - 1
    for g in range(n_genes):
        a = abs(stat[g])
        if weight == 1.0:
            gene_weight[g] = a
        elif weight == 0.0:
            gene_weight[g] = 1.0
        else:
            gene_weight[g] = a ** weight
    for s in range(n_sets):
        total = 0.0
        for t in range(set_offsets[s], set_offsets[s + 1]):
            total += gene_weight[set_members[t]]
        # Reciprocals turn the walk's divisions into multiplications; a set whose members
        # all weigh 0 keeps its running sum <= 0 and is reported as ES 0 below.
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
            before = cumulative * row[_INV_NORM] - miss_part
            # Extremes move only beyond the tie tolerance: the first of tied extremes
            # counts. Selects rather than branches: these comparisons are unpredictable.
            lower = before < row[_MIN] - ES_TIE_TOLERANCE
            row[_MIN] = before if lower else row[_MIN]
            row[_MIN_AT] = position - 1.0 if lower else row[_MIN_AT]
            cumulative += w
            row[_CUMULATIVE] = cumulative
            top = cumulative * row[_INV_NORM] - miss_part
            higher = top > row[_MAX] + ES_TIE_TOLERANCE
            row[_MAX] = top if higher else row[_MAX]
            row[_MAX_AT] = position if higher else row[_MAX_AT]
            row[_HITS] += 1.0
    for s in range(n_sets):
        if state[s, _INV_NORM] == 0.0:
            out[s] = 0.0
            continue
        # Larger magnitude wins; on a tie (within rounding), the extreme reached first.
        margin = state[s, _MAX] + state[s, _MIN]
        if margin > ES_TIE_TOLERANCE or (margin >= -ES_TIE_TOLERANCE and state[s, _MAX_AT] < state[s, _MIN_AT]):
            out[s] = state[s, _MAX]
        else:
            out[s] = state[s, _MIN]


@numba.njit(cache=True, parallel=True, error_model="numpy")
def score_labellings(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                     drawn_positions, drawn_is_case, metric, weight, set_members, set_offsets,
                     gene_set_offsets, gene_set_ids, n_chunks, out_es, out_stat):
    """ES of every set (``out_es[b, s]``) for each labelling ``b`` of a batch.

    ``out_stat`` has shape (n_batch, n_genes) to keep each labelling's gene statistics, or
    (0, 0) to skip them.
    """
    n_samples, n_genes = samples_by_gene.shape
    n_batch = drawn_positions.shape[0]
    n_sets = set_offsets.shape[0] - 1
    keep_stat = out_stat.shape[0] == n_batch
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        sum_drawn = np.empty(n_genes)
        sumsq_drawn = np.empty(n_genes)
        stat = np.empty(n_genes)
        order = np.empty(n_genes, dtype=np.int64)
        keys = np.empty(n_genes, dtype=np.uint64)
        keys_tmp = np.empty(n_genes, dtype=np.uint64)
        order_tmp = np.empty(n_genes, dtype=np.int64)
        histogram = np.empty((_RADIX_PASSES, _RADIX_SIZE), dtype=np.int64)
        gene_weight = np.empty(n_genes)
        state = np.empty((n_sets, WALK_STATE_WIDTH))
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            _gene_statistics(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                             n_samples, drawn_positions[b], drawn_is_case, metric,
                             sum_drawn, sumsq_drawn, stat)
            if keep_stat:
                out_stat[b, :] = stat
            rank_descending(stat, order, keys, keys_tmp, order_tmp, histogram)
            _enrichment_scores(stat, order, weight, set_members, set_offsets, gene_set_offsets,
                               gene_set_ids, gene_weight, state, out_es[b])


class CpuBackend:
    """NumPy + Numba kernels; the reference backend and the one CI runs.

    Parameters
    ----------
    threads
        Numba threads for the batch kernel (``None``: Numba's default, all cores).
    """

    name = "cpu"
    xp = np

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def prepare(self, values: np.ndarray, drawn_is_case: bool, metric_code: int, weight: float,
                set_members: np.ndarray, set_offsets: np.ndarray, gene_set_offsets: np.ndarray,
                gene_set_ids: np.ndarray) -> None:
        """Keep what every batch needs: gene-centred matrix (samples x genes), its squares
        and the totals; centring keeps float64 sums of squares exact enough for
        intensities in the thousands."""
        values = np.asarray(values, dtype=np.float64)
        self.gene_mean = values.mean(axis=1)
        centred = values - self.gene_mean[:, None]
        self.samples_by_gene = np.ascontiguousarray(centred.T)
        self.squares_by_gene = self.samples_by_gene ** 2
        self.total_sum = self.samples_by_gene.sum(axis=0)
        self.total_sumsq = self.squares_by_gene.sum(axis=0)
        self.drawn_is_case = bool(drawn_is_case)
        self.metric_code = int(metric_code)
        self.weight = float(weight)
        self.set_members = np.ascontiguousarray(set_members, dtype=np.int64)
        self.set_offsets = np.ascontiguousarray(set_offsets, dtype=np.int64)
        self.gene_set_offsets = np.ascontiguousarray(gene_set_offsets, dtype=np.int64)
        self.gene_set_ids = np.ascontiguousarray(gene_set_ids, dtype=np.int64)

    def score(self, drawn_positions: np.ndarray, keep_stat: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """ES of every set for each labelling (rows of ``drawn_positions``).

        Returns
        -------
        es : ndarray, shape (n_batch, n_sets)
        stat : ndarray, shape (n_batch, n_genes), or None unless ``keep_stat``
        """
        drawn_positions = np.ascontiguousarray(drawn_positions, dtype=np.int64)
        n_batch = drawn_positions.shape[0]
        n_sets = self.set_offsets.shape[0] - 1
        n_genes = self.samples_by_gene.shape[1]
        out_es = np.empty((n_batch, n_sets))
        out_stat = np.empty((n_batch, n_genes)) if keep_stat else np.empty((0, 0))
        previous_threads = numba.get_num_threads()
        if self.threads is not None:
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        try:
            # A few chunks per thread evens out the load without per-permutation scratch.
            n_chunks = max(1, min(n_batch, 4 * numba.get_num_threads()))
            score_labellings(self.samples_by_gene, self.squares_by_gene, self.gene_mean,
                             self.total_sum, self.total_sumsq, drawn_positions, self.drawn_is_case,
                             self.metric_code, self.weight, self.set_members, self.set_offsets,
                             self.gene_set_offsets, self.gene_set_ids, n_chunks, out_es, out_stat)
        finally:
            numba.set_num_threads(previous_threads)
        return out_es, (out_stat if keep_stat else None)

    @staticmethod
    def to_host(array: np.ndarray) -> np.ndarray:
        return array

    def describe(self) -> dict:
        return {"backend": "cpu", "threads": numba.get_num_threads() if self.threads is None else self.threads,
                "numba_threading_layer": numba.config.THREADING_LAYER}
