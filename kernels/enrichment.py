"""Running-sum enrichment scores on the device: one thread per permutation.

Each thread ranks its permutation's statistics (full 64-bit LSD radix sort, exact) and
walks the ranked genes once through the gene -> sets index, like the CPU kernel. This
first GPU version favours exactness and simplicity (per-thread scratch in global memory);
block-cooperative sorting in shared memory is the next step, to be measured on a device.
"""

from __future__ import annotations

from numba import cuda

from permenrich.stats.ranking import FULL_PASSES

from .device import enrichment_scores, grid_1d, rank_descending


@cuda.jit
def ks_kernel(stats, stats_bits, weight, set_members, set_offsets, gene_set_offsets, gene_set_ids, order,
              keys, keys_tmp, order_tmp, histogram, gene_weight, state, out):
    """``out[b, s]``: ES of set s for the ranking of ``stats[b]``; the other arrays are
    per-permutation scratch (first axis = permutation)."""
    b = cuda.grid(1)
    if b >= stats.shape[0]:
        return
    rank_descending(stats[b], stats_bits[b], FULL_PASSES, order[b], keys[b], keys_tmp[b], order_tmp[b],
                    histogram[b])
    enrichment_scores(stats[b], order[b], weight, set_members, set_offsets, gene_set_offsets, gene_set_ids,
                      gene_weight[b], state[b], out[b])


def launch_ks(stats, stats_bits, weight, set_arrays, scratch, out):  # noqa: ANN001
    """ES of every set for each row of ``stats``; ``set_arrays`` = (members, offsets,
    gene_set_offsets, gene_set_ids), ``scratch`` = per-permutation buffers (order, keys,
    keys_tmp, order_tmp, histogram, gene_weight, state)."""
    blocks, threads = grid_1d(stats.shape[0])
    ks_kernel[blocks, threads](stats, stats_bits, weight, *set_arrays, *scratch, out)
