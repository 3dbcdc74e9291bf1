"""Counter-based random numbers: Philox4x32-10 and the label permutations built on it.

Permutation ``k`` of a run is a pure function of ``(seed, k)``: it never depends on the
batch it falls in, on the number of threads, on the device or on the number of workers.
That is what makes results reproducible across batch sizes and backends.

The scalar functions below are written in the subset of Python that Numba compiles both
for the CPU (``numba.njit``) and for CUDA (``numba.cuda.jit(device=True)``); all integer
arithmetic is done on ``np.uint64`` so that NumPy, Numba and CUDA give identical bits
(mixing ``uint64`` with ``int64`` in Numba silently yields ``float64``).

References
----------
Salmon, Moraes, Dror & Shaw (2011), "Parallel random numbers: as easy as 1, 2, 3", SC'11.
Lemire (2019), "Fast random integer generation in an interval", ACM TOMACS 29(1).
"""

from __future__ import annotations

import numba
import numpy as np

from ._compile import cpu_family, inline

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_PHILOX_M0 = np.uint64(0xD2511F53)
_PHILOX_M1 = np.uint64(0xCD9E8D57)
_PHILOX_W0 = np.uint64(0x9E3779B9)
_PHILOX_W1 = np.uint64(0xBB67AE85)

#: Fourth counter word of every permutation draw; other streams (e.g. bootstrap) get
#: other tags so that they never overlap with permutation draws.
STREAM_PERMUTATION = 0x5045524D  # "PERM"
#: Gene-set (gene-label) permutation stream: one random sequence of distinct ranked
#: positions per permutation, whose first k elements are the random set of size k.
STREAM_GENE_SET = 0x47530000  # "GS"


@inline  # a call per block cost more than the block (7 against 26 ns per two buffered draws)
def _philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds on one 128-bit counter; all arguments ``np.uint64``
    holding 32-bit values. Returns the four 32-bit output words (as ``np.uint64``)."""
    for round_index in range(10):
        if round_index > 0:
            k0 = (k0 + _PHILOX_W0) & _MASK32
            k1 = (k1 + _PHILOX_W1) & _MASK32
        product0 = _PHILOX_M0 * c0  # < 2**64: both factors are 32-bit
        product1 = _PHILOX_M1 * c2
        hi0 = product0 >> _SHIFT32
        lo0 = product0 & _MASK32
        hi1 = product1 >> _SHIFT32
        lo1 = product1 & _MASK32
        c0 = hi1 ^ c1 ^ k0
        c1 = lo1
        c2 = hi0 ^ c3 ^ k1
        c3 = lo0
    return c0, c1, c2, c3


def _stream_word(seed, perm_index, word_index, tag):
    """32-bit word ``word_index`` of stream ``tag`` of permutation ``perm_index``.

    Counter = (k low, k high, block, tag); key = the 64-bit seed.
    """
    k = np.uint64(perm_index)
    block = np.uint64(word_index) >> np.uint64(2)
    lane = np.uint64(word_index) & np.uint64(3)
    s = np.uint64(seed)
    r0, r1, r2, r3 = _philox4x32_10(
        k & _MASK32, k >> _SHIFT32, block & _MASK32, np.uint64(tag) & _MASK32,
        s & _MASK32, s >> _SHIFT32,
    )
    if lane == np.uint64(0):
        return r0
    if lane == np.uint64(1):
        return r1
    if lane == np.uint64(2):
        return r2
    return r3


def _permutation_word(seed, perm_index, word_index):
    """Word ``word_index`` of permutation ``perm_index``'s label-permutation stream."""
    return _stream_word(seed, perm_index, word_index, STREAM_PERMUTATION)


def _bounded_index(seed, perm_index, word_cursor, bound):
    """An exactly uniform integer in ``[0, bound)`` from the label-permutation stream
    (see :func:`_bounded_index_tagged`)."""
    return _bounded_index_tagged(seed, perm_index, STREAM_PERMUTATION, word_cursor, bound)


