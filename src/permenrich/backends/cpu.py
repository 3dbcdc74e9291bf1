"""CPU backend: NumPy/SciPy for the regular maths, Numba kernels for the irregular parts.

Kernels, each parallel over the permutations of a batch (``numba.prange`` over
contiguous chunks, per-thread scratch; a permutation's result never depends on which
thread computed it):

* :func:`two_group_statistics` — per-gene statistics of a two-group design
  (:mod:`permenrich.stats.two_group`);
* :func:`ks_scores` — rank (radix sort) and the running-sum ES of every set in one walk
  down the ranked genes (:mod:`permenrich.enrich.running_sum`);
* :func:`random_set_scores` — the gene-set (gene-label) permutation null of preranked
  mode: random sets of each size drawn from the ranked list.

The per-permutation bodies are device-neutral functions compiled here for the CPU and in
``kernels/`` for CUDA; these drivers only split a batch over threads.

Correlation statistics and the linear set statistics are matrix products shared with
the GPU backend (:mod:`permenrich.stats.correlation`, :mod:`permenrich.enrich.linear`).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import scipy.sparse

from .._compile import jit_family
from ..enrich.linear import LinearSetStatistic
from ..enrich.running_sum import SCALAR_FUNCTIONS as WALK_FUNCTIONS
from ..enrich.running_sum import WALK_STATE_WIDTH
from ..rng import STREAM_GENE_SET_BASE, draw_positions
from ..stats import two_group
from ..stats.correlation import CorrelationStatistic
from ..stats.metrics import Metric, mid_ranks
from ..stats.ranking import CPU_PASSES, RADIX_SIZE

SET_STATISTIC_CODES = {"ks": 0, "mean": 1, "maxmean": 2}
_cpu = jit_family(two_group.SCALAR_FUNCTIONS + WALK_FUNCTIONS,
                  numba.njit(cache=True, error_model="numpy"))
_gene_statistics = _cpu._gene_statistics
_enrichment_scores = _cpu._enrichment_scores
_sorted_positions_score = _cpu._sorted_positions_score
_rank_descending = _cpu._rank_descending


@numba.njit(cache=True, parallel=True, error_model="numpy")
def two_group_statistics(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                         drawn_positions, drawn_is_case, metric, n_chunks, out):
    """``out[b, g]``: statistic of gene g under labelling b (rows of ``drawn_positions``)."""
    n_samples, n_genes = samples_by_gene.shape
    n_batch = drawn_positions.shape[0]
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        sum_drawn = np.empty(n_genes)
        sumsq_drawn = np.empty(n_genes)
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            _gene_statistics(samples_by_gene, squares_by_gene, gene_mean, total_sum, total_sumsq,
                             n_samples, drawn_positions[b], drawn_is_case, metric,
                             sum_drawn, sumsq_drawn, out[b])


@numba.njit(cache=True, parallel=True, error_model="numpy")
def ks_scores(stats, weight, set_members, set_offsets, gene_set_offsets, gene_set_ids, n_chunks, out):
    """``out[b, s]``: running-sum ES of set s when genes are ranked by ``stats[b]``."""
    n_batch, n_genes = stats.shape
    n_sets = set_offsets.shape[0] - 1
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        order = np.empty(n_genes, dtype=np.int64)
        keys = np.empty(n_genes, dtype=np.uint64)
        keys_tmp = np.empty(n_genes, dtype=np.uint64)
        order_tmp = np.empty(n_genes, dtype=np.int64)
        histogram = np.empty((CPU_PASSES, RADIX_SIZE), dtype=np.int64)
        gene_weight = np.empty(n_genes)
        state = np.empty((n_sets, WALK_STATE_WIDTH))
        stats_bits = stats.view(np.uint64)
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            _rank_descending(stats[b], stats_bits[b], CPU_PASSES, order, keys, keys_tmp, order_tmp, histogram)
            _enrichment_scores(stats[b], order, weight, set_members, set_offsets, gene_set_offsets,
                               gene_set_ids, gene_weight, state, out[b])


@numba.njit(cache=True, parallel=True, error_model="numpy")
def random_set_scores(seed, perm_start, ranked_stat, weight, statistic, sizes, n_chunks, out):
    """``out[b, i]``: statistic of a random set of ``sizes[i]`` genes under gene-set
    permutation ``perm_start + b`` (stream tagged by the size, so sets of equal size share
    a draw within a permutation)."""
    n_batch = out.shape[0]
    n_genes = ranked_stat.shape[0]
    largest = 0
    for i in range(sizes.shape[0]):
        largest = max(largest, sizes[i])
    chunk = (n_batch + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        pool = np.arange(n_genes)
        positions = np.empty(largest, dtype=np.int64)
        for b in range(c * chunk, min(n_batch, (c + 1) * chunk)):
            for i in range(sizes.shape[0]):
                k = sizes[i]
                draw_positions(seed, perm_start + b, STREAM_GENE_SET_BASE | k, k, pool, positions[:k])
                out[b, i] = _sorted_positions_score(positions[:k], ranked_stat, weight, statistic, n_genes)


class _TwoGroupStatistic:
    """Two-group statistics from class moments (gene-centred matrix kept samples x genes;
    centring keeps float64 sums of squares exact enough for intensities in the thousands)."""

    def __init__(self, values: np.ndarray, drawn_is_case: bool, metric: Metric, backend: CpuBackend) -> None:
        if metric.rank_transform:
            values = mid_ranks(values)
        self.gene_mean = values.mean(axis=1)
        self.samples_by_gene = np.ascontiguousarray((values - self.gene_mean[:, None]).T)
        self.squares_by_gene = self.samples_by_gene ** 2
        self.total_sum = self.samples_by_gene.sum(axis=0)
        self.total_sumsq = self.squares_by_gene.sum(axis=0)
        self.drawn_is_case = bool(drawn_is_case)
        self.code = metric.code
        self.backend = backend

    def batch(self, drawn_positions: np.ndarray) -> np.ndarray:
        drawn_positions = np.ascontiguousarray(drawn_positions, dtype=np.int64)
        out = np.empty((drawn_positions.shape[0], self.samples_by_gene.shape[1]))
        two_group_statistics(self.samples_by_gene, self.squares_by_gene, self.gene_mean, self.total_sum,
                             self.total_sumsq, drawn_positions, self.drawn_is_case, self.code,
                             self.backend.chunks(out.shape[0]), out)
        return out


class _KsStatistic:
    def __init__(self, set_members: np.ndarray, set_offsets: np.ndarray, gene_set_offsets: np.ndarray,
                 gene_set_ids: np.ndarray, weight: float, backend: CpuBackend) -> None:
        self.arrays = tuple(np.ascontiguousarray(a, dtype=np.int64)
                            for a in (set_members, set_offsets, gene_set_offsets, gene_set_ids))
        self.weight = float(weight)
        self.backend = backend

    def scores(self, stats: np.ndarray) -> np.ndarray:
        stats = np.ascontiguousarray(stats, dtype=np.float64)
        out = np.empty((stats.shape[0], self.arrays[1].size - 1))
        ks_scores(stats, self.weight, *self.arrays, self.backend.chunks(stats.shape[0]), out)
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
    sparse = scipy.sparse
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
                          phenotype: np.ndarray | None = None) -> None:
        """Per-gene statistic for labellings of ``values`` (n_genes, n_samples)."""
        values = np.asarray(values, dtype=np.float64)
        if metric.kind == "correlation":
            self._statistic = CorrelationStatistic(values, phenotype, spearman=metric.rank_transform, xp=np)
        else:
            self._statistic = _TwoGroupStatistic(values, drawn_is_case, metric, self)

    def prepare_sets(self, set_statistic: str, set_members: np.ndarray, set_offsets: np.ndarray,
                     gene_set_offsets: np.ndarray, gene_set_ids: np.ndarray, weight: float, n_genes: int) -> None:
        """Set statistic (``ks``, ``mean`` or ``maxmean``) over the flat set index."""
        if set_statistic == "ks":
            self._set_statistic = _KsStatistic(set_members, set_offsets, gene_set_offsets, gene_set_ids,
                                               weight, self)
        else:
            self._set_statistic = LinearSetStatistic(set_statistic, set_members, set_offsets, n_genes,
                                                     xp=np, sparse=scipy.sparse)

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
        with self._threads():
            for start in range(0, labellings.shape[0], self.chunk_rows):
                stats = self._statistic.batch(labellings[start:start + self.chunk_rows])
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
        with self._threads():
            random_set_scores(np.uint64(seed), perm_start, np.ascontiguousarray(ranked_stat, dtype=np.float64),
                              float(weight), SET_STATISTIC_CODES[set_statistic],
                              np.ascontiguousarray(sizes, dtype=np.int64), self.chunks(out.shape[0]), out)
        return out

    @staticmethod
    def to_host(array: np.ndarray) -> np.ndarray:
        return array

    def _threads(self) -> Any:
        return _NumbaThreads(self.threads)

    def describe(self) -> dict:
        return {"backend": "cpu", "threads": numba.get_num_threads() if self.threads is None else self.threads,
                "numba_threading_layer": numba.config.THREADING_LAYER}


class _NumbaThreads:
    """Temporarily set Numba's thread count (restored on exit)."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        self.previous = numba.get_num_threads()
        if self.threads is not None:
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))

    def __exit__(self, *exc: object) -> None:
        numba.set_num_threads(self.previous)
