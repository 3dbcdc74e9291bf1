"""The GPU's block ranking, ES-from-ranks and device-drawn random sets, kernel by kernel.

Under Numba's CUDA simulator (tests/conftest.py) on tiny inputs chosen for the edges:
ties, near ties (runs of equal 32-bit keys), infinities, signed zeros, sets of size 1 and
of every gene but one, batches that do not divide the permutations, several blocks.
Every comparison is exact: the device must give the CPU's bits.
"""

import numpy as np
import pytest
from numba import cuda, uint32

from permenrich.backends.cpu import CpuBackend
from permenrich.backends.gpu import GpuBackend, device_bytes_per_permutation, gpu_available
from permenrich.enrich.linear import linear_set_statistic_reference
from permenrich.kernels.enrichment import (ES_SORTS, bitmap_block_bytes, bitmap_lane_shift, es_sorts_by_slot,
                                          launch_es_from_ranks, size_classes, slot_bitonic_sort, slot_heap_sort)
from permenrich.kernels.ranking import RANK_THREADS, SIMULATOR_RANK_THREADS, launch_block_rank, rank_scratch
from permenrich.rng import random_sequence, random_sequence_sparse, sparse_table_capacity
from permenrich.stats.ranking import ranking_reference


def _awkward_stats(n_genes, n_batch, seed=0):
    """Rows with every kind of tie the ranking must order exactly."""
    rng = np.random.default_rng(seed)
    stats = rng.normal(size=(n_batch, n_genes))
    stats[0, : n_genes // 3] = 1.0  # exact ties: index order
    if n_batch > 1:
        stats[1] = 0.0  # all equal
        stats[1, ::3] = -0.0  # signed zeros tie
    if n_batch > 2:
        # Near ties: equal in the high 32 bits of the key, distinct in the low ones, in
        # reverse index order so that the fix-up has work to do.
        stats[2, ::2] = 1.0 + 1e-13 * np.arange(stats[2, ::2].size)
    if n_batch > 3 and n_genes > 5:
        stats[3, 1], stats[3, 2], stats[3, 5] = np.inf, -np.inf, np.inf
    return stats


# The device's block size runs too (slowly) in the simulator only on a GPU machine.
@pytest.mark.parametrize("threads", [1, SIMULATOR_RANK_THREADS, 32] + ([RANK_THREADS] if gpu_available() else []))
@pytest.mark.parametrize("n_genes", [1, 7, 61])
def test_block_ranking_equals_reference(threads, n_genes):
    n_batch = 5 if threads < 32 else 2
    stats = _awkward_stats(n_genes, n_batch)
    device = cuda.to_device(stats)
    stream = cuda.stream()
    scratch = rank_scratch(n_batch, n_genes, stream)
    launch_block_rank(device, device.view(np.uint64), scratch, stream, threads)
    rank, stat_by_gene = (a.copy_to_host().T for a in (scratch[2], scratch[4]))  # gene-major
    ranked_stat = scratch[3].copy_to_host()  # permutation-major
    assert np.array_equal(stat_by_gene.view(np.uint64), stats.view(np.uint64))
    for b in range(n_batch):
        order = ranking_reference(stats[b])
        assert np.array_equal(rank[b][order], np.arange(n_genes)), b
        assert np.array_equal(ranked_stat[b].view(np.uint64), stats[b][order].view(np.uint64)), b


def _sets_case(n_genes):
    """Sets of size 1, of every gene but one, overlapping ones, and one of the near ties."""
    sets = [[3], list(range(1, n_genes)), list(range(0, n_genes, 2)), [0, 1, 2, 5, 9], list(range(4, 12))]
    members = np.concatenate([np.array(s, dtype=np.int32) for s in sets])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    return members, offsets


@pytest.mark.parametrize(("es_kernel", "shared_bytes", "sort"), [
    ("ranks", 48 * 1024, "heap"),  # every set sorts in shared memory
    ("ranks", 2 * 32 * 32, "heap"),  # only slots of 32 fit a warp: the set of 39 goes to global scratch
    ("ranks", 0, "heap"),  # all in global scratch
    ("per-permutation", 0, "heap"),
    ("ranks", 48 * 1024, "bitonic"),  # padded to powers of two in the shared slots
    ("ranks", 2 * 32 * 32, "bitonic"),  # bitonic in shared memory, heap in global scratch
    ("ranks", 48 * 1024, "bitmap"),  # a warp sorts its 32 slots through a bitmap
    ("ranks", bitmap_block_bytes(32, 40), "bitmap"),  # only the warp of slots of 32 fits: the set of 39 goes global
    ("ranks", 48 * 1024, "bitmap,32=heap"),  # one sort per size class: heap for slot 32, bitmap for 64
])
@pytest.mark.parametrize("weight", [1.0, 0.0, 1.5])
def test_device_running_sum_scores_equal_cpu_walk(es_kernel, shared_bytes, sort, weight):
    _check_running_sum_scores(es_kernel, shared_bytes, sort, weight)


@pytest.mark.parametrize("shared_bytes", [48 * 1024, 0])
def test_device_running_sum_squares_weights_once(shared_bytes):
    """Weight 2 (a square, not a power): the tables are weighed once, as for the others."""
    _check_running_sum_scores("ranks", shared_bytes, "heap", 2.0)


def _check_running_sum_scores(es_kernel, shared_bytes, sort, weight):
    n_genes = 40
    stats = _awkward_stats(n_genes, 6, seed=1)
    sets = _sets_case(n_genes)
    cpu = CpuBackend(threads=1)
    cpu.prepare_sets("ks", *sets, weight, n_genes)
    expected = cpu.set_scores(stats)
    # A scratch budget of two permutations: three device chunks of the batch of six.
    gpu = GpuBackend(es_kernel=es_kernel, scratch_bytes=1)
    gpu.shared_scratch_bytes = shared_bytes
    gpu.es_sort = sort
    gpu.prepare_sets("ks", *sets, weight, n_genes)
    slots = [slot for _, slot, _, _ in gpu._sets.size_classes]
    assert (max(slots) > 0) == (es_kernel == "ranks" and shared_bytes > 0)
    assert (min(slots) == 0) == (shared_bytes < 48 * 1024)
    per_permutation = sum(gpu.memory_model(n_genes).values())
    gpu.scratch_bytes = 2 * per_permutation
    assert gpu.device_rows(n_genes) == 2
    got = gpu.to_host(gpu.set_scores(stats))
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
    assert np.isfinite(expected).all() and (expected != 0).any()


@pytest.mark.parametrize("set_statistic", ["mean", "maxmean"])
def test_device_linear_set_scores_equal_cpu(set_statistic):
    """mean/maxmean: the device's sums are the CPU's, bit for bit, and both agree with an
    independent NumPy reference to rounding."""
    n_genes = 40
    stats = _awkward_stats(n_genes, 7, seed=3)
    stats[3, 1:6] = 0.0  # finite only (infinite scores are refused), signed zeros included
    stats[3, 6:9] = -0.0
    stats[4] = -np.abs(stats[4])  # no positive part
    stats = stats * 1e3 + 0.1  # sums that round
    members, offsets = _sets_case(n_genes)
    cpu = CpuBackend(threads=2)
    cpu.prepare_sets(set_statistic, members, offsets, 1.0, n_genes)
    expected = cpu.set_scores(stats)
    gpu = GpuBackend()
    gpu.prepare_sets(set_statistic, members, offsets, 1.0, n_genes)
    got = gpu.to_host(gpu.set_scores(stats))
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
    for b in range(stats.shape[0]):
        for s in range(offsets.size - 1):
            reference = linear_set_statistic_reference(set_statistic, stats[b], members[offsets[s]:offsets[s + 1]])
            assert expected[b, s] == pytest.approx(reference, rel=1e-13, abs=1e-13)


@pytest.mark.parametrize("sort", ["heap", "bitonic"])
def test_slot_sorts_sort_interleaved_slots(sort):
    """Each thread sorts its slot ``values[t + j * threads]`` of one flat array, as in shared
    memory: every length from 1 to 70 (bitonic: the powers of two, padding last), values
    with repeats, and neighbouring slots left as they were."""
    sort_slot = slot_heap_sort if sort == "heap" else slot_bitonic_sort

    @cuda.jit
    def sort_slots(values, threads, n):
        t = cuda.grid(1)
        if t < threads:
            sort_slot(values, uint32(t), uint32(threads), uint32(n))

    rng = np.random.default_rng(6)
    threads = 5
    for n in (1, 2, 8, 64) if sort == "bitonic" else range(1, 71):
        rows = rng.integers(0, 70, size=(threads, n + 3)).astype(np.uint16)  # repeats too; 3 beyond the slot
        if sort == "bitonic":
            rows[0, n // 2:n] = 0xFFFF  # padding sorts last
        expected = rows.copy()
        expected[:, :n] = np.sort(rows[:, :n], axis=1)
        device = cuda.to_device(np.ascontiguousarray(rows.T).reshape(-1))  # element j of thread t at t + j * threads
        sort_slots[1, 8](device, threads, n)
        assert np.array_equal(device.copy_to_host().reshape(n + 3, threads).T, expected), n


def test_sparse_random_sequence_equals_pool_shuffle():
    for n, k in [(1, 1), (10, 9), (10, 10), (50, 3), (1000, 500)]:
        capacity = sparse_table_capacity(k)
        assert capacity >= 2 * k and capacity & (capacity - 1) == 0
        for perm in range(15):
            pooled, sparse = np.empty(k, np.int64), np.empty(k, np.int64)
            random_sequence(np.uint64(7), perm, 3, k, np.arange(n), pooled)
            random_sequence_sparse(np.uint64(7), perm, 3, k, n, np.empty(capacity, np.int64),
                                   np.empty(capacity, np.int64), sparse)
            assert np.array_equal(pooled, sparse), (n, k, perm)
            assert np.unique(sparse).size == k


@pytest.mark.parametrize(("set_statistic", "weight"), [("ks", 1.0), ("ks", 1.5), ("maxmean", 1.5)])
def test_device_random_sets_equal_cpu(set_statistic, weight):
    n_genes = 30
    ranked = np.sort(np.random.default_rng(2).normal(size=n_genes))[::-1].copy()
    ranked[4:8] = ranked[4]  # ties
    sizes = np.array([1, 2, 5, n_genes - 1])
    gpu = GpuBackend()  # one backend: the ranked list's inputs go to the device once, for every batch
    # a batch that does not divide the permutations; then another weight, which must not
    # reuse the first weight's uploaded inputs
    for start, stop, w in [(0, 7, weight), (7, 10, weight), (0, 7, 0.0)]:
        cpu = CpuBackend(threads=1).random_set_null(11, start, stop, ranked, w, set_statistic, sizes)
        got = gpu.to_host(gpu.random_set_null(11, start, stop, ranked, w, set_statistic, sizes))
        assert np.array_equal(got.view(np.uint64), cpu.view(np.uint64))
        if stop == 7 and w == weight:
            uploaded = gpu._uploads["random sets"][1]
        elif w == weight:
            assert gpu._uploads["random sets"][1] is uploaded


def test_hit_weights_computed_once_give_the_per_member_bits():
    """A costly weight (p = 1.5) is applied once to the ranked list and the closed form
    run with weight 1: the same bits as applying it member by member."""
    from permenrich.backends.cpu import SET_STATISTIC_CODES, _sorted_positions_scores, sorted_positions_scores

    rng = np.random.default_rng(12)
    ranked = np.sort(rng.normal(size=200))[::-1].copy()
    ranked[0] = np.inf  # an infinite weight: the limit rule
    members = np.concatenate([rng.choice(200, size=k, replace=False) for k in (1, 15, 40, 199)])
    offsets = np.array([0, 1, 16, 56, 255])
    for weight in (1.5, 0.25, 3.0):
        per_member = np.empty(4)
        _sorted_positions_scores(members.astype(np.int64), offsets, ranked, weight, SET_STATISTIC_CODES["ks"],
                                 per_member)
        once = sorted_positions_scores(members, offsets, ranked, weight, "ks")
        assert np.array_equal(once.view(np.uint64), per_member.view(np.uint64))


def test_es_sort_per_slot_parses_and_refuses_clearly():
    assert es_sorts_by_slot("heap") == ("heap", {})
    assert es_sorts_by_slot("bitmap, 32=heap") == ("bitmap", {32: "heap"})
    assert es_sorts_by_slot("64=bitonic,512=bitmap") == ("heap", {64: "bitonic", 512: "bitmap"})
    for bad, why in [("quick", "names no sort"), ("heap,bitmap", "more than one sort"),
                     ("48=heap", "not a power of two"), ("16=heap", "not a power of two"),
                     ("x=heap", "not a power of two")]:
        with pytest.raises(ValueError, match=why):
            es_sorts_by_slot(bad)
    # a class bitmap-sorted is one warp wide; the others keep their widths
    classes = {slot: threads for _, slot, threads, _ in size_classes(np.array([20, 100]), 20_639, sort="32=bitmap")}
    assert classes == {32: 32, 128: 128}


def test_size_classes_cover_every_set_once():
    sizes = np.array([15, 16, 17, 33, 500, 513, 1, 64, 2000])
    classes = size_classes(sizes, 20_639)
    covered = np.concatenate([c for c, _, _, _ in classes])
    assert np.array_equal(np.sort(covered), np.arange(sizes.size))
    for sets, slot, threads, starts in classes:
        assert 32 <= threads <= 128 and threads % 32 == 0
        if slot:
            assert (sizes[sets] <= slot).all() and 2 * slot * threads <= 48 * 1024
        else:  # too large for a warp of slots in 48 KB: global scratch, sliced by starts
            assert set(sizes[sets].tolist()) == {513, 2000} and starts[-1] == 2513
    for sort in ES_SORTS:  # positions beyond 16 bits: every set sorts in global scratch
        assert all(slot == 0 for _, slot, _, _ in size_classes(sizes, 70_000, sort=sort))
    # Blocks of at least 64 permutations: the sets of slot 512 (blocks of 32) go global too.
    wide = size_classes(sizes, 20_639, min_shared_width=64)
    assert all(threads >= 64 for _, slot, threads, _ in wide if slot)
    assert {int(x) for c, slot, _, _ in wide if not slot for x in sizes[c]} == {500, 513, 2000}
    # A bitmap-sorted block is one warp with its bitmap: slot 512 fits 48 KB, 1024 does not.
    bitmap = size_classes(sizes, 20_639, sort="bitmap")
    assert all(threads == 32 and bitmap_block_bytes(slot, 20_639) <= 48 * 1024 for _, slot, threads, _ in bitmap
               if slot)
    assert {int(x) for c, slot, _, _ in bitmap if not slot for x in sizes[c]} == {513, 2000}


def test_large_sets_in_global_scratch_give_the_same_scores():
    """The min_shared_width knob moves sets between the shared and the global kernel:
    same scores, bit for bit."""
    n_genes = 270
    stats = _awkward_stats(n_genes, 3, seed=4)
    rng = np.random.default_rng(5)
    # slots 32, 256 (blocks of 96) and 512 (blocks of 32): the knob moves the last two
    sets = [np.sort(rng.choice(n_genes, size=k, replace=False)) for k in (20, 140, 261)]
    members = np.concatenate(sets).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in sets])]).astype(np.int64)
    scores = []
    for min_width in (32, 64, 128):
        gpu = GpuBackend()
        gpu.min_shared_width = min_width
        gpu.prepare_sets("ks", members, offsets, 1.5, n_genes)
        scores.append(gpu.to_host(gpu.set_scores(stats)))
    cpu = CpuBackend(threads=1)
    cpu.prepare_sets("ks", members, offsets, 1.5, n_genes)
    expected = cpu.set_scores(stats)
    for got in scores:
        assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))