def _bounded_index_tagged(seed, perm_index, tag, word_cursor, bound):
    """An exactly uniform integer in ``[0, bound)`` by Lemire's multiply-shift with
    rejection, reading words of stream ``tag`` from ``word_cursor`` on. Returns
    (value, next cursor).

    Integer-only: a float-derived index could round up to ``bound``.
    """
    s = np.uint64(bound)
    while True:
        x = _stream_word(seed, perm_index, word_cursor, tag)
        word_cursor += 1
        m = x * s
        if _lemire_accepts(m, s):
            return np.int64(m >> _SHIFT32), word_cursor


@inline
def _lemire_accepts(m, s):
    """Whether Lemire's product ``m`` of a 32-bit word and the bound ``s`` gives a uniform
    index (its low word is at least 2**32 mod s). That remainder is below s, so a low
    word >= s is accepted without the division."""
    return not ((m & _MASK32) < s and (m & _MASK32) < ((np.uint64(1) << _SHIFT32) - s) % s)


@inline
def _bounded_index_buffered(seed, perm_index, tag, word_cursor, bound, block):
    """:func:`_bounded_index_tagged` (the same words, the same values and cursors) for a
    caller that reads a stream word after word: ``block`` (uint64[5], zeros at first)
    keeps the last Philox block's four words and, in ``block[4]``, its index + 1, so
    that four consecutive words cost one block instead of four."""
    s = np.uint64(bound)
    while True:
        block_index = np.uint64(word_cursor) >> np.uint64(2)
        if block[4] != block_index + np.uint64(1):
            k = np.uint64(perm_index)
            key = np.uint64(seed)
            block[0], block[1], block[2], block[3] = _philox4x32_10(
                k & _MASK32, k >> _SHIFT32, block_index & _MASK32, np.uint64(tag) & _MASK32,
                key & _MASK32, key >> _SHIFT32)
            block[4] = block_index + np.uint64(1)
        x = block[np.uint64(word_cursor) & np.uint64(3)]
        word_cursor += 1
        m = x * s
        if _lemire_accepts(m, s):
            return np.int64(m >> _SHIFT32), word_cursor


def _insert_sorted(values, start, stop):
    """Sort ``values[:stop]`` ascending in place, ``values[:start]`` being sorted already:
    each later element is inserted into the sorted part (n is small: a class or a set)."""
    for i in range(max(start, 1), stop):
        value = values[i]
        j = i - 1
        while j >= 0 and values[j] > value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value


def _insertion_sort(values, n):
    """Sort ``values[:n]`` ascending in place (n is a class or set size: small)."""
    _insert_sorted(values, 1, n)


def _shuffle_prefix(seed, perm_index, cursor, members, n_slots, pool):
    """Copy ``members`` into ``pool`` and Fisher–Yates-shuffle its first ``n_slots`` slots
    (all of them, for a full shuffle, with ``n_slots = len - 1``), reading the label
    stream from ``cursor`` on; return the next cursor."""
    size = members.shape[0]
    for i in range(size):
        pool[i] = members[i]
    for i in range(n_slots):
        offset, cursor = _bounded_index(seed, perm_index, cursor, size - i)
        j = i + offset
        tmp = pool[i]
        pool[i] = pool[j]
        pool[j] = tmp
    return cursor


