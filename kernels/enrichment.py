"""Running-sum enrichment scores on the device.

Default (``es_kernel="ranks"``): the ranking kernel (:mod:`permenrich.kernels.ranking`,
one block per permutation) writes each permutation's rank table; then each (set,
permutation) is scored on its own thread from the set's members only: gather their
ranks, heap-sort them (k <= a few hundred), and take the running-sum extremum in closed
form, O(k log k) per set instead of a walk over every gene. The sort runs in dynamic
shared memory (uint16 positions, one slot per thread; :func:`size_classes` groups the
sets so that a block's slots fit in 48 KB), or in global memory for sets too large for
that. The extremum stays one thread's sequential pass: its float64 sums must be added in
the CPU's order to give the CPU's bits.

``es_kernel="per-permutation"`` keeps the first GPU kernel (one thread ranks and walks a
whole permutation, scratch in global memory) for side-by-side benchmarks only.

Both give the CPU's scores bit for bit: the same ranking and the same steps in the same
order (:func:`permenrich.enrich.running_sum._ks_from_sorted_positions`; the hit-weight
sum ``N_R`` is added in set-member order, as the CPU's walk adds it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, uint16

from permenrich.stats.ranking import FULL_PASSES

from .device import (THREADS_PER_BLOCK, enrichment_scores, grid_1d, heap_sort, hit_weight, ks_from_sorted_positions,
                     rank_descending)


@cuda.jit(device=True)
def set_score_from_ranks(b, s, stats, rank, ranked_stat, weight, set_members, set_offsets, scratch):
    """ES of set s for permutation b: gather its members' ranks into ``scratch`` (at least
    the set's size), heap-sort them, and take the running-sum extremum in closed form.
    ``N_R`` is added in member order, as the CPU's walk adds it."""
    first = set_offsets[s]
    last = set_offsets[s + 1]
    norm = 0.0
    n_infinite = 0
    for t in range(first, last):
        gene = set_members[t]
        w = hit_weight(stats[b, gene], weight)
        if w == math.inf:
            n_infinite += 1
        else:
            norm += w
        scratch[t - first] = rank[b, gene]
    members = scratch[: last - first]
    heap_sort(members, last - first)
    return ks_from_sorted_positions(members, ranked_stat[b], weight, norm, n_infinite, stats.shape[1])


@cuda.jit
def es_from_ranks_shared_kernel(stats, rank, ranked_stat, weight, set_members, set_offsets, class_sets, slot, out):
    """``out[b, s]`` for the sets ``class_sets`` (sizes up to ``slot``): each thread sorts
    its set's ranks in its own ``slot`` of the block's dynamic shared memory (uint16
    positions), where scattered accesses cost a few bank conflicts instead of a cache
    line each."""
    i, b = cuda.grid(2)
    scratch = cuda.shared.array(0, dtype=uint16)
    if i >= class_sets.shape[0] or b >= stats.shape[0]:
        return
    t = cuda.threadIdx.x
    s = class_sets[i]
    out[b, s] = set_score_from_ranks(b, s, stats, rank, ranked_stat, weight, set_members, set_offsets,
                                     scratch[t * slot: (t + 1) * slot])


@cuda.jit
def es_from_ranks_kernel(stats, rank, ranked_stat, weight, set_members, set_offsets, class_sets, starts, positions,
                         out):
    """``out[b, s]`` for the sets ``class_sets`` whose ranks do not fit in shared memory
    (large sets, or more than 65,536 genes): set ``class_sets[i]`` sorts in
    ``positions[b, starts[i]:starts[i + 1]]``."""
    i, b = cuda.grid(2)
    if i >= class_sets.shape[0] or b >= stats.shape[0]:
        return
    s = class_sets[i]
    out[b, s] = set_score_from_ranks(b, s, stats, rank, ranked_stat, weight, set_members, set_offsets,
                                     positions[b, starts[i]:starts[i + 1]])