@pytest.mark.parametrize("n_genes", [1_100, 40_000])
def test_bitmap_sort_gives_the_same_scores_across_words_blocks_and_partial_warps(n_genes):
    """The warp's bitmap sort with runs of 2 words per lane (1,100 genes) and of 64 (40,000
    genes: two summary masks per lane), a batch of 33 (a second block with one permutation
    in its warp), sets of 1 to 512 members (the last in its own class of slot 512) and one
    too large for a block (global scratch): the CPU walk's scores, bit for bit. The rank
    tables come from the CPU's ranking (the block ranking has its own tests, and is slow
    in the simulator at this size)."""
    n_batch = 33
    assert bitmap_lane_shift(n_genes) == {1_100: 1, 40_000: 6}[n_genes]
    stats = _awkward_stats(n_genes, n_batch, seed=7)
    rng = np.random.default_rng(8)
    sets = [[n_genes - 1], *(np.sort(rng.choice(n_genes, size=k, replace=False)) for k in (33, 200, 512, 600))]
    members = np.concatenate(sets).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in sets])]).astype(np.int64)
    cpu = CpuBackend(threads=1)
    cpu.prepare_sets("ks", members, offsets, 1.0, n_genes)
    gpu = GpuBackend()
    gpu.es_sort = "bitmap"
    gpu.prepare_sets("ks", members, offsets, 1.0, n_genes)
    assert sorted(slot for _, slot, _, _ in gpu._sets.size_classes) == [0, 32, 64, 256, 512]
    orders = [ranking_reference(row) for row in stats]
    rank = np.empty((n_genes, n_batch), np.int32)
    for b, order in enumerate(orders):
        rank[order, b] = np.arange(n_genes)
    ranked_stat = np.stack([row[order] for row, order in zip(stats, orders)])
    tables = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (stats.T, rank, ranked_stat))
    sets_on_device = gpu._sets
    out = cuda.device_array((n_batch, len(sets)), np.float64)
    positions = cuda.device_array((sets_on_device.n_global_memberships, n_batch), np.int32)
    launch_es_from_ranks(tables, 1.0, sets_on_device.members32, sets_on_device.arrays[1],
                         sets_on_device.size_classes, positions, out, gpu.stream, "bitmap")
    assert np.array_equal(out.copy_to_host().view(np.uint64), cpu.set_scores(stats).view(np.uint64))