def _draw_stratified(seed, perm_index, stratum_offsets, stratum_members, stratum_drawn, pool, out):
    """Random labelling ``perm_index`` of a two-group design, as the sorted sample
    positions of the drawn class, written into ``out``.

    Stratum ``h`` holds the sample positions
    ``stratum_members[stratum_offsets[h]:stratum_offsets[h + 1]]`` and keeps
    ``stratum_drawn[h]`` members of the drawn class; each stratum gets a partial
    Fisher–Yates shuffle (only the drawn slots), strata in order, all reading one
    Philox stream. One stratum holding every sample is the unrestricted design.
    ``pool`` is scratch as long as the largest stratum.
    """
    cursor = 0
    filled = 0
    for h in range(stratum_offsets.shape[0] - 1):
        start = stratum_offsets[h]
        size = stratum_offsets[h + 1] - start
        cursor = _shuffle_prefix(seed, perm_index, cursor, stratum_members[start:start + size], stratum_drawn[h],
                                 pool)
        for i in range(stratum_drawn[h]):
            out[filled + i] = pool[i]
        filled += stratum_drawn[h]
    # Sorted positions make the class sums run in one canonical order on every backend.
    _insertion_sort(out, filled)


def _shuffle_stratified(seed, perm_index, stratum_offsets, stratum_members, pool, out):
    """Random permutation ``perm_index`` of the samples within strata: sample
    ``out``-position ``i`` takes the phenotype of sample ``out[i]`` (full Fisher–Yates
    per stratum, one Philox stream)."""
    cursor = 0
    for h in range(stratum_offsets.shape[0] - 1):
        start = stratum_offsets[h]
        size = stratum_offsets[h + 1] - start
        cursor = _shuffle_prefix(seed, perm_index, cursor, stratum_members[start:start + size], size - 1, pool)
        for i in range(size):
            out[stratum_members[start + i]] = pool[i]


def _random_sequence(seed, perm_index, tag, n_drawn, pool, out):
    """The first ``n_drawn`` elements of a uniformly random sequence of distinct elements
    of ``range(len(pool))`` (stream ``tag`` of permutation ``perm_index``), in draw order,
    into ``out``: each prefix of it is a uniform random subset of its size. ``pool`` must
    hold the identity and is restored afterwards (the swaps are undone), so a large pool
    is never re-initialised."""
    cursor = 0
    size = pool.shape[0]
    for i in range(n_drawn):
        offset, cursor = _bounded_index_tagged(seed, perm_index, tag, cursor, size - i)
        j = i + offset
        out[i] = j  # remember the swap partner to undo it
        tmp = pool[i]
        pool[i] = pool[j]
        pool[j] = tmp
    for i in range(n_drawn - 1, -1, -1):
        j = out[i]
        tmp = pool[i]
        pool[i] = pool[j]
        pool[j] = tmp
        out[i] = tmp  # pool[j] held the drawn value before the undo


def _random_sequence_sparse(seed, perm_index, tag, n_drawn, size, table_keys, table_values, out):
    """:func:`_random_sequence` (same draws, same output) for ``range(size)`` without a
    pool: the swaps of the partial Fisher–Yates shuffle are kept in an open-addressing
    hash table (``table_keys``/``table_values``, a power of two at least twice
    ``n_drawn`` long; the keys are reset to -1 here). Slot ``i`` is never read after
    draw ``i`` (later partners are ``>= i + 1``), so only the partners' slots are
    stored: at most ``n_drawn`` entries, whatever ``size`` is."""
    capacity = table_keys.shape[0]
    mask = capacity - 1
    for t in range(capacity):
        table_keys[t] = -1
    cursor = 0
    for i in range(n_drawn):
        offset, cursor = _bounded_index_tagged(seed, perm_index, tag, cursor, size - i)
        j = i + offset
        value_i = _table_get(table_keys, table_values, mask, i)
        out[i] = _table_get(table_keys, table_values, mask, j)
        _table_set(table_keys, table_values, mask, j, value_i)


@inline
def _table_slot(table_keys, mask, key):
    """Slot of ``key`` in the hash table, or the empty slot where it would go (linear
    probing from a multiplicative hash)."""
    slot = (key * 2654435761) & mask
    while table_keys[slot] != -1 and table_keys[slot] != key:
        slot = (slot + 1) & mask
    return slot


