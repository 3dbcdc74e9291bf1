"""Ranking genes by a statistic: descending, ties broken by gene index.

Tie rule (every backend, documented in run.json): genes are ordered by decreasing
statistic; equal statistics are ordered by their row index in the expression matrix
after collapsing (lower index first). ``-0.0`` and ``0.0`` are equal. GSEApy orders ties
in reverse index order and fgsea in index order, so ES can differ from GSEApy's only when
a set's members tie with non-members.

The compiled ranking maps each float64 to an order-preserving unsigned 64-bit key and
runs a stable least-significant-digit radix sort with the gene index as payload (see
:func:`rank_descending`).
"""

from __future__ import annotations

import numba
import numpy as np

_RADIX_BITS = 11
_RADIX_SIZE = 1 << _RADIX_BITS
_RADIX_PASSES = 3  # the high 33 bits; the low 31 are settled by an insertion pass
_LOW_BITS = 64 - _RADIX_PASSES * _RADIX_BITS


@numba.njit(cache=True, inline="always", error_model="numpy")
def descending_key(value, bits):
    """Unsigned key whose ascending order is the descending order of ``value``;
    ``bits`` is the IEEE-754 bit pattern of ``value``."""
    if value == 0.0:
        bits = np.uint64(0)  # fold -0.0 onto +0.0 so that they tie
    if bits >> np.uint64(63):
        ascending = ~bits
    else:
        ascending = bits | np.uint64(0x8000000000000000)
    return ~ascending


@numba.njit(cache=True, error_model="numpy")
def rank_descending(stat, order, keys, keys_tmp, order_tmp, histogram):
    """Write into ``order`` the gene indices sorted by decreasing ``stat`` (ties: lower
    index first).

    Scratch: ``keys``, ``keys_tmp`` (uint64, n); ``order_tmp`` (int64, n); ``histogram``
    (int64, (3, 2048)).

    A stable LSD radix sort on the high 33 bits of the keys (3 passes of 11 bits) leaves
    out of order only neighbours whose statistics agree to about 2**-21 relative; a final
    pass sorts each run of equal high bits on the full 64-bit keys. Exact, stable, and about
    half the work of sorting all 64 bits.
    """
    n = stat.shape[0]
    histogram[:, :] = 0
    mask = np.uint64(_RADIX_SIZE - 1)
    stat_bits = stat.view(np.uint64)
    for i in range(n):
        key = descending_key(stat[i], stat_bits[i])
        keys[i] = key
        order[i] = i
        for p in range(_RADIX_PASSES):
            histogram[p, np.int64((key >> np.uint64(_LOW_BITS + p * _RADIX_BITS)) & mask)] += 1
    src_keys, dst_keys = keys, keys_tmp
    src_order, dst_order = order, order_tmp
    swapped = False
    for p in range(_RADIX_PASSES):
        shift = np.uint64(_LOW_BITS + p * _RADIX_BITS)
        # Skip a pass whose digit is the same for all keys: it would not move anything.
        first_digit = np.int64((src_keys[0] >> shift) & mask)
        if histogram[p, first_digit] == n:
            continue
        total = 0
        for d in range(_RADIX_SIZE):
            count = histogram[p, d]
            histogram[p, d] = total
            total += count
        for i in range(n):
            key = src_keys[i]
            d = np.int64((key >> shift) & mask)
            position = histogram[p, d]
            histogram[p, d] = position + 1
            dst_keys[position] = key
            dst_order[position] = src_order[i]
        src_keys, dst_keys = dst_keys, src_keys
        src_order, dst_order = dst_order, src_order
        swapped = not swapped
    # Runs of equal high bits are put in full-key order; they are rare and short, but a
    # run can be long on adversarial data, so long runs take a stable merge sort.
    high_mask = ~np.uint64((1 << _LOW_BITS) - 1)
    start = 0
    while start < n:
        stop = start + 1
        high = src_keys[start] & high_mask
        while stop < n and (src_keys[stop] & high_mask) == high:
            stop += 1
        if stop - start > 32:
            run_order = np.argsort(src_keys[start:stop], kind="mergesort")
            run_keys = src_keys[start:stop][run_order]
            run_genes = src_order[start:stop][run_order]
            src_keys[start:stop] = run_keys
            src_order[start:stop] = run_genes
        elif stop - start > 1:
            for i in range(start + 1, stop):
                key = src_keys[i]
                gene = src_order[i]
                j = i - 1
                while j >= start and src_keys[j] > key:
                    src_keys[j + 1] = src_keys[j]
                    src_order[j + 1] = src_order[j]
                    j -= 1
                src_keys[j + 1] = key
                src_order[j + 1] = gene
        start = stop
    if swapped:
        for i in range(n):
            order[i] = src_order[i]


def ranking_reference(stat: np.ndarray) -> np.ndarray:
    """Gene indices by decreasing ``stat``, ties by lower index (NumPy reference)."""
    stat = np.asarray(stat, dtype=np.float64)
    return np.lexsort((np.arange(stat.size), -stat))


def rank_genes(stat: np.ndarray) -> np.ndarray:
    """Gene indices by decreasing ``stat`` with the compiled radix sort (see module doc)."""
    stat = np.ascontiguousarray(stat, dtype=np.float64)
    n = stat.size
    order = np.empty(n, dtype=np.int64)
    rank_descending(
        stat, order, np.empty(n, np.uint64), np.empty(n, np.uint64), np.empty(n, np.int64),
        np.zeros((_RADIX_PASSES, _RADIX_SIZE), np.int64),
    )
    return order
