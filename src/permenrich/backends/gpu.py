"""GPU backend: Numba-CUDA kernels from ``kernels/`` (installed as permenrich.kernels),
CuPy for the regular maths and the null accumulators.

Same protocol and same pipeline as :class:`permenrich.backends.cpu.CpuBackend`; only the
kernels differ, and they are compiled from the same device-neutral functions:

* labellings are drawn on the device by the CPU's Philox generator (bit-identical);
* two-group statistics: one thread per (labelling, gene), same summation order; a
  matrix streamed from disk is sent block by block (pinned double buffers, copies
  overlapping the kernels) with the class sums kept on the device;
* ranking + running-sum ES: one thread per permutation (full 64-bit radix sort);
* correlation: one thread per (shuffle, gene), samples summed in order as on the CPU;
* mean/maxmean set statistics: CuPy sparse matrix products (cuSPARSE);
* gene-set permutation null: one thread per permutation.

Batches of null scores stay on the device as CuPy arrays and feed the accumulators
there (``xp = cupy``); only counts and per-set summaries come back. Without CuPy (e.g.
under ``NUMBA_ENABLE_CUDASIM=1`` in CI, where the kernels run in Numba's simulator) the
arrays are brought back and the accumulators use NumPy.

Float64 throughout and no fused multiply-add (``fastmath`` off, NVVM ``-fma=0``), so
gene statistics, ES and the null summaries match the CPU's bit for bit (checked with
exact equality under the simulator); on hardware, cuSPARSE's sums for mean/maxmean may
differ in the last bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OptionError, option
from ..stats.metrics import Metric, mid_ranks
from ..stats.ranking import FULL_PASSES, RADIX_SIZE



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


@dataclass
class _DeviceCovariates:
    """Freedman–Lane t: reduced-model residuals and the vectors they are dotted with."""

    residuals_by_sample: Any
    vectors: tuple[Any, ...]
    statistic: Any  # CovariateStatistic: t from the dot products


@dataclass
class _DeviceKs:
    arrays: tuple[Any, ...]  # members, offsets, gene_set_offsets, gene_set_ids
    weight: float
    n_sets: int


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
        walk state); sets how many permutations a launch handles.
    device_cache_bytes
        Largest matrix (centred values and their squares, float64) kept on the device
        when the host streams it from disk: it is then read once and reused by every
        batch. ``None``: a third of the device memory free when the matrix is prepared.
    """

    name = "gpu"

    def __init__(self, threads: int | None = None, scratch_bytes: int = 2 * 10**9,
                 device_cache_bytes: int | None = None) -> None:
        cuda = _cuda()
        if not cuda.is_available():
            raise OptionError(f"{option('device', 'gpu')} but Numba sees no CUDA GPU; use {option('device', 'cpu')} "
                              "(or auto)")
        from numba import config

        self.simulated = bool(config.ENABLE_CUDASIM)
        self.cupy: Any = None
        if not self.simulated:
            try:
                import cupy
                import cupyx.scipy.sparse

                self.cupy = cupy
                self.xp = cupy
                self.sparse = cupyx.scipy.sparse
            except ImportError:
                self.cupy = None
        if self.cupy is None:
            import scipy.sparse

            self.xp = np
            self.sparse = scipy.sparse
        self.scratch_bytes = int(scratch_bytes)
        self.device_cache_bytes = device_cache_bytes
        self.streamed_matrix: str | None = None
        self._statistic: Any = None
        self._sets: Any = None

    # -- moving arrays ----------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> Any:
        return _cuda().to_device(np.ascontiguousarray(array))

    def _as_xp(self, device_array: Any) -> Any:
        """A kernel's output as an ``xp`` array (zero-copy with CuPy)."""
        if self.cupy is not None:
            return self.cupy.asarray(device_array)
        return device_array.copy_to_host()

    def _as_device(self, array: Any) -> Any:
        """An ``xp``/host array as a Numba device array (zero-copy with CuPy)."""
        cuda = _cuda()
        if self.cupy is not None and isinstance(array, self.cupy.ndarray):
            return cuda.as_cuda_array(self.cupy.ascontiguousarray(array))
        if hasattr(array, "copy_to_host"):
            return array
        return cuda.to_device(np.ascontiguousarray(array))

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
            self._statistic = _DeviceCorrelation(self._to_device(statistic.genes_by_sample),
                                                 self._to_device(statistic.phenotype))
            return
        from .cpu import InMemoryMatrix, class_moment_totals

        matrix = InMemoryMatrix(mid_ranks(values) if metric.rank_transform else values)
        # The CPU's totals (sequential sums in sample order) and the CPU's centred values:
        # the device then adds the same numbers in the same order.
        totals = class_moment_totals(matrix)
        centred = matrix.samples_by_gene - totals[0]
        self._statistic = _DeviceTwoGroup(tuple(self._to_device(a) for a in (centred, centred * centred, *totals)),
                                          bool(drawn_is_case), int(metric.code))

    def prepare_sets(self, set_statistic: str, set_members: np.ndarray, set_offsets: np.ndarray,
                     gene_set_offsets: np.ndarray, gene_set_ids: np.ndarray, weight: float, n_genes: int) -> None:
        if set_statistic == "ks":
            arrays = tuple(self._to_device(np.asarray(a, dtype=np.int64))
                           for a in (set_members, set_offsets, gene_set_offsets, gene_set_ids))
            self._sets = _DeviceKs(arrays, float(weight), int(np.asarray(set_offsets).size - 1))
        else:
            from ..enrich.linear import LinearSetStatistic

            self._sets = LinearSetStatistic(set_statistic, set_members, set_offsets, n_genes, xp=self.xp,
                                            sparse=self.sparse)

    # -- kernels --------------------------------------------------------------------------
    def labellings(self, plan: Any, start: int, stop: int) -> Any:
        """Labellings ``[start, stop)`` drawn on the device (bit-identical to the CPU's)."""
        from permenrich.kernels.permutations import launch_labellings

        mode, exact, offsets, members, drawn, radix, binom, factorial, largest = plan.generator_arrays()
        n = stop - start
        out = _cuda().device_array((n, plan.width), dtype=np.int64)
        pool = _cuda().device_array((n, max(1, largest)), dtype=np.int64)
        launch_labellings(np.uint64(plan.seed), start, mode, exact, tuple(
            self._to_device(a) for a in (offsets, members, drawn, radix, binom, factorial)), pool, out)
        return out

    def gene_statistics(self, labellings: Any) -> Any:
        """Per-gene statistics, shape (n_batch, n_genes), as an ``xp`` array."""
        from permenrich.kernels.statistics import launch_correlation, launch_two_group

        statistic = self._statistic
        if isinstance(statistic, _DeviceStreamed):
            return self._streamed_statistics(labellings)
        drawn = self._as_device(labellings)
        if isinstance(statistic, _DeviceCovariates):
            dots = []
            for vector in statistic.vectors:
                out = _cuda().device_array((drawn.shape[0], statistic.statistic.n_genes), dtype=np.float64)
                launch_correlation(statistic.residuals_by_sample, vector, drawn, out)
                dots.append(self._as_xp(out))
            return statistic.statistic.t_from_dots(dots, self.xp)
        if isinstance(statistic, _DeviceCorrelation):
            n_genes = statistic.genes_by_sample.shape[1]
            out = _cuda().device_array((drawn.shape[0], n_genes), dtype=np.float64)
            launch_correlation(statistic.genes_by_sample, statistic.phenotype, drawn, out)
        else:
            n_genes = statistic.arrays[0].shape[1]
            out = _cuda().device_array((drawn.shape[0], n_genes), dtype=np.float64)
            launch_two_group(*statistic.arrays, drawn, statistic.drawn_is_case, statistic.code, out)
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
        out = _cuda().device_array((n_batch, matrix.n_genes), dtype=np.float64)
        launch_finish_two_group(sums, sumsqs, total_sum, total_sumsq, gene_mean, matrix.n_samples, n_drawn,
                                statistic.drawn_is_case, statistic.code, out)
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
        return cuda.to_device(centred_host), cuda.to_device(centred_host * centred_host)

    def _device_zeros(self, shape: tuple[int, ...]) -> Any:
        if self.cupy is not None:
            return _cuda().as_cuda_array(self.cupy.zeros(shape, dtype=np.float64))
        return _cuda().to_device(np.zeros(shape))

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
                launch(cuda.to_device(np.ascontiguousarray(values, dtype=np.float64)), sample_start, sample_stop,
                       gene_start, 0)
            return
        cp = self.cupy
        # Non-blocking streams do not wait for the default stream, where the zeroed sums
        # and the labellings were made: finish those first.
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

    def set_scores(self, stats: Any) -> Any:
        """Set statistics, shape (n_batch, n_sets), as an ``xp`` array."""
        if not isinstance(self._sets, _DeviceKs):
            return self._sets.scores(self.xp.asarray(stats))
        from permenrich.kernels.enrichment import launch_ks

        n_sets = self._sets.n_sets
        cuda = _cuda()
        device_stats = self._as_device(stats)
        n_batch, n_genes = device_stats.shape
        out = cuda.device_array((n_batch, n_sets), dtype=np.float64)
        per_perm = 8 * (5 * n_genes + FULL_PASSES * RADIX_SIZE + 8 * n_sets)
        rows = max(1, min(n_batch, self.scratch_bytes // per_perm))
        for start in range(0, n_batch, rows):
            stop = min(n_batch, start + rows)
            n = stop - start
            chunk = device_stats[start:stop]
            bits = chunk.view(np.uint64)
            scratch = [cuda.device_array((n, n_genes), dtype=np.int64), cuda.device_array((n, n_genes), np.uint64),
                       cuda.device_array((n, n_genes), np.uint64), cuda.device_array((n, n_genes), np.int64),
                       cuda.device_array((n, FULL_PASSES, RADIX_SIZE), np.int64),
                       cuda.device_array((n, n_genes), np.float64), cuda.device_array((n, n_sets, 8), np.float64)]
            launch_ks(chunk, bits, self._sets.weight, self._sets.arrays, scratch, out[start:stop])
        return self._as_xp(out)

    def score(self, labellings: Any, keep_stat: bool = False) -> tuple[Any, Any]:
        stats = self.gene_statistics(labellings)
        return self.set_scores(stats), (stats if keep_stat else None)

    def random_set_null(self, seed: int, perm_start: int, perm_stop: int, ranked_stat: np.ndarray,
                        weight: float, set_statistic: str, sizes: np.ndarray) -> Any:
        from permenrich.kernels.permutations import launch_random_sets

        from .cpu import SET_STATISTIC_CODES

        cuda = _cuda()
        n = perm_stop - perm_start
        n_genes = np.asarray(ranked_stat).size
        pool = self._to_device(np.tile(np.arange(n_genes, dtype=np.int64), (n, 1)))
        largest = int(np.max(sizes))
        sequence = cuda.device_array((n, largest), dtype=np.int64)
        prefix = cuda.device_array((n, largest), dtype=np.int64)
        out = cuda.device_array((n, np.asarray(sizes).size), dtype=np.float64)
        launch_random_sets(np.uint64(seed), perm_start, self._to_device(np.asarray(ranked_stat, dtype=np.float64)),
                           float(weight), SET_STATISTIC_CODES[set_statistic],
                           self._to_device(np.asarray(sizes, dtype=np.int64)), pool, sequence, prefix, out)
        return self._as_xp(out)

    def describe(self) -> dict:
        cuda = _cuda()
        from permenrich.kernels.device import FMA_CONTRACTION_OFF

        info: dict[str, Any] = {"backend": "gpu", "simulated": self.simulated,
                                "array_module": "cupy" if self.cupy is not None else "numpy",
                                "fma_contraction": "off" if FMA_CONTRACTION_OFF else "NVVM default"}
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