@inline
def _table_get(table_keys, table_values, mask, key):
    """The value stored for ``key``; ``key`` itself when absent (the identity pool)."""
    slot = _table_slot(table_keys, mask, key)
    return table_values[slot] if table_keys[slot] == key else key


@inline
def _table_set(table_keys, table_values, mask, key, value):
    slot = _table_slot(table_keys, mask, key)
    table_keys[slot] = key
    table_values[slot] = value


def sparse_table_capacity(n_drawn: int) -> int:
    """Length of the hash table :func:`_random_sequence_sparse` needs for ``n_drawn``."""
    capacity = 2
    while capacity < 2 * n_drawn:
        capacity *= 2
    return capacity


def _unrank_subset(rank, n_total, n_drawn, binom, out):
    """The ``rank``-th ``n_drawn``-subset of ``range(n_total)`` in lexicographic order
    (exact enumeration). ``binom[n, r]`` must hold C(n, r)."""
    remaining = rank
    start = 0
    for slot in range(n_drawn):
        left = n_drawn - slot - 1
        candidate = start
        while True:
            count = binom[n_total - candidate - 1, left]
            if remaining < count:
                break
            remaining -= count
            candidate += 1
        out[slot] = candidate
        start = candidate + 1


def _unrank_stratified(rank, stratum_offsets, stratum_members, stratum_drawn, stratum_radix,
                       binom, scratch, out):
    """Labelling ``rank`` of the exact enumeration of a stratified two-group design:
    ``rank`` in mixed radix (stratum 0 least significant, radix C(n_h, d_h)), each
    digit a lexicographic subset within its stratum. Sorted positions into ``out``."""
    remaining = rank
    filled = 0
    for h in range(stratum_offsets.shape[0] - 1):
        start = stratum_offsets[h]
        size = stratum_offsets[h + 1] - start
        digit = remaining % stratum_radix[h]
        remaining = remaining // stratum_radix[h]
        _unrank_subset(digit, size, stratum_drawn[h], binom, scratch)
        for i in range(stratum_drawn[h]):
            out[filled + i] = stratum_members[start + scratch[i]]
        filled += stratum_drawn[h]
    _insertion_sort(out, filled)


def _unrank_shuffle(rank, stratum_offsets, stratum_members, stratum_radix, factorial, pool, out):
    """Permutation ``rank`` of the exact enumeration of within-strata shuffles: mixed
    radix over strata (radix n_h!), each digit a Lehmer code."""
    remaining = rank
    for h in range(stratum_offsets.shape[0] - 1):
        start = stratum_offsets[h]
        size = stratum_offsets[h + 1] - start
        digit = remaining % stratum_radix[h]
        remaining = remaining // stratum_radix[h]
        for i in range(size):
            pool[i] = stratum_members[start + i]
        left = size
        for i in range(size):
            block = factorial[size - 1 - i]
            index = digit // block
            digit = digit % block
            out[stratum_members[start + i]] = pool[index]
            for j in range(index, left - 1):
                pool[j] = pool[j + 1]
            left -= 1


#: How a plan encodes its labellings (see :func:`fill_labellings`).
MODE_SUBSET = 0
MODE_SHUFFLE = 1


def _fill_labelling(seed, perm_index, mode, exact, stratum_offsets, stratum_members, stratum_drawn,
                    stratum_radix, binom, factorial, pool, out):
    """Labelling ``perm_index`` into ``out``: drawn-class positions (``mode`` 0) or a
    within-strata shuffle (``mode`` 1), random or, when ``exact``, the enumeration's."""
    if mode == MODE_SUBSET:
        if exact:
            _unrank_stratified(perm_index, stratum_offsets, stratum_members, stratum_drawn, stratum_radix,
                               binom, pool, out)
        else:
            _draw_stratified(seed, perm_index, stratum_offsets, stratum_members, stratum_drawn, pool, out)
    elif exact:
        _unrank_shuffle(perm_index, stratum_offsets, stratum_members, stratum_radix, factorial, pool, out)
    else:
        _shuffle_stratified(seed, perm_index, stratum_offsets, stratum_members, pool, out)


