"""GPU backend: Numba-CUDA kernels from ``kernels/`` (installed as permenrich.kernels),
CuPy for the device arrays and the regular maths.

Same protocol and same pipeline as :class:`permenrich.backends.cpu.CpuBackend`; only the
kernels differ, and they are compiled from the same device-neutral functions:

* labellings are drawn on the device by the CPU's Philox generator (bit-identical);
* two-group statistics: one thread per (labelling, gene), same summation order; a
  matrix streamed from disk is sent block by block (pinned double buffers, copies
  overlapping the kernels) with the class sums kept on the device;
* ranking: one thread block per permutation (block radix sort of 32-bit keys with an
  exact fix-up of near ties, :mod:`permenrich.kernels.ranking`);
* running-sum ES from the rank table: one thread per (set, permutation) gathers and
  sorts the set's member ranks (:mod:`permenrich.kernels.enrichment`);
* correlation: one thread per (shuffle, gene), samples summed in order as on the CPU;
* mean/maxmean set statistics: one thread per (set, permutation), summing in the CPU's order;
* gene-set permutation null: one thread per permutation, drawn on the device with a
  hash table of swaps instead of a pool as long as the gene list;
* the GSEA null's accumulators (:mod:`permenrich.kernels.accumulators`): one thread per
  set for the counts and exact sums, one per permutation for the FDR/FWER tails, with
  nothing the size of a batch allocated.

Every launch, allocation and copy goes to the backend's own CUDA stream (a blocking
stream, so CuPy's work on the default stream stays ordered with it). How many
permutations go to the device at once comes from :func:`device_bytes_per_permutation`,
which counts every device allocation a permutation needs.

Batches of null scores stay on the device as CuPy arrays and feed the accumulators
there (``xp = cupy``); only counts and per-set summaries come back. Without CuPy (e.g.
under ``NUMBA_ENABLE_CUDASIM=1`` in CI, where the kernels run in Numba's simulator) the
arrays are brought back and the accumulators use NumPy.

Float64 throughout and no fused multiply-add (``fastmath`` off, NVVM ``-fma=0``, kernels
linked without LTO), and the transcendental functions of the statistics computed by
:mod:`permenrich.portable_math`, so gene statistics, ES and the null summaries match the
CPU's bit for bit (checked with exact equality under the simulator, and on an H200 for
the kernels as they were on 2026-11-30: see benchmarks/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OptionError, option
from ..stats.metrics import Metric, mid_ranks
from ..stats.ranking import FULL_PASSES, RADIX_SIZE

#: ES kernels: "ranks" (default) and the first "per-permutation" one, kept so that
#: benchmarks can time both (``PERMENRICH_GPU_ES_KERNEL`` selects it).
ES_KERNELS = ("ranks", "per-permutation")


def device_bytes_per_permutation(n_genes: int, n_sets: int, n_memberships: int, width: int,
                                 es_kernel: str = "ranks", global_memberships: int = 0,
                                 pool_width: int = 0) -> dict[str, int]:
    """Device memory one permutation of a batch needs, by allocation.

    Parameters
    ----------
    n_genes, n_sets
        Genes ranked and sets scored.
    n_memberships
        Total set size (sum over sets; 0 for a mode without running-sum sets).
    global_memberships
        Members of the sets whose ranks are sorted in global memory (too large for a
        block's shared memory).
    width
        Labelling width (samples drawn, or shuffled).
    pool_width
        The labelling kernel's scratch per permutation (the largest stratum's samples).
    es_kernel
        One of :data:`ES_KERNELS`.

    Returns
    -------
    dict
        Bytes per permutation for: the labelling, the gene statistics, the ranking scratch,
        the member-rank scratch, the set scores and the null accumulators' temporaries
        (comparisons and sums of a batch, at most three float64 per set).
    """
    from permenrich.kernels.ranking import RANK_BYTES_PER_GENE

    if es_kernel == "per-permutation":
        ranking = 8 * (5 * n_genes + FULL_PASSES * RADIX_SIZE + 8 * n_sets)
        members = 0
    else:
        ranking = RANK_BYTES_PER_GENE * n_genes if n_memberships else 0
        members = 4 * global_memberships
    return {"labelling": 8 * (width + pool_width), "gene_statistics": 8 * n_genes, "ranking": ranking,
            "member_ranks": members, "set_scores": 8 * n_sets, "accumulators": 3 * 8 * n_sets}



@dataclass
class _DeviceTwoGroup:
    """A matrix held on the device: centred values, their squares and the gene totals."""

    arrays: tuple[Any, ...]  # centred, squares, gene_mean, total_sum, total_sumsq
    drawn_is_case: bool
    code: int


@dataclass
class _DeviceStreamed:
    """A matrix streamed from disk block by block; the gene totals on the device."""

    matrix: Any
    totals: tuple[Any, ...]  # gene_mean, total_sum, total_sumsq
    drawn_is_case: bool
    code: int


@dataclass
class _DeviceCorrelation:
    genes_by_sample: Any
    phenotype: Any
    two_valued: tuple | None  # (picked, step, other, gene totals on the device) for a 0/1 label
    gene_scale: Any  # Spearman's per-gene factor from exact sums to r (an xp array), or None


@dataclass
class _DeviceCovariates:
    """Freedman–Lane t: reduced-model residuals and the vectors they are dotted with."""

    residuals_by_sample: Any
    vectors: tuple[Any, ...]
    statistic: Any  # CovariateStatistic: t from the dot products


@dataclass
class _DeviceKs:
    arrays: tuple[Any, ...]  # members, offsets (+ gene_set_offsets, gene_set_ids for the old kernel), int64
    members32: Any  # members (int32) for the ES-from-ranks kernels
    size_classes: list  # (device set indices, slot, threads) per class, see kernels.enrichment.size_classes
    weight: float
    n_sets: int
    n_memberships: int
    n_global_memberships: int  # members of the sets sorted in global scratch (too large for shared memory)


def _cuda() -> Any:
    from numba import cuda

    return cuda


def gpu_available() -> bool:
    """A real CUDA GPU is visible to Numba (the simulator does not count)."""
    try:
        from numba import config

        cuda = _cuda()
        return bool(cuda.is_available()) and not config.ENABLE_CUDASIM
    except Exception:  # noqa: BLE001 - any driver/toolkit problem means "no GPU"
        return False


class GpuBackend:
    """CUDA backend (Numba-CUDA kernels, CuPy arrays).

    Parameters
    ----------
    threads
        Ignored (host threads are not used for the kernels); kept for a uniform signature.
    scratch_bytes
        Device memory for one kernel launch's per-permutation scratch (ranking buffers,
        walk state); sets how many permutations a launch handles. A run gives a quarter
        of its ``--memory`` (:func:`permenrich.backends.get_backend`).
    device_cache_bytes
        Largest matrix (centred values and their squares, float64) kept on the device
        when the host streams it from disk: it is then read once and reused by every
        batch. ``None``: a third of the device memory free when the matrix is prepared.
    """

    name = "gpu"

    def __init__(self, threads: int | None = None, scratch_bytes: int = 2 * 10**9,
                 device_cache_bytes: int | None = None, es_kernel: str | None = None) -> None:
        import os

        cuda = _cuda()
        es_kernel = es_kernel or os.environ.get("PERMENRICH_GPU_ES_KERNEL") or "ranks"
        if es_kernel not in ES_KERNELS:
            raise OptionError(f"PERMENRICH_GPU_ES_KERNEL must be one of {', '.join(ES_KERNELS)}, got {es_kernel!r}")
        self.es_kernel = es_kernel
        if not cuda.is_available():
            raise OptionError(f"{option('device', 'gpu')} but Numba sees no CUDA GPU; use {option('device', 'cpu')} "
                              "(or auto)")
        from numba import config

        self.simulated = bool(config.ENABLE_CUDASIM)
        from permenrich.kernels.enrichment import es_sorts_by_slot
        from permenrich.kernels.ranking import RANK_THREADS, SIMULATOR_RANK_THREADS

        self.rank_threads = SIMULATOR_RANK_THREADS if self.simulated else RANK_THREADS
        self.cupy: Any = None
        if not self.simulated:
            try:
                import cupy

                self.cupy = cupy
                self.xp = cupy
            except ImportError:
                self.cupy = None
        if self.cupy is None:
            self.xp = np
        self.scratch_bytes = int(scratch_bytes)
        #: Dynamic shared memory per block for the ES kernel's sort slots (the default
        #: limit without an opt-in).
        self.shared_scratch_bytes = 48 * 1024
        #: Narrowest block (permutations) the shared-memory ES kernel runs; sets whose
        #: slots allow fewer go to global scratch (``size_classes``; a benchmark knob).
        self.min_shared_width = 32
        #: How the shared-memory ES kernel sorts a set's positions: "heap", "bitonic" or
        #: "bitmap", or one per size class ("bitmap,32=heap"; see
        #: ``kernels.enrichment.es_sorts_by_slot``); the same scores. A benchmark knob
        #: (``PERMENRICH_GPU_ES_SORT``) until a device has measured which is fastest;
        #: set before ``prepare_sets``.
        self.es_sort = os.environ.get("PERMENRICH_GPU_ES_SORT") or "heap"
        try:
            es_sorts_by_slot(self.es_sort)
        except ValueError as error:
            raise OptionError(f"PERMENRICH_GPU_ES_SORT: {error}") from None
        self.stream = cuda.stream()
        self._width = 0
        self._pool_width = 0
        self._workspace: dict[str, Any] = {}  # see _scratch
        self._uploads: dict[str, tuple] = {}  # see _uploaded_once
        self.device_cache_bytes = device_cache_bytes
        self.streamed_matrix: str | None = None
        self._statistic: Any = None
        self._sets: Any = None

    # -- moving arrays ----------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> Any:
        return _cuda().to_device(np.ascontiguousarray(array), stream=self.stream)

    def _empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return _cuda().device_array(shape, dtype=dtype, stream=self.stream)

    def _free_dropped(self) -> None:
        """Free now the device arrays that earlier batches dropped (their labellings, gene
        statistics and scores). Numba frees lazily, ten arrays or a fifth of the device at a
        time: three to four batches' outputs (at the cudaGSEA shape, 0.8 GB per 4,096
        permutations) would otherwise outlive their batch, outside the memory model that
        sizes the batches. Called before each batch allocates (labellings, statistics, random
        sets); a no-op in the simulator."""
        if self.simulated:
            return
        try:
            _cuda().current_context().deallocations.clear()
        except AttributeError:  # a Numba-CUDA without this queue: its own lazy frees apply
            pass

    def _uploaded_once(self, name: str, sources: tuple, make: Any) -> tuple:
        """``make()``'s items, its NumPy arrays copied to the device, made once for the same
        ``sources`` (numbers and strings by equality, anything else by identity) rather
        than per batch: what stays the same for a run (a plan's generator arrays, a ranked
        list's closed-form inputs). Fewer allocations per batch also means fewer of
        Numba's lazy frees, which synchronise the device every ten."""
        cached = self._uploads.get(name)
        if cached is not None and len(cached[0]) == len(sources) and all(
                old is new or (isinstance(new, (int, float, str)) and old == new)
                for old, new in zip(cached[0], sources)):
            return cached[1]
        items = tuple(self._to_device(item) if isinstance(item, np.ndarray) else item for item in make())
        self._uploads[name] = (sources, items)
        return items

    def _scratch(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """Device scratch that does not outlive the call asking for it, carved from a
        buffer kept between calls (grown when a batch needs more): a run allocates its
        scratch once instead of per batch. Numba releases freed device memory lazily (ten
        frees, or a fifth of the device, at a time), so per-batch scratch outlived its
        batch beyond the memory model; and each large allocation or free costs time.
        Work on the scratch is ordered by the backend's stream, so a batch's kernels
        never overwrite the previous batch's buffers while those are still read."""
        dtype = np.dtype(dtype)
        size = max(1, math.prod(shape))
        buffer = self._workspace.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            self._workspace.pop(name, None)  # release the smaller one first
            buffer = self._empty((size,), dtype)
            self._workspace[name] = buffer
        return buffer[:math.prod(shape)].reshape(shape)

    def _as_xp(self, device_array: Any) -> Any:
        """A kernel's output as an ``xp`` array (zero-copy with CuPy; CuPy's default
        stream waits for the backend's blocking stream)."""
        if self.cupy is not None:
            return self.cupy.asarray(device_array)
        host = device_array.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return host

    def _as_device(self, array: Any) -> Any:
        """An ``xp``/host array as a Numba device array (zero-copy with CuPy)."""
        cuda = _cuda()
        if self.cupy is not None and isinstance(array, self.cupy.ndarray):
            return cuda.as_cuda_array(self.cupy.ascontiguousarray(array))
        if hasattr(array, "copy_to_host"):
            return array
        return self._to_device(array)

    def to_host(self, array: Any) -> np.ndarray:
        if self.cupy is not None and isinstance(array, self.cupy.ndarray):
            return self.cupy.asnumpy(array)
        return np.asarray(array)

    # -- configuration ------------------------------------------------------------------
    def prepare_statistic(self, values: np.ndarray, metric: Metric, *, drawn_is_case: bool = True,
                          phenotype: np.ndarray | None = None, covariates: Any = None) -> None:
        if covariates is not None:
            self._statistic = _DeviceCovariates(self._to_device(covariates.residuals_by_sample),
                                                tuple(self._to_device(v) for v in covariates.vectors), covariates)
            return
        if hasattr(values, "blocks"):  # a streamed matrix: two-group metrics only (checked by make_study)
            from .cpu import class_moment_totals

            totals = class_moment_totals(values)
            device_totals = tuple(self._to_device(a) for a in totals)
            if 2 * 8 * values.n_samples * values.n_genes <= self._device_cache_limit():
                # Too large for the host budget but not for the device: one more pass
                # puts it there, and every batch then runs the in-memory kernel.
                self.streamed_matrix = "read once from disk, cached on the device"
                centred, squares = self._upload_centred(values, totals[0])
                self._statistic = _DeviceTwoGroup((centred, squares, *device_totals), bool(drawn_is_case),
                                                  int(metric.code))
                return
            self.streamed_matrix = "streamed from disk for every batch"
            self._statistic = _DeviceStreamed(values, device_totals, bool(drawn_is_case), int(metric.code))
            return
        values = np.asarray(values, dtype=np.float64)
        if metric.kind == "correlation":
            from ..stats.correlation import CorrelationStatistic

            statistic = CorrelationStatistic(values, phenotype, spearman=metric.rank_transform)
            two_valued = ((statistic.picked, statistic.step, statistic.other, self._to_device(statistic.gene_totals))
                          if statistic.two_valued else None)
            gene_scale = None if statistic.gene_scale is None else self.xp.asarray(statistic.gene_scale)
            self._statistic = _DeviceCorrelation(self._to_device(statistic.genes_by_sample),
                                                 self._to_device(statistic.phenotype), two_valued, gene_scale)
            return
        from .cpu import InMemoryMatrix, class_moment_totals

        matrix = InMemoryMatrix(mid_ranks(values) if metric.rank_transform else values)
        # The CPU's totals (sequential sums in sample order) and the CPU's centred values:
        # the device then adds the same numbers in the same order.
        totals = class_moment_totals(matrix)
        centred = matrix.samples_by_gene - totals[0]
        self._statistic = _DeviceTwoGroup(tuple(self._to_device(a) for a in (centred, centred * centred, *totals)),
                                          bool(drawn_is_case), int(metric.code))

    def prepare_sets(self, set_statistic: str, set_members: np.ndarray, set_offsets: np.ndarray, weight: float,
                     n_genes: int) -> None:
        if set_statistic == "ks":
            from permenrich.kernels.enrichment import size_classes

            index = (set_members, set_offsets)
            if self.es_kernel == "per-permutation":  # the old kernel walks a gene -> sets index
                from ..genesets import gene_to_sets

                index += gene_to_sets(set_members, set_offsets, n_genes)
            arrays = tuple(self._to_device(np.asarray(a, dtype=np.int64)) for a in index)

            sizes = np.diff(np.asarray(set_offsets, dtype=np.int64))
            classes = size_classes(sizes, n_genes, self.shared_scratch_bytes, min_shared_width=self.min_shared_width,
                                   sort=self.es_sort)
            in_global = sum(int(starts[-1]) for _, slot, _, starts in classes if slot == 0)
            self._sets = _DeviceKs(arrays, self._to_device(np.asarray(set_members, dtype=np.int32)),
                                   [(self._to_device(c), slot, threads, self._to_device(starts))
                                    for c, slot, threads, starts in classes],
                                   float(weight), int(sizes.size), int(sizes.sum()), in_global)
        else:
            from ..enrich.linear import LinearSetStatistic

            self._sets = LinearSetStatistic(set_statistic, self._to_device(np.asarray(set_members, dtype=np.int64)),
                                            self._to_device(np.asarray(set_offsets, dtype=np.int64)), self.xp,
                                            self._linear_scores)

    def _linear_scores(self, gene_scores: Any, set_members: Any, set_offsets: Any, maxmean: bool) -> Any:
        from permenrich.kernels.enrichment import launch_linear_set_scores

        device_scores = self._as_device(gene_scores)
        out = self._empty((device_scores.shape[0], set_offsets.shape[0] - 1), np.float64)
        launch_linear_set_scores(device_scores, set_members, set_offsets, maxmean, out, self.stream)
        return self._as_xp(out)

    # -- kernels --------------------------------------------------------------------------
    def labellings(self, plan: Any, start: int, stop: int) -> Any:
        """Labellings ``[start, stop)`` drawn on the device (bit-identical to the CPU's)."""
        from permenrich.kernels.permutations import launch_labellings

        mode, exact, offsets, members, drawn, radix, binom, factorial, largest = plan.generator_arrays()
        self._free_dropped()
        n = stop - start
        self._width = int(plan.width)
        self._pool_width = max(1, int(largest))
        out = self._empty((n, plan.width), np.int64)
        pool = self._scratch("labelling pool", (n, self._pool_width), np.int64)
        generator = self._uploaded_once("plan", (plan,), lambda: (offsets, members, drawn, radix, binom, factorial))
        launch_labellings(np.uint64(plan.seed), start, mode, exact, generator, pool, out, self.stream)
        return out

    def gene_statistics(self, labellings: Any) -> Any:
        """Per-gene statistics, shape (n_batch, n_genes), as an ``xp`` array."""
        from permenrich.kernels.statistics import launch_correlation, launch_two_group

        statistic = self._statistic
        self._free_dropped()  # what was dropped since (an earlier device chunk's statistics, when a batch is split)
        if isinstance(statistic, _DeviceStreamed):
            return self._streamed_statistics(labellings)
        drawn = self._as_device(labellings)
        if isinstance(statistic, _DeviceCovariates):
            dots = []
            for vector in statistic.vectors:
                out = self._empty((drawn.shape[0], statistic.statistic.n_genes), np.float64)
                launch_correlation(statistic.residuals_by_sample, vector, drawn, out, self.stream)
                dots.append(self._as_xp(out))
            return statistic.statistic.t_from_dots(dots, self.xp)
        if isinstance(statistic, _DeviceCorrelation):
            n_genes = statistic.genes_by_sample.shape[1]
            out = self._empty((drawn.shape[0], n_genes), np.float64)
            launch_correlation(statistic.genes_by_sample, statistic.phenotype, drawn, out, self.stream,
                               statistic.two_valued)
            if statistic.gene_scale is not None:
                scaled = self._as_xp(out)
                scaled *= statistic.gene_scale  # Spearman's exact sums to r (one rounding, as on the CPU)
                return scaled
        else:
            n_genes = statistic.arrays[0].shape[1]
            out = self._empty((drawn.shape[0], n_genes), np.float64)
            launch_two_group(*statistic.arrays, drawn, statistic.drawn_is_case, statistic.code, out, self.stream)
        return self._as_xp(out)

    def _streamed_statistics(self, labellings: Any) -> Any:
        """Two-group statistics of a matrix streamed from disk: the blocks go to the device
        one by one and the drawn class's sums are carried between them on the device."""
        from permenrich.kernels.statistics import launch_finish_two_group, launch_two_group_block

        statistic = self._statistic
        matrix = statistic.matrix
        gene_mean, total_sum, total_sumsq = statistic.totals
        drawn = self._as_device(labellings)
        n_batch, n_drawn = drawn.shape
        sums = self._device_zeros((n_batch, matrix.n_genes))
        sumsqs = self._device_zeros((n_batch, matrix.n_genes))

        def launch(block: Any, sample_start: int, sample_stop: int, gene_start: int, stream: Any) -> None:
            launch_two_group_block(block, sample_start, sample_stop, gene_start, gene_mean, drawn, sums, sumsqs,
                                   stream)

        self._upload_blocks(matrix.blocks(), launch)
        out = self._empty((n_batch, matrix.n_genes), np.float64)
        launch_finish_two_group(sums, sumsqs, total_sum, total_sumsq, gene_mean, matrix.n_samples, n_drawn,
                                statistic.drawn_is_case, statistic.code, out, self.stream)
        return self._as_xp(out)

    def _device_cache_limit(self) -> int:
        if self.device_cache_bytes is not None:
            return int(self.device_cache_bytes)
        if self.simulated:  # the simulator reports no real memory figure
            return 0
        try:
            free, _ = _cuda().current_context().get_memory_info()
            return int(free) // 3
        except Exception:  # noqa: BLE001 - no figure: do not cache
            return 0

    def _upload_centred(self, matrix: Any, gene_mean: np.ndarray) -> tuple[Any, Any]:
        """The streamed matrix's gene-centred values and their squares (samples x genes)
        as device arrays, block by block (the same float64 values as the in-memory path)."""
        cuda = _cuda()
        shape = (matrix.n_samples, matrix.n_genes)
        if self.cupy is not None:
            cp = self.cupy
            centred, squares = cp.empty(shape), cp.empty(shape)
            mean = cp.asarray(gene_mean)
            for sample_start, sample_stop, gene_start, gene_stop, values in matrix.blocks():
                block = cp.asarray(values) - mean[gene_start:gene_stop]
                centred[sample_start:sample_stop, gene_start:gene_stop] = block
                squares[sample_start:sample_stop, gene_start:gene_stop] = block * block
            return cuda.as_cuda_array(centred), cuda.as_cuda_array(squares)
        centred_host = np.empty(shape)
        for sample_start, sample_stop, gene_start, gene_stop, values in matrix.blocks():
            centred_host[sample_start:sample_stop, gene_start:gene_stop] = values - gene_mean[gene_start:gene_stop]
        return self._to_device(centred_host), self._to_device(centred_host * centred_host)

    def _device_zeros(self, shape: tuple[int, ...]) -> Any:
        if self.cupy is not None:
            return _cuda().as_cuda_array(self.cupy.zeros(shape, dtype=np.float64))
        return self._to_device(np.zeros(shape))

    def _upload_blocks(self, blocks: Any, launch: Any) -> None:
        """Send host blocks ``(sample_start, sample_stop, gene_start, gene_stop, values)``
        to the device and call ``launch(device_block, sample_start, sample_stop,
        gene_start, stream)`` on each.

        With CuPy: two pinned staging buffers and two device buffers alternate; block k+1
        is read and normalised on the host, copied to pinned memory and sent on a copy
        stream while the kernel of block k runs on a compute stream (an event per slot
        keeps a buffer from being refilled before its kernel is done). In the simulator:
        plain synchronous copies.
        """
        cuda = _cuda()
        if self.cupy is None:
            for sample_start, sample_stop, gene_start, _, values in blocks:
                launch(self._to_device(np.asarray(values, dtype=np.float64)), sample_start, sample_stop,
                       gene_start, self.stream)
            return
        cp = self.cupy
        # Non-blocking streams do not wait for the backend's stream, where the zeroed sums
        # and the labellings were made: finish those first.
        self.stream.synchronize()
        cuda.synchronize()
        copy_stream, compute_stream = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
        numba_stream = cuda.external_stream(compute_stream.ptr)
        pinned: list[Any] = [None, None]
        device: list[Any] = [None, None]
        kernel_done: list[Any] = [None, None]
        for index, (sample_start, sample_stop, gene_start, _, values) in enumerate(blocks):
            slot = index % 2
            if kernel_done[slot] is not None:
                kernel_done[slot].synchronize()  # the kernel reading this slot's buffers is finished
            if pinned[slot] is None or pinned[slot].size < values.size:
                memory = cp.cuda.alloc_pinned_memory(values.size * 8)
                pinned[slot] = np.frombuffer(memory, dtype=np.float64, count=values.size)
                device[slot] = cp.empty(values.size, dtype=np.float64)
            host = pinned[slot][: values.size].reshape(values.shape)
            np.copyto(host, values)
            on_device = device[slot][: values.size].reshape(values.shape)
            on_device.set(host, stream=copy_stream)
            compute_stream.wait_event(copy_stream.record())
            launch(cuda.as_cuda_array(on_device, sync=False), sample_start, sample_stop, gene_start, numba_stream)
            kernel_done[slot] = compute_stream.record()
        compute_stream.synchronize()

    def memory_model(self, n_genes: int) -> dict[str, int]:
        """Device bytes per permutation of this run, by allocation
        (:func:`device_bytes_per_permutation`)."""
        sets = self._sets
        n_sets = sets.n_sets if isinstance(sets, _DeviceKs) else int(getattr(sets, "n_sets", 0))
        memberships = sets.n_memberships if isinstance(sets, _DeviceKs) else 0
        in_global = sets.n_global_memberships if isinstance(sets, _DeviceKs) else 0
        return device_bytes_per_permutation(n_genes, n_sets, memberships, self._width, self.es_kernel, in_global,
                                            self._pool_width)

    def device_rows(self, n_genes: int) -> int:
        """Permutations sent to the device at once: as many as ``scratch_bytes`` holds
        by the memory model."""
        return max(1, self.scratch_bytes // max(1, sum(self.memory_model(n_genes).values())))

    def set_scores(self, stats: Any) -> Any:
        """Set statistics, shape (n_batch, n_sets), as an ``xp`` array."""
        if not isinstance(self._sets, _DeviceKs):
            return self._sets.scores(self.xp.asarray(stats))
        device_stats = self._as_device(stats)
        n_batch, n_genes = device_stats.shape
        out = self._empty((n_batch, self._sets.n_sets), np.float64)
        rows = min(n_batch, self.device_rows(n_genes))
        for start in range(0, n_batch, rows):
            stop = min(n_batch, start + rows)
            self._running_sum_scores(device_stats[start:stop], out[start:stop])
        return self._as_xp(out)

    def _running_sum_scores(self, stats: Any, out: Any) -> None:
        """``out`` (n, n_sets): running-sum ES of each row of ``stats`` with the chosen kernel."""
        n, n_genes = stats.shape
        sets = self._sets
        bits = stats.view(np.uint64)
        if self.es_kernel == "per-permutation":
            from permenrich.kernels.enrichment import launch_ks

            scratch = [self._empty((n, n_genes), np.int64), self._empty((n, n_genes), np.uint64),
                       self._empty((n, n_genes), np.uint64), self._empty((n, n_genes), np.int64),
                       self._empty((n, FULL_PASSES, RADIX_SIZE), np.int64),
                       self._empty((n, n_genes), np.float64), self._empty((n, sets.n_sets, 8), np.float64)]
            launch_ks(stats, bits, sets.weight, sets.arrays, scratch, out, self.stream)
            return
        from permenrich.kernels.enrichment import launch_es_from_ranks
        from permenrich.kernels.ranking import launch_block_rank, rank_scratch

        scratch = rank_scratch(n, n_genes, self.stream, self._scratch)
        launch_block_rank(stats, bits, scratch, self.stream, self.rank_threads)
        rank, ranked_stat, stat_by_gene = scratch[2:]
        positions = self._scratch("global positions", (max(1, sets.n_global_memberships), n), np.int32)
        launch_es_from_ranks((stat_by_gene, rank, ranked_stat), sets.weight, sets.members32, sets.arrays[1],
                             sets.size_classes, positions, out, self.stream, self.es_sort)

    def score(self, labellings: Any, keep_stat: bool = False) -> tuple[Any, Any]:
        """Set statistics (and, with ``keep_stat``, gene statistics) of a batch, in device
        chunks sized by the memory model."""
        n_batch = labellings.shape[0]
        rows = n_batch
        if self._sets is not None and self._statistic is not None:
            rows = min(n_batch, self.device_rows(self._n_genes()))
        if rows >= n_batch:
            stats = self.gene_statistics(labellings)
            return self.set_scores(stats), (stats if keep_stat else None)
        scores, kept = [], []
        for start in range(0, n_batch, rows):
            stats = self.gene_statistics(labellings[start:start + rows])
            scores.append(self.set_scores(stats))
            if keep_stat:
                kept.append(stats)
        xp = self.xp
        return xp.concatenate(scores), (xp.concatenate(kept) if keep_stat else None)

    def _n_genes(self) -> int:
        statistic = self._statistic
        if isinstance(statistic, _DeviceStreamed):
            return int(statistic.matrix.n_genes)
        if isinstance(statistic, _DeviceCovariates):
            return int(statistic.statistic.n_genes)
        if isinstance(statistic, _DeviceCorrelation):
            return int(statistic.genes_by_sample.shape[1])
        return int(statistic.arrays[0].shape[1])

    def random_set_null(self, seed: int, perm_start: int, perm_stop: int, ranked_stat: np.ndarray,
                        weight: float, set_statistic: str, sizes: np.ndarray) -> Any:
        """Gene-set permutation null, drawn on the device (no pool as long as the gene list:
        a hash table of the shuffle's swaps per permutation, twice the largest set)."""
        from permenrich.kernels.permutations import launch_random_sets

        from ..rng import sparse_table_capacity
        from .cpu import SET_STATISTIC_CODES, closed_form_inputs

        self._free_dropped()
        n = perm_stop - perm_start
        largest = int(np.max(sizes))
        capacity = sparse_table_capacity(largest)
        scratch = (self._scratch("swap table keys", (n, capacity), np.int64),
                   self._scratch("swap table values", (n, capacity), np.int64),
                   self._scratch("random sequence", (n, largest), np.int64),
                   self._scratch("sequence prefix", (n, largest), np.int64))
        out = self._empty((n, np.asarray(sizes).size), np.float64)
        # the CPU's inputs (same bits), once per ranked list rather than per batch
        values, weight, device_sizes = self._uploaded_once(
            "random sets", (ranked_stat, weight, set_statistic, sizes),
            lambda: (*closed_form_inputs(ranked_stat, weight, set_statistic), np.asarray(sizes, dtype=np.int64)))
        launch_random_sets(np.uint64(seed), perm_start, values, weight, SET_STATISTIC_CODES[set_statistic],
                           device_sizes, scratch, out, self.stream)
        return self._as_xp(out)

    def describe(self) -> dict:
        cuda = _cuda()
        from permenrich.kernels.device import FMA_CONTRACTION_OFF

        info: dict[str, Any] = {"backend": "gpu", "simulated": self.simulated,
                                "array_module": "cupy" if self.cupy is not None else "numpy",
                                "fma_contraction": "off" if FMA_CONTRACTION_OFF else "NVVM default",
                                "es_kernel": self.es_kernel, "es_sort": self.es_sort,
                                "device_scratch_bytes": self.scratch_bytes}
        if self.streamed_matrix is not None:
            info["streamed_matrix"] = self.streamed_matrix
        try:
            device = cuda.get_current_device()
            info["device"] = str(getattr(device, "name", b"")).strip("b'")
            info["compute_capability"] = list(getattr(device, "compute_capability", ()))
        except Exception:  # noqa: BLE001 - descriptive only
            pass
        if self.cupy is not None:
            info["cupy"] = self.cupy.__version__
        return info
