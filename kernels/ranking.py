"""Ranking on the device: one thread block per permutation.

The threads of a block sort one permutation's statistics together (cudaGSEA sorts a
batch with CUB's segmented radix sort; Numba-CUDA has no CUB, so this is our own block
radix sort):

* keys: the high 32 bits of the CPU's order-preserving 64-bit key
  (:func:`permenrich.stats.ranking._descending_key`), gene indices as payload, both in
  global memory (two buffers each; 16 B per gene): the whole list does not fit in shared
  memory with double buffering (20,639 genes x 12 B x 2 = 495 KB > 227 KB), and one
  buffer would need an in-place scatter;
* 8 stable passes of 4-bit digits. The digit totals of all passes are counted once,
  when the keys are made. Each pass goes through the keys in tiles of 8 per thread: the
  tile is read coalesced into shared memory (each thread's 8 items in a padded row), each
  thread counts the digits of its 8 items into a (16 x threads) table, one block-wide
  exclusive scan over that table in digit-major order gives every (digit, thread) its
  place within the tile, and the digit's running base places the tile after the earlier
  ones; each thread then scatters its items in order, so equal digits keep their order
  (stable). A pass whose digit is the same for every key is skipped;
* exact fix-up: a run of keys with equal high 32 bits (statistics equal to about 1e-6,
  relative) is put in full 64-bit key order by the thread where it starts, by insertion
  (runs are short; exact ties are already in index order and cost one comparison each).
  Result: the CPU's order exactly (decreasing statistic, ties by lower gene index);
* outputs: gene-major where the ES kernel's warps (32 permutations of one set) gather
  by gene, so that they read them coalesced: the rank table ``rank[gene, b]`` (int32) and
  the statistics ``stat[gene, b]`` (float64), whose writes here are strided by the batch
  (a sector each: ~0.3 s per 1e6 permutations in the cost model, against ~5 s saved on
  the gathers); permutation-major where each thread reads at its own positions anyway:
  the statistics in ranked order ``ranked_stat[b, position]`` (float64), written
  coalesced, and a row the ES's closed-form pass indexes without a multiply.

Why 4-bit digits: the per-thread counts of 8-bit digits for 256 threads need 256 KB of
shared memory (or atomics in shared memory, which lose stability); 16 digits x 256
threads x 4 B = 16 KB, plus the tile (18 KB), leaves room for several resident blocks per
SM to hide latency.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import cuda, int32, uint32, uint64

from .device import descending_key, kernel_jit

#: Threads per ranking block on a device (the shared-memory tables are sized for it);
#: Numba's simulator, which runs every thread of a block as a Python thread, takes fewer.
RANK_THREADS = 256
SIMULATOR_RANK_THREADS = 4
DIGIT_BITS = 4
N_DIGITS = 1 << DIGIT_BITS
KEY_BITS = 32
KEY_PASSES = KEY_BITS // DIGIT_BITS
#: Entries of a tile's digit-start table (one past the last digit). A named constant, as
#: Numba-CUDA sizes shared arrays from literals only (``N_DIGITS + 1`` is typed int64).
DIGIT_STARTS = N_DIGITS + 1
#: Keys per thread in a tile, and the padded row length of a thread's items in shared
#: memory (odd, so that threads reading their j-th item hit different banks).
TILE_ITEMS = 8
TILE_STRIDE = TILE_ITEMS + 1
#: Device bytes per gene per permutation: keys and gene indices, two buffers each
#: (uint32 + int32), the rank table (int32), the ranked and the gene-major statistics
#: (float64 each).
RANK_BYTES_PER_GENE = 2 * 4 + 2 * 4 + 4 + 8 + 8


@functools.cache
def block_rank_kernel(n_threads: int):  # noqa: ANN201 - a Numba kernel
    """The ranking kernel for blocks of ``n_threads`` threads (a power of two; the
    shared-memory tables are sized at compile time)."""
    counts_size = N_DIGITS * n_threads
    partial_size = 2 * n_threads
    tile_size = n_threads * TILE_STRIDE
    totals_size = KEY_PASSES * N_DIGITS

    @kernel_jit
    def block_rank(stats, stats_bits, keys, genes, rank, ranked_stat, stat_by_gene):
        """Block ``b`` ranks ``stats[b]``: ``rank[g, b]`` = position of gene g (0 = largest
        statistic, ties by lower index), ``ranked_stat[b, p]`` = statistic at position p,
        ``stat_by_gene[g, b]`` = ``stats[b, g]``. ``keys`` (2, n_batch, n_genes) uint32 and
        ``genes`` (2, n_batch, n_genes) int32 are scratch."""
        # One shared array per line: the simulator tells them apart by line.
        counts = cuda.shared.array(counts_size, int32)
        partial = cuda.shared.array(partial_size, int32)
        tile_keys = cuda.shared.array(tile_size, uint32)
        tile_genes = cuda.shared.array(tile_size, int32)
        totals = cuda.shared.array(totals_size, int32)
        digit_base = cuda.shared.array(N_DIGITS, int32)
        tile_digit_start = cuda.shared.array(DIGIT_STARTS, int32)
        rank_block(n_threads, stats, stats_bits, keys, genes, rank, ranked_stat, stat_by_gene,
                   (counts, partial, tile_keys, tile_genes, totals, digit_base, tile_digit_start))

    return block_rank  # named so that profilers (ncu --kernel-name) can pick it out


@cuda.jit(device=True)
def digit_of(key, p):
    return int32((key >> uint32(p * DIGIT_BITS)) & uint32(N_DIGITS - 1))


@cuda.jit(device=True)
def exclusive_scan_counts(n_threads, t, counts, partial):
    """Exclusive prefix sums, in place, of the (16 x threads) table in digit-major order:
    thread t owns entries t*16 .. t*16+15; a Hillis–Steele scan combines the threads'
    totals. Ends with a barrier."""
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


@cuda.jit(device=True)
def rank_block(n_threads, stats, stats_bits, keys, genes, rank, ranked_stat, stat_by_gene, shared):
    """The body of :func:`block_rank_kernel`; ``shared`` holds the block's tables (digit
    counts per thread, scan buffer, one tile of keys and genes, each pass's digit totals,
    the digit bases and the current tile's digit starts).

    The permutation's rows (``keys[src, b]`` ...) are taken as contiguous 1-D views and
    every index is cast to uint32 where used: an element's address is then one add,
    without the 64-bit multiplies of a 3-D index or Numba's negative-index fix-ups."""
    counts, partial, tile_keys, tile_genes, totals, digit_base, tile_digit_start = shared
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n = stats.shape[1]
    stat_row = stats[b]
    bits_row = stats_bits[b]
    for i in range(t, KEY_PASSES * N_DIGITS, n_threads):
        totals[i] = 0
    cuda.syncthreads()
    # Keys, and the digit totals of every pass (counts: atomics keep them exact).
    first_keys = keys[0, b]
    first_genes = genes[0, b]
    for i in range(t, n, n_threads):
        key = uint32(descending_key(stat_row[uint32(i)], bits_row[uint32(i)]) >> uint64(32))
        first_keys[uint32(i)] = key
        first_genes[uint32(i)] = i
        for p in range(KEY_PASSES):
            cuda.atomic.add(totals, uint32(p * N_DIGITS + digit_of(key, p)), 1)
    cuda.syncthreads()
    tile = n_threads * TILE_ITEMS
    src = 0
    for p in range(KEY_PASSES):
        # A pass whose digit is the same for every key moves nothing (uniform branch:
        # every thread reads the same totals).
        single = False
        for d in range(N_DIGITS):
            if totals[p * N_DIGITS + d] == n:
                single = True
        if single:
            continue
        if t == 0:
            running = 0
            for d in range(N_DIGITS):
                digit_base[d] = running
                running += totals[p * N_DIGITS + d]
        source_keys = keys[src, b]
        source_genes = genes[src, b]
        target_keys = keys[1 - src, b]
        target_genes = genes[1 - src, b]
        for tile_start in range(0, n, tile):
            # The tile, read coalesced; thread u's items land in its own padded row
            # (an odd stride, so the rows fall in different banks).
            for i in range(t, tile, n_threads):
                if tile_start + i < n:
                    at = uint32((uint32(i) // TILE_ITEMS) * TILE_STRIDE + uint32(i) % TILE_ITEMS)
                    tile_keys[at] = source_keys[uint32(tile_start + i)]
                    tile_genes[at] = source_genes[uint32(tile_start + i)]
            for d in range(N_DIGITS):
                counts[uint32(d * n_threads + t)] = 0
            cuda.syncthreads()
            mine = min(TILE_ITEMS, max(0, n - tile_start - t * TILE_ITEMS))
            row = uint32(t * TILE_STRIDE)
            for j in range(mine):
                counts[uint32(digit_of(tile_keys[uint32(row + j)], p) * n_threads + t)] += 1
            cuda.syncthreads()
            exclusive_scan_counts(n_threads, t, counts, partial)
            # counts[d, u] is now the tile's items before (d, u) in digit-major order;
            # within digit d that is counts[d, u] - counts[d, 0]: add the digit's base.
            for d in range(t, N_DIGITS, n_threads):
                tile_digit_start[d] = counts[d * n_threads]
            if t == 0:
                tile_digit_start[N_DIGITS] = min(tile, n - tile_start)
            cuda.syncthreads()
            for d in range(N_DIGITS):
                counts[uint32(d * n_threads + t)] += digit_base[d] - tile_digit_start[d]
            # Stable scatter: a thread's items in order, threads in order within a digit.
            for j in range(mine):
                key = tile_keys[uint32(row + j)]
                at = uint32(digit_of(key, p) * n_threads + t)
                place = counts[at]
                counts[at] = place + 1
                target_keys[uint32(place)] = key
                target_genes[uint32(place)] = tile_genes[uint32(row + j)]
            cuda.syncthreads()
            for d in range(t, N_DIGITS, n_threads):
                digit_base[d] += tile_digit_start[d + 1] - tile_digit_start[d]
            cuda.syncthreads()
        src = 1 - src
    # Runs of equal high bits into full-key order; each run is handled by the thread
    # whose chunk holds its first slot (runs are disjoint, so no two threads write alike).
    sorted_keys = keys[src, b]
    sorted_genes = genes[src, b]
    chunk = (n + n_threads - 1) // n_threads
    lo = min(n, t * chunk)
    hi = min(n, lo + chunk)
    for i in range(lo, hi):
        key = sorted_keys[uint32(i)]
        if (i == 0 or sorted_keys[uint32(i - 1)] != key) and i + 1 < n and sorted_keys[uint32(i + 1)] == key:
            stop = i + 1
            while stop < n and sorted_keys[uint32(stop)] == key:
                stop += 1
            for a in range(i + 1, stop):
                gene = sorted_genes[uint32(a)]
                full = descending_key(stat_row[uint32(gene)], bits_row[uint32(gene)])
                c = a - 1
                while c >= i:
                    other = sorted_genes[uint32(c)]
                    if descending_key(stat_row[uint32(other)], bits_row[uint32(other)]) <= full:
                        break
                    sorted_genes[uint32(c + 1)] = other
                    c -= 1
                sorted_genes[uint32(c + 1)] = gene
    cuda.syncthreads()
    ranked_row = ranked_stat[b]
    for position in range(t, n, n_threads):
        gene = sorted_genes[uint32(position)]
        rank[uint32(gene), b] = position
        ranked_row[uint32(position)] = stat_row[uint32(gene)]
        stat_by_gene[uint32(position), b] = stat_row[uint32(position)]


def launch_block_rank(stats, stats_bits, scratch, stream, n_threads=RANK_THREADS):  # noqa: ANN001
    """Rank every row of ``stats`` (one block of ``n_threads`` per row) on ``stream``;
    ``scratch`` from :func:`rank_scratch` (keys, genes, rank, ranked_stat, stat_by_gene)."""
    block_rank_kernel(n_threads)[stats.shape[0], n_threads, stream](stats, stats_bits, *scratch)


def rank_scratch(n_batch: int, n_genes: int, stream, allocate=None) -> tuple:  # noqa: ANN001
    """Device buffers for :func:`launch_block_rank`: keys, genes (scratch), then the
    outputs rank (n_genes, n_batch), ranked_stat (n_batch, n_genes) and stat_by_gene
    (n_genes, n_batch).
    ``allocate(name, shape, dtype)`` supplies them (e.g. buffers reused between batches);
    by default they are new device arrays."""
    if allocate is None:
        def allocate(_name, shape, dtype):  # noqa: ANN001, ANN202
            return cuda.device_array(shape, dtype=dtype, stream=stream)
    return (allocate("rank keys", (2, n_batch, n_genes), np.uint32),
            allocate("rank genes", (2, n_batch, n_genes), np.int32),
            allocate("rank", (n_genes, n_batch), np.int32),
            allocate("ranked stat", (n_batch, n_genes), np.float64),
            allocate("stat by gene", (n_genes, n_batch), np.float64))
