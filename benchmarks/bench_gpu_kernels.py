"""The GPU's set-scoring kernels alone, old and new side by side, on the cudaGSEA shape.

Gene statistics for a batch of permutations are made once on the device (random
normals, as signal-to-noise values look), then each kernel is timed on them:

* ``per-permutation``: the first kernel, one thread ranks and walks a whole permutation;
* ``ranks``: block ranking (one block per permutation, :mod:`permenrich.kernels.ranking`)
  then the ES from ranks, one thread per (set, permutation)
  (:mod:`permenrich.kernels.enrichment`); also with the sets whose shared-memory blocks
  would be narrower than 64 or 128 permutations sorted in global scratch instead
  (``min_shared_width``: the first H200 run found the narrowest blocks latency bound),
  and with the shared-memory sets sorted by a bitonic network instead of a heap sort
  (``es_sort``: branch-free, the same exchanges in every thread) or by a warp through a
  bitmap of ranked positions (``es_sort="bitmap"``);
* ``ranking only``: the block ranking alone, to split the time between the two;
* each size class of sets alone under each sort (the ES kernels only, on one batch's
  rank tables), to choose a sort per class.

Reports the median seconds per launch over ``--repeats`` launches (after one warm-up),
the seconds per 1e6 permutations this extrapolates to, the device memory the memory model
counts, and CuPy's peak pool memory. Both kernels' scores are compared exactly.

Usage (on a GPU machine; ``--smoke`` runs a tiny case in Numba's simulator)::

    python benchmarks/bench_gpu_kernels.py --batch 4096 --out benchmarks/results/gpu_kernels_<date>.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if "PYTHONPATH" not in os.environ:  # an explicit PYTHONPATH picks the checkout to measure
    sys.path.insert(0, str(ROOT / "src"))


def workload_sets(n_genes: int, n_sets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Set index of the cudaGSEA workload: sizes 15-500, log-uniform (as bench_cudagsea)."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(np.exp(rng.uniform(np.log(15), np.log(500), size=n_sets)).astype(int), 15, min(500, n_genes - 1))
    members = np.concatenate([np.sort(rng.choice(n_genes, size=k, replace=False)) for k in sizes])
    return members.astype(np.int64), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def time_size_classes(members: np.ndarray, offsets: np.ndarray, stats: np.ndarray, n_genes: int, sort: str,
                      repeats: int) -> list[tuple[int, int, int, float]]:
    """(slot, sets, memberships, median seconds) of the ES kernels for each size class
    alone under ``sort``, on the rank tables of one ranked batch. Every sort puts the sets
    of 15-500 genes in the same slots, so the rows of two sorts are the same classes."""
    from numba import cuda

    from permenrich.backends.gpu import GpuBackend
    from permenrich.kernels.enrichment import launch_es_from_ranks
    from permenrich.kernels.ranking import launch_block_rank, rank_scratch

    backend = GpuBackend(scratch_bytes=1 << 62)
    backend.es_sort = sort
    backend.prepare_sets("ks", members, offsets, 1.0, n_genes)
    device_stats = backend._to_device(stats)
    scratch = rank_scratch(stats.shape[0], n_genes, backend.stream)
    launch_block_rank(device_stats, device_stats.view(np.uint64), scratch, backend.stream, backend.rank_threads)
    rank, ranked_stat, stat_by_gene = scratch[2:]
    sets = backend._sets
    positions = backend._empty((max(1, sets.n_global_memberships), stats.shape[0]), np.int32)
    out = backend._empty((stats.shape[0], sets.n_sets), np.float64)
    sizes = np.diff(offsets)
    timings = []
    for size_class in sorted(sets.size_classes, key=lambda c: c[1]):
        def launch() -> None:
            launch_es_from_ranks((stat_by_gene, rank, ranked_stat), 1.0, sets.members32, sets.arrays[1],
                                 [size_class], positions, out, backend.stream, sort)
        launch()  # compile and warm up
        cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            launch()
            cuda.synchronize()
            times.append(time.perf_counter() - start)
        class_sets = backend.to_host(size_class[0])
        timings.append((size_class[1], class_sets.size, int(sizes[class_sets].sum()), statistics.median(times)))
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genes", type=int, default=20_639)
    parser.add_argument("--sets", type=int, default=4_725)
    parser.add_argument("--batch", type=int, default=4096, help="permutations per launch")
    parser.add_argument("--old-batch", type=int, default=256,
                        help="permutations per launch of the old kernel (slow: estimated hours per 1e6)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny case in the CUDA simulator (checks the script)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.smoke:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        args.genes, args.sets, args.batch, args.old_batch, args.repeats = 40, 6, 3, 2, 1

    from numba import cuda

    from permenrich.backends.gpu import GpuBackend, device_bytes_per_permutation
    from permenrich.kernels.enrichment import ES_SORTS

    members, offsets = workload_sets(args.genes, args.sets)
    stats = np.random.default_rng(1).normal(size=(args.batch, args.genes))
    rows = []
    results = {}
    variants = [("ranks", "ranks", 32, "heap"), ("ranks, bitonic sort", "ranks", 32, "bitonic"),
                ("ranks, bitmap sort", "ranks", 32, "bitmap"),
                ("ranks, large sets global (< 64 wide)", "ranks", 64, "heap"),
                ("ranks, large sets global (< 128 wide)", "ranks", 128, "heap"),
                ("ranks, bitonic, large sets global (< 128 wide)", "ranks", 128, "bitonic"),
                ("ranking only", "ranks", 32, "heap"), ("per-permutation", "per-permutation", 32, "heap")]
    for name, kernel, min_width, sort in variants:
        batch = args.batch if kernel == "ranks" else min(args.batch, args.old_batch)
        backend = GpuBackend(es_kernel=kernel, scratch_bytes=1 << 62)
        backend.min_shared_width = min_width
        backend.es_sort = sort
        backend.prepare_sets("ks", members, offsets, 1.0, args.genes)
        device_stats = backend._to_device(stats[:batch])
        if name == "ranking only":
            from permenrich.kernels.ranking import launch_block_rank, rank_scratch

            scratch = rank_scratch(batch, args.genes, backend.stream)

            def launch() -> None:
                launch_block_rank(device_stats, device_stats.view(np.uint64), scratch, backend.stream,
                                  backend.rank_threads)
        else:
            def launch() -> None:
                results[name] = backend.set_scores(device_stats)
        launch()  # compile and warm up
        cuda.synchronize()
        pool = getattr(backend.cupy, "get_default_memory_pool", lambda: None)() if backend.cupy else None
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            launch()
            cuda.synchronize()
            times.append(time.perf_counter() - start)
        if name in results:
            results[name] = backend.to_host(results[name])
        median = statistics.median(times)
        model = device_bytes_per_permutation(args.genes, args.sets, int(offsets[-1]), 17, kernel)
        peak = f"{pool.total_bytes() / 2**30:.2f} GiB" if pool is not None else "—"
        rows.append((name, batch, median, median / batch * 1e6, sum(model.values()) * batch / 2**30, peak))
        print(rows[-1], flush=True)
    by_class = {sort: time_size_classes(members, offsets, stats[:args.batch], args.genes, sort, args.repeats)
                for sort in ES_SORTS}
    for sort, timings in by_class.items():
        print(sort, [(slot, round(seconds, 5)) for slot, _, _, seconds in timings], flush=True)
    # The fastest sort of each shared-memory class, as PERMENRICH_GPU_ES_SORT takes it
    # (device_session.sh passes it on to the whole runs).
    best = ",".join(f"{row[0][0]}={min(zip(ES_SORTS, row), key=lambda pair: pair[1][3])[0]}"
                    for row in zip(*by_class.values()) if row[0][0])
    print(f"fastest sort per class: {best}", flush=True)
    common = min(args.batch, args.old_batch)
    reference = results["ranks"]
    identical = all(np.array_equal(other[:common].view(np.uint64), reference[:common].view(np.uint64))
                    for other in results.values())
    print("scores identical:", identical)
    if args.out:
        from bench_cudagsea import gpu_description

        lines = [f"# GPU set-scoring kernels, cudaGSEA shape — {dt.date.today().isoformat()}", "",
                 f"Run by `benchmarks/bench_gpu_kernels.py`. GPU: {gpu_description()}.", "",
                 f"{args.genes:,} genes, {args.sets:,} sets (15-500 genes, {int(offsets[-1]):,} memberships), "
                 f"median of {args.repeats} launches. "
                 f"Scores of all variants identical: {identical}.", "",
                 "| kernel | batch | s per launch | s per 1e6 permutations | model GiB per launch | CuPy pool |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {k} | {b:,} | {t:.4f} | {m:.1f} | {g:.2f} | {p} |" for k, b, t, m, g, p in rows]
        lines += ["", f"ES kernels alone, one size class at a time (batch {args.batch:,}, weight 1; slot 0: global "
                  "scratch), median ms per launch:", "",
                  "| slot | sets | memberships | " + " | ".join(ES_SORTS) + " |",
                  "| ---: | ---: | ---: | " + " | ".join("---:" for _ in ES_SORTS) + " |"]
        for row in zip(*by_class.values()):
            slot, n_sets, n_members = row[0][:3]
            lines.append(f"| {slot} | {n_sets:,} | {n_members:,} | "
                         + " | ".join(f"{seconds * 1e3:.2f}" for *_, seconds in row) + " |")
        lines += ["", f"Fastest sort per class (`PERMENRICH_GPU_ES_SORT`): `{best}`."]
        args.out.write_text("\n".join(lines) + "\n")
        print(f"report written to {args.out}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
