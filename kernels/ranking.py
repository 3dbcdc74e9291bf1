"""Ranking on the device: one thread block per permutation.

The threads of a block sort one permutation's statistics together (cudaGSEA sorts a
batch with CUB's segmented radix sort; Numba-CUDA has no CUB, so this is our own block
radix sort):

* keys: the high 32 bits of the CPU's order-preserving 64-bit key
  (:func:`permenrich.stats.ranking._descending_key`), gene indices as payload, both in
  global memory (two buffers each; 16 B per gene): the whole list does not fit in shared
  memory with double buffering (20,639 genes x 12 B x 2 = 495 KB > 227 KB), and one
  buffer would need an in-place scatter;
* 8 stable passes of 4-bit digits: each thread counts the digits of its own contiguous
  chunk into a (16 x threads) table in shared memory (16 KB), one block-wide exclusive
  scan over that table in digit-major order gives every (digit, thread) its first slot,
  and each thread scatters its chunk in order, so equal digits keep their order (stable);
  a pass whose digit is the same for every key is skipped;
* exact fix-up: a run of keys with equal high 32 bits (statistics equal to about 1e-6,
  relative) is put in full 64-bit key order by the thread where it starts, by insertion
  (runs are short; exact ties are already in index order and cost one comparison each).
  Result: the CPU's order exactly (decreasing statistic, ties by lower gene index);
* outputs, written with coalesced strides: the rank table ``rank[b, gene]`` (int32)
  and the statistics in ranked order ``ranked_stat[b, position]``, which is what the
  ES-from-ranks kernel (:mod:`permenrich.kernels.enrichment`) reads.

Why 4-bit digits: the per-thread counts of 8-bit digits for 256 threads need 256 KB of
shared memory (or atomics in shared memory, which lose stability); 16 digits x 256
threads x 4 B = 16 KB leaves room for several resident blocks per SM to hide latency.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, int32, uint32, uint64

from .device import descending_key

#: Threads per ranking block on a device (the shared-memory tables are sized for it);
#: Numba's simulator, which runs every thread of a block as a Python thread, takes fewer.
RANK_THREADS = 256
SIMULATOR_RANK_THREADS = 4
DIGIT_BITS = 4
N_DIGITS = 1 << DIGIT_BITS
KEY_BITS = 32
KEY_PASSES = KEY_BITS // DIGIT_BITS
#: Device bytes per gene per permutation: keys and gene indices, two buffers each
#: (uint32 + int32), the rank table (int32) and the ranked statistics (float64).
RANK_BYTES_PER_GENE = 2 * 4 + 2 * 4 + 4 + 8


@functools.cache
def block_rank_kernel(n_threads: int):  # noqa: ANN201 - a Numba kernel
    """The ranking kernel for blocks of ``n_threads`` threads (a power of two; the
    shared-memory tables are sized at compile time)."""
    counts_size = N_DIGITS * n_threads
    partial_size = 2 * n_threads

    @cuda.jit
    def kernel(stats, stats_bits, keys, genes, rank, ranked_stat):
        """Block ``b`` ranks ``stats[b]``: ``rank[b, g]`` = position of gene g (0 = largest
        statistic, ties by lower index), ``ranked_stat[b, p]`` = statistic at position p.
        ``keys`` (2, n_batch, n_genes) uint32 and ``genes`` (2, n_batch, n_genes) int32 are
        scratch."""
        # One shared array per line: the simulator tells them apart by line.
        counts = cuda.shared.array(counts_size, int32)
        partial = cuda.shared.array(partial_size, int32)
        rank_block(n_threads, stats, stats_bits, keys, genes, rank, ranked_stat, counts, partial)

    return kernel


@cuda.jit(device=True)
def rank_block(n_threads, stats, stats_bits, keys, genes, rank, ranked_stat, counts, partial):
    """The body of :func:`block_rank_kernel`; ``counts`` and ``partial`` are the block's
    shared tables (16 x ``n_threads`` and 2 x ``n_threads`` int32)."""
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n = stats.shape[1]
    chunk = (n + n_threads - 1) // n_threads
    lo = min(n, t * chunk)
    hi = min(n, lo + chunk)
    for i in range(t, n, n_threads):
        keys[0, b, i] = uint32(descending_key(stats[b, i], stats_bits[b, i]) >> uint64(32))
        genes[0, b, i] = i
    cuda.syncthreads()
    src = 0
    for p in range(KEY_PASSES):
        shift = uint32(p * DIGIT_BITS)
        for d in range(N_DIGITS):
            counts[d * n_threads + t] = 0
        cuda.syncthreads()
        for i in range(lo, hi):
            d = int32((keys[src, b, i] >> shift) & uint32(N_DIGITS - 1))
            counts[d * n_threads + t] += 1
        cuda.syncthreads()
        # Exclusive scan of the table in digit-major order: thread t owns entries
        # t*16 .. t*16+15; a Hillis–Steele scan combines the threads' totals.
        base = t * N_DIGITS
        total = 0
        for e in range(N_DIGITS):
            total += counts[base + e]
        partial[t] = total
        cuda.syncthreads()
        here = 0
        step = 1
        while step < n_threads:
            value = partial[here * n_threads + t]
            if t >= step:
                value += partial[here * n_threads + t - step]
            partial[(1 - here) * n_threads + t] = value
            here = 1 - here
            step *= 2
            cuda.syncthreads()
        running = partial[here * n_threads + t] - total
        for e in range(N_DIGITS):
            count = counts[base + e]
            counts[base + e] = running
            running += count
        cuda.syncthreads()
        # A pass whose digit is the same for every key would move nothing (every thread
        # reads the same shared values, so the branch is uniform).
        first_digit = int32((keys[src, b, 0] >> shift) & uint32(N_DIGITS - 1))
        first_start = counts[first_digit * n_threads]
        next_start = n if first_digit == N_DIGITS - 1 else counts[(first_digit + 1) * n_threads]
        if next_start - first_start == n:
            cuda.syncthreads()
            continue
        for i in range(lo, hi):
            key = keys[src, b, i]
            d = int32((key >> shift) & uint32(N_DIGITS - 1))
            slot = counts[d * n_threads + t]
            counts[d * n_threads + t] = slot + 1
            keys[1 - src, b, slot] = key
            genes[1 - src, b, slot] = genes[src, b, i]
        src = 1 - src
        cuda.syncthreads()
    # Runs of equal high bits into full-key order; each run is handled by the thread
    # whose chunk holds its first slot (runs are disjoint, so no two threads write alike).
    for i in range(lo, hi):
        key = keys[src, b, i]
        if (i == 0 or keys[src, b, i - 1] != key) and i + 1 < n and keys[src, b, i + 1] == key:
            stop = i + 1
            while stop < n and keys[src, b, stop] == key:
                stop += 1
            for a in range(i + 1, stop):
                gene = genes[src, b, a]
                full = descending_key(stats[b, gene], stats_bits[b, gene])
                c = a - 1
                while c >= i:
                    other = genes[src, b, c]
                    if descending_key(stats[b, other], stats_bits[b, other]) <= full:
                        break
                    genes[src, b, c + 1] = other
                    c -= 1
                genes[src, b, c + 1] = gene
    cuda.syncthreads()
    for position in range(t, n, n_threads):
        gene = genes[src, b, position]
        rank[b, gene] = position
        ranked_stat[b, position] = stats[b, gene]


def launch_block_rank(stats, stats_bits, keys, genes, rank, ranked_stat, stream, n_threads=RANK_THREADS):  # noqa: ANN001
    """Rank every row of ``stats`` (one block of ``n_threads`` per row) on ``stream``."""
    block_rank_kernel(n_threads)[stats.shape[0], n_threads, stream](stats, stats_bits, keys, genes, rank, ranked_stat)


def rank_scratch(n_batch: int, n_genes: int, stream) -> tuple:  # noqa: ANN001
    """Device buffers for :func:`launch_block_rank`: keys, genes, rank, ranked_stat."""
    return (cuda.device_array((2, n_batch, n_genes), dtype=np.uint32, stream=stream),
            cuda.device_array((2, n_batch, n_genes), dtype=np.int32, stream=stream),
            cuda.device_array((n_batch, n_genes), dtype=np.int32, stream=stream),
            cuda.device_array((n_batch, n_genes), dtype=np.float64, stream=stream))