def test_scratch_is_reused_between_batches_and_grown_when_needed():
    """Ranking and sorting scratch is carved from buffers kept between calls: batches of
    3, 3 and 1 (a smaller last one), then a call with more rows than before (the buffers
    grow), give the CPU's scores bit for bit, and the buffers are allocated once per size."""
    n_genes = 40
    stats = _awkward_stats(n_genes, 7, seed=9)
    members, offsets = _sets_case(n_genes)
    cpu = CpuBackend(threads=1)
    cpu.prepare_sets("ks", members, offsets, 1.0, n_genes)
    gpu = GpuBackend(scratch_bytes=1)
    gpu.shared_scratch_bytes = 2 * 32 * 32  # the set of 39 sorts in global scratch too
    gpu.prepare_sets("ks", members, offsets, 1.0, n_genes)
    gpu.scratch_bytes = 3 * sum(gpu.memory_model(n_genes).values())
    first = gpu.to_host(gpu.set_scores(stats[:1]))
    small = gpu._workspace["rank"]
    assert small.size == n_genes
    got = gpu.to_host(gpu.set_scores(stats))
    buffers = dict(gpu._workspace)
    assert buffers["rank"].size == 3 * n_genes and buffers["global positions"].size == 3 * 39
    again = gpu.to_host(gpu.set_scores(stats))
    assert all(gpu._workspace[name] is buffer for name, buffer in buffers.items())  # reused, not reallocated
    expected = cpu.set_scores(stats)
    for scores, rows in ((first, expected[:1]), (got, expected), (again, expected)):
        assert np.array_equal(scores.view(np.uint64), rows.view(np.uint64))


