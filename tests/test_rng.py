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
    fill_subsets,
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


def _labels(n_case, n_control):
    return TwoGroupLabels(np.array([True] * n_case + [False] * n_control))


def test_permutation_is_pure_function_of_seed_and_index():
    plan = PermutationPlan(_labels(20, 28), 500, seed=0)
    whole = plan.drawn_positions(0, 500)
    pieces = np.vstack([plan.drawn_positions(s, min(500, s + 33)) for s in range(0, 500, 33)])
    assert np.array_equal(whole, pieces)
    assert np.array_equal(plan.drawn_positions(123, 124)[0], whole[123])
    assert (np.diff(whole, axis=1) > 0).all()  # sorted, distinct
    assert whole.min() >= 0 and whole.max() < 48
    other = PermutationPlan(_labels(20, 28), 500, seed=1).drawn_positions(0, 500)
    assert not np.array_equal(whole, other)


def test_seed_zero_shuffles():
    plan = PermutationPlan(_labels(5, 5), 100, seed=0)
    observed = plan.labels.observed_drawn_positions()[0]
    drawn = plan.drawn_positions(0, 100)
    assert not (drawn == observed).all(axis=1).all()


def test_random_subsets_are_uniform():
    # 5 of 8 samples, smaller class = 3 controls: 56 subsets, each ~ 20000/56 times
    # (a plan would enumerate these exactly, so call the random generator itself)
    drawn = np.empty((20000, 3), dtype=np.int64)
    fill_subsets(np.uint64(11), 0, 8, 3, False, np.zeros((1, 1), dtype=np.int64), drawn)
    codes = (1 << drawn).sum(axis=1)
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == 56
    expected = 20000 / 56
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 100  # df = 55; P(chi2 > 100) ~ 1e-4


def test_exact_enumeration_lists_every_labelling_once():
    plan = PermutationPlan(_labels(3, 4), 1000, seed=5)
    assert plan.exact and plan.n_perm == math.comb(7, 3)
    drawn = plan.drawn_positions(0, plan.n_perm)
    assert [tuple(r) for r in drawn] == list(combinations(range(7), 3))


def test_invalid_plan_options():
    with pytest.raises(OptionError, match="permutations"):
        PermutationPlan(_labels(3, 3), 0, seed=1)
    with pytest.raises(OptionError, match="seed"):
        PermutationPlan(_labels(3, 3), 10, seed=-1)