def launch_es_from_ranks(stats, rank, ranked_stat, weight, set_members, set_offsets, size_classes, positions,  # noqa: ANN001
                         out, stream):
    """ES of every (set, permutation). ``size_classes``: (device set indices, slot,
    threads per block, scratch starts) per class of similar sizes (see
    :func:`size_classes`). Consecutive threads take consecutive sets of one permutation,
    so a block reads one rank table."""
    for class_sets, slot, threads, starts in size_classes:
        blocks = ((class_sets.shape[0] + threads - 1) // threads, stats.shape[0])
        if slot:
            es_from_ranks_shared_kernel[blocks, (threads, 1), stream, 2 * slot * threads](
                stats, rank, ranked_stat, weight, set_members, set_offsets, class_sets, slot, out)
        else:
            es_from_ranks_kernel[blocks, (threads, 1), stream](stats, rank, ranked_stat, weight, set_members,
                                                               set_offsets, class_sets, starts, positions, out)


def size_classes(sizes: np.ndarray, n_genes: int, shared_bytes: int = 48 * 1024,
                 threads_per_block: int = THREADS_PER_BLOCK) -> list[tuple[np.ndarray, int, int, np.ndarray]]:
    """Group sets by size for :func:`launch_es_from_ranks`: (set indices, slot, threads,
    scratch starts).


    Sets go to the shared-memory kernel in classes of power-of-two slots (at least 32
    positions), with as many threads per block (up to ``threads_per_block``, at least a
    warp) as ``shared_bytes`` of uint16 slots allow; sets too large for a warp's worth of
    slots, and every set when positions do not fit in 16 bits, go to the global-scratch
    kernel (slot 0; ``starts`` are their slices of the global scratch, whose length is
    the last start). Within a class, sets are largest first, so a warp's threads do
    similar work.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    by_size = np.argsort(-sizes, kind="stable")
    slots = np.maximum(32, 2 ** np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64))
    classes = []
    global_sets = []
    for slot in sorted(set(slots[by_size].tolist())):
        members = by_size[slots[by_size] == slot]
        threads = min(threads_per_block, shared_bytes // (2 * slot))
        if n_genes > np.iinfo(np.uint16).max + 1 or threads < 32:
            global_sets.append(members)
            continue
        classes.append((members.astype(np.int64), int(slot), int(min(threads, members.size)), np.zeros(1, np.int64)))
    if global_sets:
        members = np.concatenate(global_sets)
        members = members[np.argsort(-sizes[members], kind="stable")]
        starts = np.concatenate([[0], np.cumsum(sizes[members])]).astype(np.int64)
        classes.append((members.astype(np.int64), 0, int(min(threads_per_block, members.size)), starts))
    return classes


@cuda.jit
def ks_kernel(stats, stats_bits, weight, set_members, set_offsets, gene_set_offsets, gene_set_ids, order,
              keys, keys_tmp, order_tmp, histogram, gene_weight, state, out):
    """The first GPU kernel, kept for benchmarks: ``out[b, s]``, ES of set s for the
    ranking of ``stats[b]``, one thread per permutation (full 64-bit radix sort and a walk
    over all genes); the other arrays are per-permutation scratch."""
    b = cuda.grid(1)
    if b >= stats.shape[0]:
        return
    rank_descending(stats[b], stats_bits[b], FULL_PASSES, order[b], keys[b], keys_tmp[b], order_tmp[b],
                    histogram[b])
    enrichment_scores(stats[b], order[b], weight, set_members, set_offsets, gene_set_offsets, gene_set_ids,
                      gene_weight[b], state[b], out[b])


def launch_ks(stats, stats_bits, weight, set_arrays, scratch, out, stream):  # noqa: ANN001
    """ES of every set for each row of ``stats`` with :func:`ks_kernel`; ``set_arrays`` =
    (members, offsets, gene_set_offsets, gene_set_ids), ``scratch`` = per-permutation
    buffers (order, keys, keys_tmp, order_tmp, histogram, gene_weight, state)."""
    blocks, threads = grid_1d(stats.shape[0])
    ks_kernel[blocks, threads, stream](stats, stats_bits, weight, *set_arrays, *scratch, out)