def test_memory_model_counts_every_allocation():
    """The cudaGSEA workload: the model's figures are what the kernels allocate."""
    model = device_bytes_per_permutation(20_639, 4_725, 648_970, 17)
    assert model["ranking"] == 20_639 * (16 + 4 + 8 + 8)
    assert model["member_ranks"] == 0  # sets of 15-500 genes all sort in shared memory
    total = sum(model.values())
    assert 0.9e6 < total < 1.2e6  # about 1 MB per permutation: 14,000 at once in 16 GB
    old = device_bytes_per_permutation(20_639, 4_725, 648_970, 17, "per-permutation")
    assert sum(old.values()) > total
    # the labelling kernel's scratch (a pool of the largest stratum's 200 samples) counts too
    assert device_bytes_per_permutation(20_639, 4_725, 648_970, 17, pool_width=200)["labelling"] == 8 * 217


def test_device_chunks_of_a_batch_give_the_cpu_scores():
    """score() splits a batch into device chunks by the memory model (here 3 rows of a
    batch of 7: chunks of 3, 3, 1); the scores and statistics equal the CPU's bits."""
    from permenrich.design import PermutationPlan, TwoGroupLabels
    from permenrich.stats.metrics import get_metric

    n_genes = 30
    values = np.random.default_rng(5).normal(size=(n_genes, 9))
    members, offsets = _sets_case(n_genes)
    plan = PermutationPlan(TwoGroupLabels(np.array([True] * 4 + [False] * 5)), 7, seed=2, random_only=True)
    cpu, gpu = CpuBackend(threads=1), GpuBackend(scratch_bytes=1)
    for backend in (cpu, gpu):
        backend.prepare_statistic(values, get_metric("signal_to_noise"), drawn_is_case=True)
        backend.prepare_sets("ks", members, offsets, 1.0, n_genes)
    labellings = cpu.labellings(plan, 0, 7)
    gpu.labellings(plan, 0, 1)  # the memory model counts the labelling's width
    gpu.scratch_bytes = 3 * sum(gpu.memory_model(n_genes).values())
    assert gpu.device_rows(n_genes) == 3
    expected, expected_stat = cpu.score(labellings, keep_stat=True)
    got, got_stat = (gpu.to_host(a) for a in gpu.score(labellings, keep_stat=True))
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
    assert np.array_equal(got_stat.view(np.uint64), expected_stat.view(np.uint64))


