"""Running-sum enrichment scores on the device.

Default (``es_kernel="ranks"``): the ranking kernel (:mod:`permenrich.kernels.ranking`,
one block per permutation) writes each permutation's rank table; then each (set,
permutation) is scored on its own thread from the set's members only: gather their
ranks, heap-sort them (k <= a few hundred), and take the running-sum extremum in closed
form, O(k log k) per set instead of a walk over every gene. The threads of a warp are 32
permutations of one set, so the set's member ids are read once per warp, the gathers
from the gene-major tables are coalesced and every thread sorts the same number of
ranks. The sort runs in dynamic shared memory (uint16 positions, interleaved slots;
:func:`size_classes` groups the sets so that a block's slots fit in 48 KB), or in global
memory for sets too large for that. Each thread heap-sorts (default) or bitonic-sorts its
own slot, or (``es_sort="bitmap"``) a warp sorts its 32 slots in turn through a bitmap
of ranked positions; :func:`es_sorts_by_slot` picks one per size class. The extremum
stays one thread's sequential pass: its float64 sums must be added in the CPU's order to
give the CPU's bits.

``es_kernel="per-permutation"`` keeps the first GPU kernel (one thread ranks and walks a
whole permutation, scratch in global memory) for side-by-side benchmarks only.

Both give the CPU's scores bit for bit: the same ranking and the same steps in the same
order (:func:`permenrich.enrich.running_sum._ks_from_sorted_positions`; the hit-weight
sum ``N_R`` is added in set-member order, as the CPU's walk adds it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, uint16, uint32, uint64

from permenrich.stats.ranking import FULL_PASSES

from .device import (THREADS_PER_BLOCK, enrichment_scores, grid_1d, hit_weight, kernel_jit,
                     ks_from_sorted_positions, linear_set_score, rank_descending)


#: Ranked-position sorts of the shared-memory ES kernel (``GpuBackend.es_sort``): each
#: thread sorts its own slot (``heap``, ``bitonic``), or a warp sorts its 32 slots one
#: after another through a bitmap of ranked positions (``bitmap``).
ES_SORTS = ("heap", "bitonic", "bitmap")


def es_sorts_by_slot(spec: str) -> tuple[str, dict[int, str]]:
    """Parse a sort choice for the shared-memory ES kernels (``GpuBackend.es_sort``, or
    ``PERMENRICH_GPU_ES_SORT``): one name of :data:`ES_SORTS` for every size class, or
    comma-separated items, ``<slot>=<sort>`` for the sets of one slot and at most one bare
    name for the others (heap when none), e.g. ``"bitmap,32=heap"``.

    Returns
    -------
    tuple of (str, dict of int to str)
        The sort of the slots not named, and the sort of each slot named.

    Raises
    ------
    ValueError
        An item names no known sort, or a slot that is not a power of two from 32.
    """
    default = None
    by_slot = {}
    for item in (part.strip() for part in spec.split(",")):
        slot, _, sort = item.rpartition("=")
        if sort not in ES_SORTS:
            raise ValueError(f"ES sort {spec!r}: {item!r} names no sort of {', '.join(ES_SORTS)}")
        if not slot:
            if default is not None:
                raise ValueError(f"ES sort {spec!r}: more than one sort for the slots not named")
            default = sort
        elif not slot.isdigit() or int(slot) < 32 or int(slot) & (int(slot) - 1):
            raise ValueError(f"ES sort {spec!r}: slot {slot!r} is not a power of two from 32")
        else:
            by_slot[int(slot)] = sort
    return default or "heap", by_slot


#: uint16 slots of a bitmap-sorted block are this much wider than its 32 threads: element
#: j of thread t at ``j * BITMAP_STRIDE + t``. A warp reading one thread's elements then
#: touches 32 distinct banks (17 j + t/2 mod 32, 17 odd), as does a thread-per-slot pass.
BITMAP_STRIDE = 34
#: Pads a bitonic sort's slot: sorts after every position (positions are below 65,536;
#: a real 65,535 ties with it and is kept, being among the k smallest either way).
_PAD = 0xFFFF


def _slot_sorts(index):  # noqa: ANN001, ANN202 - a Numba integer type in, device functions out
    """The sorts of one slot ``values[first + j * stride]`` (j < n) of a flat array, with
    every index computed in ``index``: uint32 for the shared-memory slots, so that an
    element's address is one 32-bit multiply-add (a view ``values[j]`` of a strided slice
    costs a 64-bit multiply and Numba's negative-index fix-up per access, about half the
    instructions of a sort step in the first device run's kernels); uint64 for the global
    scratch, which may pass 2**32 elements. Constants are cast too: Numba types uint64
    with int64 as float64."""
    zero, one, two = index(0), index(1), index(2)

    @cuda.jit(device=True)
    def sift(values, first, stride, root, n):
        """Restore the max-heap of the slot's first n elements below ``root`` (its subtrees
        are heaps), bottom-up (Floyd): the hole at ``root`` descends to a leaf along the
        larger children, a number of levels set by n and root alone (the same for every
        thread of a warp, whose slots are one set's), and the root's value then climbs back
        to its place (rarely more than a level or two)."""
        value = values[index(first + root * stride)]
        hole = root
        child = index(two * hole + one)
        while child < n:
            at = index(first + child * stride)
            larger = values[at]
            if index(child + one) < n:
                right = values[index(at + stride)]
                if right > larger:
                    larger = right
                    child = index(child + one)
            values[index(first + hole * stride)] = larger
            hole = child
            child = index(two * hole + one)
        while hole > root:
            parent = index(index(hole - one) >> one)
            above = values[index(first + parent * stride)]
            if above >= value:
                break
            values[index(first + hole * stride)] = above
            hole = parent
        values[index(first + hole * stride)] = value

    @cuda.jit(device=True)
    def heap_sort(values, first, stride, n):
        """Sort the slot's first n elements ascending in place: a heap sort, no scratch."""
        root = index(n >> one)
        while root > zero:
            root = index(root - one)
            sift(values, first, stride, root, n)
        end = n
        while end > one:
            end = index(end - one)
            at = index(first + end * stride)
            largest = values[first]
            values[first] = values[at]
            values[at] = largest
            sift(values, first, stride, zero, end)

    @cuda.jit(device=True)
    def bitonic_sort(values, first, stride, n):
        """Sort the slot's first n elements ascending, n a power of two: a bitonic network.
        Every thread makes the same compare-exchanges whatever its data (a warp never
        diverges, and the exchanges of a stage are independent), selecting rather than
        branching on the data: n/2 log2(n) (log2(n) + 1) / 2 exchanges, against a heap
        sort's ~2 n log2 n dependent steps."""
        size = two
        while size <= n:
            gap = index(size >> one)
            while gap > zero:
                low_bits = index(gap - one)
                pair = zero
                while pair < index(n >> one):
                    i = index(((pair & ~low_bits) << one) | (pair & low_bits))
                    at_i = index(first + i * stride)
                    at_j = index(at_i + gap * stride)
                    x = values[at_i]
                    y = values[at_j]
                    lower = min(x, y)
                    upper = max(x, y)
                    ascending = (i & size) == zero
                    values[at_i] = lower if ascending else upper
                    values[at_j] = upper if ascending else lower
                    pair = index(pair + one)
                gap = index(gap >> one)
            size = index(size << one)

    return heap_sort, bitonic_sort


#: Sorts of the shared-memory slots (32-bit indices) and of the global scratch (64-bit).
slot_heap_sort, slot_bitonic_sort = _slot_sorts(uint32)
global_heap_sort, _ = _slot_sorts(uint64)


@cuda.jit(device=True)
def _add_hit(w, norm, n_infinite):
    """Add one member's hit weight to (the sum of the finite ones, the count of infinite ones)."""
    if w == math.inf:
        return norm, n_infinite + 1
    return norm + w, n_infinite


@cuda.jit(device=True)
def gather_member_ranks(b, s, weights, rank, set_members, set_offsets, scratch):
    """Write the ranked positions of set s's members under permutation b into
    ``scratch`` (member order) and return (the sum ``N_R`` of their finite hit weights,
    added in member order as the CPU's walk adds it, the count of infinite ones).
    ``weights``: the gene-major table :func:`weigh_tables` left (hit weights, or the
    statistic for weight 1, whose hit weight is its absolute value).

    Members go four at a time, their twelve loads issued before any value is used: a warp
    then waits for memory once per four members, where one member at a time it waited
    three times per member (member id, then its weight and rank, each a round trip to L2).
    The sum's order is unchanged."""
    first = set_offsets[s]
    end = set_offsets[s + 1]
    norm = 0.0
    n_infinite = 0
    t = first
    while t + 4 <= end:
        g0 = set_members[t]
        g1 = set_members[t + 1]
        g2 = set_members[t + 2]
        g3 = set_members[t + 3]
        w0 = weights[g0, b]
        w1 = weights[g1, b]
        w2 = weights[g2, b]
        w3 = weights[g3, b]
        r0 = rank[g0, b]
        r1 = rank[g1, b]
        r2 = rank[g2, b]
        r3 = rank[g3, b]
        norm, n_infinite = _add_hit(hit_weight(w0, 1.0), norm, n_infinite)
        norm, n_infinite = _add_hit(hit_weight(w1, 1.0), norm, n_infinite)
        norm, n_infinite = _add_hit(hit_weight(w2, 1.0), norm, n_infinite)
        norm, n_infinite = _add_hit(hit_weight(w3, 1.0), norm, n_infinite)
        scratch[t - first] = r0
        scratch[t + 1 - first] = r1
        scratch[t + 2 - first] = r2
        scratch[t + 3 - first] = r3
        t += 4
    while t < end:
        gene = set_members[t]
        norm, n_infinite = _add_hit(hit_weight(weights[gene, b], 1.0), norm, n_infinite)
        scratch[t - first] = rank[gene, b]
        t += 1
    return norm, n_infinite


@cuda.jit(device=True)
def sort_shared_slot(values, first, stride, k, bitonic):
    """Sort thread slot ``values[first + j * stride]`` (j < k) of the dynamic shared memory:
    heap sort, or a bitonic network over the power of two above k (padded; the slot is at
    least that long). Both give the same order."""
    first = uint32(first)
    stride = uint32(stride)
    k = uint32(k)
    if bitonic:
        n = uint32(1)
        while n < k:
            n = uint32(n << uint32(1))
        for j in range(k, n):
            values[uint32(first + uint32(j) * stride)] = _PAD
        slot_bitonic_sort(values, first, stride, n)
    else:
        slot_heap_sort(values, first, stride, k)


@kernel_jit
def es_from_ranks_shared_kernel(stat, rank, ranked_stat, set_members, set_offsets, class_sets, slot,
                                bitonic, out):
    """``out[b, s]`` for the sets ``class_sets`` (sizes up to ``slot``): thread x of a block
    is a permutation, blocks along x take the sets and along y the groups of
    permutations (so the blocks running at once share one group's tables in L2). Each
    thread gathers its members' ranks into a slot of the block's dynamic shared memory
    (uint16 positions) interleaved with its neighbours' (element j of thread t at
    ``j * width + t``, so a warp's accesses fall in distinct banks whatever each thread's
    heap index), sorts them (:func:`sort_shared_slot`) and takes the running-sum extremum
    in closed form."""
    b = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    scratch = cuda.shared.array(0, dtype=uint16)
    if b >= stat.shape[1]:
        return
    width = cuda.blockDim.x
    t = cuda.threadIdx.x
    mine = scratch[t: t + slot * width: width]
    for i in range(cuda.blockIdx.x, class_sets.shape[0], cuda.gridDim.x):
        s = class_sets[i]
        k = set_offsets[s + 1] - set_offsets[s]
        norm, n_infinite = gather_member_ranks(b, s, stat, rank, set_members, set_offsets, mine)
        sort_shared_slot(scratch, t, width, k, bitonic)
        out[b, s] = ks_from_sorted_positions(mine[:k], ranked_stat[b], 1.0, norm, n_infinite, stat.shape[0])


@kernel_jit
def es_from_ranks_kernel(stat, rank, ranked_stat, set_members, set_offsets, class_sets, starts, positions,
                         flat_positions, out):
    """``out[b, s]`` for the sets ``class_sets`` whose ranks do not fit in shared memory
    (large sets, or more than 65,536 genes): set ``class_sets[i]`` sorts in
    ``positions[starts[i]:starts[i + 1], b]`` (permutation-minor, so a warp's equal
    indices are adjacent; ``flat_positions`` is the same memory, 1-D, for the sort)."""
    b = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    if b >= stat.shape[1]:
        return
    n_batch = positions.shape[1]
    for i in range(cuda.blockIdx.x, class_sets.shape[0], cuda.gridDim.x):
        s = class_sets[i]
        mine = positions[starts[i]:starts[i + 1], b]
        norm, n_infinite = gather_member_ranks(b, s, stat, rank, set_members, set_offsets, mine)
        global_heap_sort(flat_positions, uint64(starts[i] * n_batch + b), uint64(n_batch), uint64(mine.shape[0]))
        out[b, s] = ks_from_sorted_positions(mine, ranked_stat[b], 1.0, norm, n_infinite, stat.shape[0])


def bitmap_lane_shift(n_genes: int) -> int:
    """log2 of the 32-bit words of the ranked-position bitmap each lane of a warp owns (a
    contiguous run, a power of two so that a word's lane is a shift; the runs are laid
    out one pad word apart, so the lanes' i-th words fall in 32 distinct banks)."""
    words = (n_genes + 31) // 32
    per_lane = max(1, (words + 31) // 32)
    return (per_lane - 1).bit_length()


def _bitmap_layout(slot: int, n_genes: int) -> tuple[int, int, int, int]:
    """Offsets, in uint32 words of a bitmap-sorted block's dynamic shared memory, of its
    bitmap, its summary masks and its lane counts (after the 32 slots of ``slot`` uint16
    positions, row stride :data:`BITMAP_STRIDE`), and the words in all."""
    lane_words = 1 << bitmap_lane_shift(n_genes)
    bitmap = (2 * slot * BITMAP_STRIDE + 3) // 4
    summary = bitmap + 32 * (lane_words + 1)
    counts = summary + 32 * ((lane_words + 31) // 32)
    return bitmap, summary, counts, counts + 2 * 32


def bitmap_block_bytes(slot: int, n_genes: int) -> int:
    """Dynamic shared memory of a bitmap-sorted block: 32 slots of ``slot`` uint16
    positions, the warp's bitmap (a run of words per lane and a pad word), each lane's
    mask of its non-empty words and two rows of 32 lane counts (uint32)."""
    return 4 * _bitmap_layout(slot, n_genes)[3]


@kernel_jit
def es_from_ranks_bitmap_kernel(stat, rank, ranked_stat, set_members, set_offsets, class_sets, slot, bitmap,
                                summary, counts, lane_shift, out):
    """``out[b, s]`` for the sets ``class_sets`` (sizes up to ``slot``), one warp per
    block: thread x is permutation ``blockIdx.y * 32 + x``, blocks along x take the sets.

    Each thread gathers its permutation's member ranks into its slot, as in
    :func:`es_from_ranks_shared_kernel`; then the warp sorts the 32 slots one after
    another. Its lanes set each rank's bit in a bitmap of the ranked positions (ranks of
    one permutation are distinct, so the bitmap holds them exactly) and the word's bit in
    its owner lane's summary mask (lane l owns the words ``l << lane_shift`` onwards, a
    contiguous run of positions); each lane counts the bits of its non-empty words (the
    mask lists them: a set of k members touches at most k words), a scan of the 32 counts
    gives each lane its first output place, and each lane writes its positions back in
    ascending order, clearing its words and mask as it goes. Per lane and slot that is
    ~k/32 marks and ~2 visits per non-empty word, against a heap sort's ~2 k log2 k
    dependent steps per thread. Each thread then takes the running-sum extremum of its
    own sorted slot (sequential float64 sums, the CPU's order). ``bitmap``, ``summary``,
    ``counts``: word offsets in the dynamic shared memory (:func:`_bitmap_layout`).
    Indices are cast to uint32 (as in :func:`_slot_sorts`)."""
    t = cuda.threadIdx.x
    b = cuda.blockIdx.y * 32 + t
    active = b < stat.shape[1]
    positions = cuda.shared.array(0, dtype=uint16)
    words = cuda.shared.array(0, dtype=uint32)
    lane_words = uint32(1 << lane_shift)
    run = uint32(lane_words + 1)
    masks = uint32((lane_words + 31) >> 5)
    my_run = uint32(bitmap + t * run)
    my_masks = uint32(summary + t * masks)
    for w in range(run):
        words[uint32(my_run + w)] = 0
    for m in range(masks):
        words[uint32(my_masks + m)] = 0
    n_genes = stat.shape[0]
    for i in range(cuda.blockIdx.x, class_sets.shape[0], cuda.gridDim.x):
        s = class_sets[i]
        k = set_offsets[s + 1] - set_offsets[s]
        norm = 0.0
        n_infinite = 0
        if active:
            norm, n_infinite = gather_member_ranks(b, s, stat, rank, set_members, set_offsets,
                                                   positions[t: t + slot * BITMAP_STRIDE: BITMAP_STRIDE])
        cuda.syncthreads()
        for owner in range(min(32, stat.shape[1] - cuda.blockIdx.y * 32)):
            for j in range(t, k, 32):
                r = positions[uint32(j * BITMAP_STRIDE + owner)]
                word = uint32(r >> 5)
                lane = uint32(word >> lane_shift)
                within = uint32(word & (lane_words - 1))
                # int(): the simulator would shift a uint16 within 16 bits
                cuda.atomic.or_(words, uint32(bitmap + word + lane), uint32(1 << int(r & 31)))
                cuda.atomic.or_(words, uint32(summary + lane * masks + (within >> 5)), uint32(1 << int(within & 31)))
            cuda.syncthreads()
            count = 0
            for m in range(masks):
                mask = words[uint32(my_masks + m)]
                while mask != 0:
                    rest = mask & (mask - 1)
                    count += cuda.popc(words[uint32(my_run + m * 32 + cuda.popc((mask ^ rest) - 1))])
                    mask = rest
            # Inclusive scan of the lane counts (Hillis-Steele, two rows of 32 in turn).
            total = count
            row = 0
            words[uint32(counts + t)] = total
            cuda.syncthreads()
            step = 1
            while step < 32:
                if t >= step:
                    total += words[uint32(counts + row * 32 + t - step)]
                row = 1 - row
                words[uint32(counts + row * 32 + t)] = total
                step <<= 1
                cuda.syncthreads()
            at = total - count
            for m in range(masks):
                mask = words[uint32(my_masks + m)]
                words[uint32(my_masks + m)] = 0
                while mask != 0:
                    rest = mask & (mask - 1)
                    w = uint32(m * 32 + cuda.popc((mask ^ rest) - 1))
                    word = words[uint32(my_run + w)]
                    words[uint32(my_run + w)] = 0
                    base = uint32(((t << lane_shift) + w) * 32)
                    while word != 0:
                        lower = word & (word - 1)
                        positions[uint32(at * BITMAP_STRIDE + owner)] = base + cuda.popc((word ^ lower) - 1)
                        at += 1
                        word = lower
                    mask = rest
            cuda.syncthreads()
        if active:
            out[b, s] = ks_from_sorted_positions(positions[t: t + k * BITMAP_STRIDE: BITMAP_STRIDE], ranked_stat[b],
                                                 1.0, norm, n_infinite, n_genes)
        cuda.syncthreads()


@kernel_jit
def hit_weights_kernel(values, weight):
    """``values[i] = hit_weight(values[i], weight)`` in place, one thread per element."""
    i = cuda.grid(1)
    if i < values.shape[0]:
        values[i] = hit_weight(values[i], weight)


def weigh_tables(tables, weight: float, stream) -> None:  # noqa: ANN001 - device arrays
    """For any weight but 1, turn the ranking kernel's statistic tables into hit weights in
    place, once per gene and permutation: the ES kernels then take the hit weight of an
    entry as its absolute value (weight 1), which leaves these values and their bits. A
    power costs n_genes evaluations per permutation instead of two per membership, and
    the ES kernels, compiled for weight 1 alone, carry no power in their loops (whose
    bodies then stay small enough to unroll)."""
    if weight == 1.0:
        return
    for table in tables:
        flat = table.reshape(table.size)
        blocks, threads = grid_1d(flat.shape[0])
        hit_weights_kernel[blocks, threads, stream](flat, weight)


#: Blocks along a grid's x axis at most (further sets loop); CUDA allows 2**31 - 1.
MAX_GRID_X = 2**20


def launch_es_from_ranks(tables, weight, set_members, set_offsets, size_classes, positions, out,  # noqa: ANN001
                         stream, sort="heap"):
    """ES of every (set, permutation); ``tables`` = (stat, rank, ranked_stat) from the
    ranking kernel (the first two gene-major, the last permutation-major). A warp is 32 permutations of one set: the member ids are
    read once, the rank and statistic gathers are coalesced, and every thread sorts the
    same number of ranks. ``size_classes``: (device set indices, slot, widest block,
    scratch starts) from :func:`size_classes` (given the same ``sort``). ``sort``: the sort
    of the sets in shared memory (whose slots are powers of two), one of :data:`ES_SORTS`
    or one per slot (:func:`es_sorts_by_slot`); the global scratch, exactly as long as
    each set, is heap-sorted. ``bitmap`` blocks are one warp. For a ``weight`` other than
    1, the statistic tables (first and last) are turned into hit weights in place
    (:func:`weigh_tables`)."""
    n_genes, n_batch = tables[0].shape
    weigh_tables((tables[2], tables[0]), weight, stream)
    default_sort, sort_by_slot = es_sorts_by_slot(sort)
    for class_sets, slot, widest, starts in size_classes:
        n_blocks = min(class_sets.shape[0], MAX_GRID_X)
        class_sort = sort_by_slot.get(slot, default_sort)
        if slot and class_sort == "bitmap":
            grid = (n_blocks, (n_batch + 31) // 32)
            bitmap, summary, counts, n_words = _bitmap_layout(slot, n_genes)
            es_from_ranks_bitmap_kernel[grid, (32, 1), stream, 4 * n_words](
                *tables, set_members, set_offsets, class_sets, slot, bitmap, summary, counts,
                bitmap_lane_shift(n_genes), out)
            continue
        width = min(widest, n_batch)
        grid = (n_blocks, (n_batch + width - 1) // width)
        if slot:
            es_from_ranks_shared_kernel[grid, (width, 1), stream, 2 * slot * width](
                *tables, set_members, set_offsets, class_sets, slot, class_sort == "bitonic", out)
        else:
            es_from_ranks_kernel[grid, (width, 1), stream](*tables, set_members, set_offsets, class_sets,
                                                           starts, positions, positions.reshape(positions.size), out)


@kernel_jit
def linear_set_kernel(gene_scores, set_members, set_offsets, maxmean, out):
    """``out[b, s]``: ``mean``/``maxmean`` of set s under row b, one thread each
    (consecutive threads: consecutive sets of one permutation, gathering from one row)."""
    i = cuda.grid(1)
    n_sets = out.shape[1]
    if i < out.shape[0] * n_sets:
        b = i // n_sets
        s = i - b * n_sets
        out[b, s] = linear_set_score(gene_scores, b, set_members, set_offsets[s], set_offsets[s + 1], maxmean)


def launch_linear_set_scores(gene_scores, set_members, set_offsets, maxmean: bool, out, stream) -> None:  # noqa: ANN001
    """``mean``/``maxmean`` of every (permutation, set) into ``out`` (n_batch, n_sets)."""
    if out.size == 0:
        return
    blocks, threads = grid_1d(out.shape[0] * out.shape[1])
    linear_set_kernel[blocks, threads, stream](gene_scores, set_members, set_offsets, maxmean, out)


def size_classes(sizes: np.ndarray, n_genes: int, shared_bytes: int = 48 * 1024,
                 threads_per_block: int = THREADS_PER_BLOCK,
                 min_shared_width: int = 32, sort: str = "heap") -> list[tuple[np.ndarray, int, int, np.ndarray]]:
    """Group sets by size for :func:`launch_es_from_ranks`: (set indices, slot, widest
    block, scratch starts).

    Sets go to the shared-memory kernel in classes of power-of-two slots (at least 32
    positions), with blocks of as many permutations (up to ``threads_per_block``, whole
    warps) as ``shared_bytes`` of uint16 slots allow; sets whose blocks would hold fewer
    than ``min_shared_width`` permutations (a warp by default: few resident warps per SM
    then, which the first H200 measurements showed latency bound), and every set when
    positions do not fit in 16 bits, go to the global-scratch kernel (slot 0; ``starts``
    are their rows of the global scratch, whose length is the last start). Where ``sort``
    (:func:`es_sorts_by_slot`) bitmap-sorts a slot, blocks are one warp, with its bitmap
    (:func:`bitmap_block_bytes`), and the class is in shared memory when that fits
    ``shared_bytes``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    slots = np.maximum(32, 2 ** np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64))
    default_sort, sort_by_slot = es_sorts_by_slot(sort)
    classes = []
    global_sets = []
    for slot in sorted(set(slots.tolist())):
        members = np.flatnonzero(slots == slot).astype(np.int64)
        if sort_by_slot.get(slot, default_sort) == "bitmap":
            fits = bitmap_block_bytes(slot, n_genes) <= shared_bytes
            width = 32
        else:
            width = min(threads_per_block, shared_bytes // (2 * slot)) // 32 * 32
            fits = width >= max(32, min_shared_width)
        if n_genes > np.iinfo(np.uint16).max + 1 or not fits:
            global_sets.append(members)
            continue
        classes.append((members, int(slot), int(width), np.zeros(1, np.int64)))
    if global_sets:
        members = np.concatenate(global_sets)
        starts = np.concatenate([[0], np.cumsum(sizes[members])]).astype(np.int64)
        classes.append((members, 0, threads_per_block, starts))
    return classes


@kernel_jit
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
