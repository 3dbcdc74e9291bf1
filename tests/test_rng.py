"""Philox4x32-10 against the published known-answer vectors, and the permutation plan."""

import math
from itertools import combinations

import numpy as np
import pytest

from permenrich.design import PermutationPlan, TwoGroupLabels
from permenrich.errors import OptionError
from permenrich.rng import (
    STREAM_PERMUTATION,
    bounded_index,
    MODE_SUBSET,
    fill_labellings,
    philox4x32_10,
    philox4x32_10_numpy,
    permutation_word,
)

# Random123 kat_vectors: counter[4], key[2] -> output[4]
KNOWN_ANSWERS = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    assert philox4x32_10_numpy(np.array([counter]), np.array(key))[0].tolist() == expected
    compiled = philox4x32_10(*[np.uint64(v) for v in counter + key])
    assert [int(v) for v in compiled] == expected


def test_compiled_words_match_numpy_on_large_counters():
    seed = 0xDEADBEEF_12345678
    for k in [0, 1, 2**32 - 1, 2**32, 2**40 + 7, 2**63 - 1]:
        for word in [0, 1, 3, 4, 17]:
            counter = np.array([[k & 0xFFFFFFFF, k >> 32, word // 4, STREAM_PERMUTATION]])
            key = np.array([seed & 0xFFFFFFFF, seed >> 32])
            expected = philox4x32_10_numpy(counter, key)[0, word % 4]
            assert int(permutation_word(np.uint64(seed), k, word)) == int(expected)


def test_bounded_index_is_in_range_and_uniform():
    counts = np.zeros(7, dtype=int)
    cursor = 0
    for _ in range(7000):
        value, cursor = bounded_index(np.uint64(3), 5, cursor, 7)
        counts[value] += 1
    assert counts.min() > 850 and counts.max() < 1150  # ~ 1000 +- 4.3 sd


def _lemire_reference(seed, stream, tag, cursor, bound):
    """Lemire's multiply-shift with rejection as defined (the threshold 2**32 mod bound
    computed for every word), on NumPy's Philox: what the compiled draws must give."""
    key = np.array([seed & 0xFFFFFFFF, seed >> 32])
    threshold = (2**32 - bound) % bound
    while True:
        counter = np.array([[stream & 0xFFFFFFFF, stream >> 32, cursor // 4, tag]])
        word = int(philox4x32_10_numpy(counter, key)[0, cursor % 4])
        cursor += 1
        product = word * bound
        if product & 0xFFFFFFFF >= threshold:
            return product >> 32, cursor


@pytest.mark.parametrize("bound", [1, 7, 9033, 2**31 + 1, 2**32 - 5])
def test_bounded_draws_follow_lemire_exactly(bound):
    """The compiled draws (the threshold's division only when a low word falls below the
    bound; words read one Philox block at a time, or a block per word) give Lemire's
    values and cursors, also for bounds that reject often (2**31 + 1: about half the
    words)."""
    from permenrich.rng import _cpu

    seed, stream, tag = 0xDEADBEEF_12345678, 2**40 + 3, 0x4D4C0000
    cursor = expected_cursor = buffered_cursor = 0
    block = np.zeros(5, dtype=np.uint64)
    for _ in range(40):
        expected, expected_cursor = _lemire_reference(seed, stream, tag, expected_cursor, bound)
        value, cursor = _cpu._bounded_index_tagged(np.uint64(seed), stream, tag, cursor, bound)
        assert (value, cursor) == (expected, expected_cursor)
        # the multilevel chain's draw, which keeps the current Philox block between draws
        value, buffered_cursor = _cpu._bounded_index_buffered(np.uint64(seed), stream, tag, buffered_cursor, bound,
                                                              block)
        assert (value, buffered_cursor) == (expected, expected_cursor)


def _labels(n_case, n_control):
    return TwoGroupLabels(np.array([True] * n_case + [False] * n_control))


def test_permutation_is_pure_function_of_seed_and_index():
    plan = PermutationPlan(_labels(20, 28), 500, seed=0)
    whole = plan.labellings(0, 500)
    pieces = np.vstack([plan.labellings(s, min(500, s + 33)) for s in range(0, 500, 33)])
    assert np.array_equal(whole, pieces)
    assert np.array_equal(plan.labellings(123, 124)[0], whole[123])
    assert (np.diff(whole, axis=1) > 0).all()  # sorted, distinct
    assert whole.min() >= 0 and whole.max() < 48
    other = PermutationPlan(_labels(20, 28), 500, seed=1).labellings(0, 500)
    assert not np.array_equal(whole, other)


def test_seed_zero_shuffles():
    plan = PermutationPlan(_labels(5, 5), 100, seed=0)
    observed = plan.observed()[0]
    drawn = plan.labellings(0, 100)
    assert not (drawn == observed).all(axis=1).all()


def test_random_subsets_are_uniform():
    # 5 of 8 samples, smaller class = 3 controls: 56 subsets, each ~ 20000/56 times
    # (a plan would enumerate these exactly, so call the random generator itself)
    drawn = np.empty((20000, 3), dtype=np.int64)
    one = np.ones(1, dtype=np.int64)
    fill_labellings(np.uint64(11), 0, MODE_SUBSET, False, np.array([0, 8]), np.arange(8), np.array([3]),
                    one, np.zeros((1, 1), dtype=np.int64), one, drawn)
    codes = (1 << drawn).sum(axis=1)
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == 56
    expected = 20000 / 56
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 100  # df = 55; P(chi2 > 100) ~ 1e-4


def test_exact_enumeration_lists_every_labelling_once():
    plan = PermutationPlan(_labels(3, 4), 1000, seed=5)
    assert plan.exact and plan.n_perm == math.comb(7, 3)
    drawn = plan.labellings(0, plan.n_perm)
    assert [tuple(r) for r in drawn] == list(combinations(range(7), 3))


def test_invalid_plan_options():
    with pytest.raises(OptionError, match="permutations"):
        PermutationPlan(_labels(3, 3), 0, seed=1)
    with pytest.raises(OptionError, match="seed"):
        PermutationPlan(_labels(3, 3), 10, seed=-1)


def test_stratified_draws_keep_each_stratum_class_counts():
    is_case = np.array([True, False, False, True, True, False, True, False, False, False])
    strata = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    plan = PermutationPlan(TwoGroupLabels(is_case, strata), 200, seed=4)
    # drawn class = case (4 of 10); per stratum 1, 3, 0 drawn: C(3,1)*C(4,3)*C(3,0) = 12 labellings
    assert plan.exact and plan.n_perm == 12
    drawn = plan.labellings(0, plan.n_perm)
    rows = {tuple(r) for r in drawn}
    assert len(rows) == 12
    for r in drawn:
        assert np.bincount(strata[r], minlength=3).tolist() == [1, 3, 0]
    random_plan = PermutationPlan(TwoGroupLabels(is_case, strata), 5, seed=4)
    assert not random_plan.exact
    for r in random_plan.labellings(0, 5):
        assert np.bincount(strata[r], minlength=3).tolist() == [1, 3, 0]


def test_pairs_enumerate_all_swaps():
    from permenrich.design import pair_codes

    is_case = np.array([True, False, False, True, True, False, False, True])
    pairs = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    codes = pair_codes(pairs, is_case, source="sheet")
    plan = PermutationPlan(TwoGroupLabels(is_case, codes), 1000, seed=0)
    assert plan.exact and plan.n_perm == 16
    drawn = plan.labellings(0, 16)
    assert len({tuple(r) for r in drawn}) == 16
    assert all(np.bincount(codes[r], minlength=4).tolist() == [1, 1, 1, 1] for r in drawn)


def test_bad_strata_and_pairs():
    from permenrich.design import pair_codes, strata_codes
    from permenrich.errors import InputError

    with pytest.raises(InputError, match="stratum 'x' has a single sample"):
        strata_codes(np.array(["x", "y", "y"]), source="sheet.tsv")
    with pytest.raises(InputError, match="pair 'a' has 2 samples with 2 case"):
        pair_codes(np.array(["a", "a"]), np.array([True, True]), source="sheet.tsv")


def test_continuous_shuffles_are_permutations_within_strata():
    from permenrich.design import ContinuousPhenotype

    values = np.arange(8, dtype=float)
    strata = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    plan = PermutationPlan(ContinuousPhenotype(values, strata), 100, seed=2)
    assert not plan.exact  # 4! * 4! = 576 > 100
    shuffles = plan.labellings(0, 100)
    for row in shuffles:
        assert sorted(row[:4]) == [0, 1, 2, 3] and sorted(row[4:]) == [4, 5, 6, 7]
    exact = PermutationPlan(ContinuousPhenotype(np.arange(4.0)), 100, seed=2)
    assert exact.exact and exact.n_perm == 24
    assert len({tuple(r) for r in exact.labellings(0, 24)}) == 24