def test_each_batch_frees_what_earlier_batches_dropped(monkeypatch):
    """Numba frees device arrays lazily (ten at a time): every batch's labellings and
    statistics first free what earlier batches dropped, so that their outputs do not
    outlive them beyond the memory model (wired here; the simulator frees nothing)."""
    import permenrich.backends.gpu as gpu_module
    from numba import cuda as real_cuda

    from permenrich.design import PermutationPlan, TwoGroupLabels
    from permenrich.stats.metrics import get_metric

    flushes = []

    class Queue:
        def clear(self):
            flushes.append(True)

    class Context:
        deallocations = Queue()

    class Cuda:
        def __getattr__(self, name):
            return getattr(real_cuda, name)

        @staticmethod
        def current_context():
            return Context()

    n_genes = 30
    values = np.random.default_rng(6).normal(size=(n_genes, 9))
    members, offsets = _sets_case(n_genes)
    plan = PermutationPlan(TwoGroupLabels(np.array([True] * 4 + [False] * 5)), 12, seed=3, random_only=True)
    gpu, cpu = GpuBackend(), CpuBackend(threads=1)
    for backend in (cpu, gpu):
        backend.prepare_statistic(values, get_metric("signal_to_noise"), drawn_is_case=True)
        backend.prepare_sets("ks", members, offsets, 1.0, n_genes)
    monkeypatch.setattr(gpu_module, "_cuda", lambda: Cuda())
    gpu.simulated = False
    for start in (0, 4, 8):
        got = gpu.to_host(gpu.score(gpu.labellings(plan, start, start + 4))[0])
        expected = cpu.score(cpu.labellings(plan, start, start + 4))[0]
        assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
    assert len(flushes) == 6  # labellings and statistics of each of the three batches