#: Scalar device-neutral functions; GPU kernels compile the same list for CUDA.
SCALAR_FUNCTIONS = (_philox4x32_10, _stream_word, _permutation_word, _bounded_index, _bounded_index_tagged,
                    _lemire_accepts, _bounded_index_buffered,
                    _insert_sorted, _insertion_sort, _shuffle_prefix, _draw_stratified, _shuffle_stratified,
                    _random_sequence, _table_slot, _table_get, _table_set, _random_sequence_sparse,
                    _unrank_subset, _unrank_stratified, _unrank_shuffle, _fill_labelling)
_cpu = cpu_family(SCALAR_FUNCTIONS)
philox4x32_10 = _cpu._philox4x32_10
permutation_word = _cpu._permutation_word
bounded_index = _cpu._bounded_index
random_sequence = _cpu._random_sequence
random_sequence_sparse = _cpu._random_sequence_sparse
fill_labelling = _cpu._fill_labelling


@numba.njit(cache=True, parallel=True, error_model="numpy")
def fill_labellings(seed, perm_start, mode, exact, stratum_offsets, stratum_members, stratum_drawn,
                    stratum_radix, binom, factorial, out):
    """Fill ``out[b]`` with labelling ``perm_start + b``: random (Philox) or, when
    ``exact``, the enumeration's. ``MODE_SUBSET``: sorted drawn-class positions,
    shape (n_batch, n_drawn). ``MODE_SHUFFLE``: source sample of each sample, shape
    (n_batch, n_samples)."""
    n_batch = out.shape[0]
    largest = 0
    for h in range(stratum_offsets.shape[0] - 1):
        largest = max(largest, stratum_offsets[h + 1] - stratum_offsets[h])
    for b in numba.prange(n_batch):
        pool = np.empty(largest, dtype=np.int64)
        fill_labelling(seed, perm_start + b, mode, exact, stratum_offsets, stratum_members, stratum_drawn,
                       stratum_radix, binom, factorial, pool, out[b])


def philox4x32_10_numpy(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Vectorised NumPy Philox4x32-10, the reference for the compiled versions.

    Parameters
    ----------
    counter : ndarray of shape (n, 4), unsigned 32-bit values
    key : ndarray of shape (n, 2) or (2,), unsigned 32-bit values

    Returns
    -------
    ndarray of shape (n, 4), dtype uint32
    """
    c = np.asarray(counter, dtype=np.uint64).reshape(-1, 4).T.copy()
    k = np.broadcast_to(np.asarray(key, dtype=np.uint64).reshape(-1, 2), (c.shape[1], 2)).T.copy()
    c0, c1, c2, c3 = c
    k0, k1 = k
    for round_index in range(10):
        if round_index > 0:
            k0 = (k0 + _PHILOX_W0) & _MASK32
            k1 = (k1 + _PHILOX_W1) & _MASK32
        p0 = _PHILOX_M0 * c0
        p1 = _PHILOX_M1 * c2
        c0, c1, c2, c3 = (p1 >> _SHIFT32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> _SHIFT32) ^ c3 ^ k1, p0 & _MASK32
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def binomial_table(n_total: int, n_drawn: int) -> np.ndarray:
    """``table[n, r] = C(n, r)`` for ``n <= n_total``, ``r <= n_drawn`` (int64, capped at
    2**62 so that it never overflows; only values up to the number of permutations
    matter for unranking)."""
    cap = 1 << 62
    table = np.zeros((n_total + 1, n_drawn + 1), dtype=np.int64)
    table[:, 0] = 1
    for n in range(1, n_total + 1):
        for r in range(1, min(n, n_drawn) + 1):
            table[n, r] = min(int(table[n - 1, r - 1]) + int(table[n - 1, r]), cap)
    return table
