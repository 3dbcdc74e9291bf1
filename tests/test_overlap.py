"""Over-representation statistics and batched overlap counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import fisher_exact, hypergeom

from permenrich.enrich.overlap import (
    OverlapCounter,
    leading_overlap_genes,
    overlap_counts,
    overlap_statistics,
)


def random_sets(rng: np.random.Generator, n_universe: int, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat CSR sets with sorted, distinct members (as GeneSetIndex builds them)."""
    members = [np.sort(rng.choice(n_universe, size, replace=False)) for size in sizes]
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.concatenate(members) if members else np.empty(0, dtype=np.int64)
    return flat.astype(np.int32), offsets


def table_as_sets(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """A universe, list and one set realising the 2x2 table [[a, b], [c, d]]."""
    n_universe = a + b + c + d
    selected = np.zeros(n_universe, dtype=bool)
    selected[: a + c] = True  # list = first a + c genes
    members = np.r_[np.arange(a), np.arange(a + c, a + c + b)]  # a in the list, b outside
    return selected, members.astype(np.int64), np.array([0, a + b]), n_universe


# --------------------------------------------------------------------------- statistics


def fisher_grid() -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(7)
    tables = [tuple(int(x) for x in rng.integers(0, 30, 4)) for _ in range(150)]
    # zero cells, zero rows/columns, and very small p-values
    tables += [
        (0, 5, 5, 10), (5, 0, 5, 10), (5, 5, 0, 10), (5, 5, 10, 0), (0, 0, 5, 10), (5, 10, 0, 0),
        (0, 5, 0, 10), (5, 0, 10, 0), (3, 0, 0, 7), (0, 4, 6, 0), (1, 0, 0, 0), (0, 0, 0, 1),
        (40, 0, 0, 1960), (50, 450, 200, 19300), (0, 300, 500, 19200), (12, 3, 88, 19897),
    ]
    return [t for t in tables if sum(t) > 0]


@pytest.mark.parametrize("table", fisher_grid())
def test_matches_fisher_exact_greater(table: tuple[int, int, int, int]) -> None:
    a, b, c, d = table
    selected, members, offsets, n_universe = table_as_sets(a, b, c, d)
    stats = overlap_statistics(selected, members, offsets, n_universe)
    reference = fisher_exact([[a, b], [c, d]], alternative="greater")
    assert stats["overlap"][0] == a
    assert stats["set_size"][0] == a + b
    assert stats["list_size"][0] == a + c
    np.testing.assert_allclose(stats["pval"][0], reference.pvalue, rtol=1e-12, atol=0)
    odds = stats["odds_ratio"][0]
    if np.isnan(reference.statistic):
        assert np.isnan(odds)
    else:
        assert odds == reference.statistic


def test_many_sets_against_hypergeom() -> None:
    rng = np.random.default_rng(3)
    n_universe = 5_000
    sizes = [0, 1, 15, 200, 500, 4_999, 5_000] + list(rng.integers(5, 400, 50))
    members, offsets = random_sets(rng, n_universe, sizes)
    selected = np.zeros(n_universe, dtype=bool)
    selected[rng.choice(n_universe, 300, replace=False)] = True
    selected[members[offsets[4] : offsets[4] + 120]] = True  # one strongly enriched set
    stats = overlap_statistics(selected, members, offsets, n_universe)

    overlap = np.array([selected[members[offsets[s] : offsets[s + 1]]].sum() for s in range(len(sizes))])
    set_size = np.asarray(sizes)
    list_size = int(selected.sum())
    np.testing.assert_array_equal(stats["overlap"], overlap)
    np.testing.assert_array_equal(stats["set_size"], set_size)
    np.testing.assert_array_equal(stats["list_size"], np.full(len(sizes), list_size))
    np.testing.assert_allclose(stats["expected"], set_size * list_size / n_universe)
    reference = np.minimum(hypergeom.sf(overlap - 1, n_universe, set_size, list_size), 1.0)
    reference[(set_size == 0) | (set_size == n_universe)] = 1.0  # fisher_exact's degenerate tables
    np.testing.assert_allclose(stats["pval"], reference, rtol=1e-12)
    assert stats["pval"][4] < 1e-40
    assert np.isnan(stats["odds_ratio"][0]) and np.isnan(stats["odds_ratio"][6])
    for key in ("overlap", "set_size", "list_size"):
        assert stats[key].dtype == np.int64
    for key in ("expected", "odds_ratio", "pval"):
        assert stats[key].dtype == np.float64


def test_empty_list_and_full_list() -> None:
    members, offsets = np.array([0, 1, 2]), np.array([0, 2, 3])
    none = overlap_statistics(np.zeros(4, dtype=bool), members, offsets, 4)
    np.testing.assert_array_equal(none["overlap"], [0, 0])
    np.testing.assert_array_equal(none["pval"], [1.0, 1.0])
    assert np.isnan(none["odds_ratio"]).all()
    everything = overlap_statistics(np.ones(4, dtype=bool), members, offsets, 4)
    np.testing.assert_array_equal(everything["overlap"], [2, 1])
    np.testing.assert_array_equal(everything["pval"], [1.0, 1.0])


def test_statistics_input_checks() -> None:
    members, offsets = np.array([0, 1]), np.array([0, 2])
    with pytest.raises(ValueError, match="bool vector"):
        overlap_statistics(np.ones(4, dtype=int), members, offsets, 4)
    with pytest.raises(ValueError, match="bool vector"):
        overlap_statistics(np.ones(3, dtype=bool), members, offsets, 4)
    with pytest.raises(ValueError, match="lie in"):
        overlap_statistics(np.ones(4, dtype=bool), np.array([0, 4]), offsets, 4)
    with pytest.raises(ValueError, match="rise from 0"):
        overlap_statistics(np.ones(4, dtype=bool), members, np.array([0, 3]), 4)
    with pytest.raises(ValueError, match="n_universe"):
        overlap_statistics(np.ones(0, dtype=bool), members, offsets, 0)


# --------------------------------------------------------------------------- counts


def brute_force_counts(selected_matrix: np.ndarray, members: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    n_sets = offsets.size - 1
    out = np.zeros((selected_matrix.shape[0], n_sets), dtype=np.int64)
    for row in range(selected_matrix.shape[0]):
        for s in range(n_sets):
            out[row, s] = sum(bool(selected_matrix[row, g]) for g in members[offsets[s] : offsets[s + 1]])
    return out


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.5, 1.0])
def test_overlap_counts_brute_force(fraction: float) -> None:
    rng = np.random.default_rng(11)
    n_universe = 400
    members, offsets = random_sets(rng, n_universe, [0, 1, 5, 30, 0, 120, 400, 17])
    selected_matrix = rng.random((9, n_universe)) < fraction
    expected = brute_force_counts(selected_matrix, members, offsets)
    counts = overlap_counts(selected_matrix, members, offsets)
    assert counts.dtype == np.int64 and counts.shape == (9, 8)
    np.testing.assert_array_equal(counts, expected)
    counter = OverlapCounter(members, offsets, n_universe)
    np.testing.assert_array_equal(counter.counts(selected_matrix), expected)
    # one row agrees with overlap_statistics
    np.testing.assert_array_equal(
        overlap_statistics(selected_matrix[3], members, offsets, n_universe)["overlap"], expected[3]
    )


def test_counter_large_batch_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import permenrich.enrich.overlap as overlap_module

    # Force several chunks so the chunk boundaries are exercised.
    monkeypatch.setattr(overlap_module, "_CHUNK_ELEMENTS", 3 * 1_000)
    rng = np.random.default_rng(5)
    n_universe = 1_000
    members, offsets = random_sets(rng, n_universe, list(rng.integers(15, 200, 40)))
    selected_matrix = rng.random((50, n_universe)) < 0.1
    counts = OverlapCounter(members, offsets, n_universe).counts(selected_matrix)
    gathered = selected_matrix[:, members].astype(np.int64)
    expected = np.stack(
        [gathered[:, offsets[s] : offsets[s + 1]].sum(axis=1) for s in range(offsets.size - 1)], axis=1
    )
    np.testing.assert_array_equal(counts, expected)


def test_counter_realistic_size() -> None:
    # The permutation-null shape (1000 lists x 20 000 genes, 300 sets); correctness only,
    # timings live in benchmarks/.
    rng = np.random.default_rng(2)
    n_universe = 20_000
    members, offsets = random_sets(rng, n_universe, list(rng.integers(15, 500, 300)))
    selected_matrix = rng.random((1_000, n_universe)) < 0.05
    counts = OverlapCounter(members, offsets, n_universe).counts(selected_matrix)
    assert counts.shape == (1_000, 300)
    for row in (0, 499, 999):
        np.testing.assert_array_equal(
            counts[row], overlap_statistics(selected_matrix[row], members, offsets, n_universe)["overlap"]
        )


def test_counter_edge_shapes_and_checks() -> None:
    counter = OverlapCounter(np.array([0, 2]), np.array([0, 1, 2]), 3)
    assert counter.counts(np.zeros((0, 3), dtype=bool)).shape == (0, 2)
    no_sets = OverlapCounter(np.array([], dtype=np.int64), np.array([0]), 3)
    np.testing.assert_array_equal(no_sets.counts(np.ones((2, 3), dtype=bool)), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="selected_matrix"):
        counter.counts(np.ones((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="selected_matrix"):
        counter.counts(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        overlap_counts(np.ones(3, dtype=bool), np.array([0]), np.array([0, 1]))


# --------------------------------------------------------------------------- overlap genes


def test_leading_overlap_genes() -> None:
    gene_ids = np.array(["G0", "G1", "G2", "G3", "G4"], dtype=object)
    selected = np.array([True, False, True, True, False])
    members = np.array([3, 0, 1, 4, 2, 0])
    offsets = np.array([0, 3, 3, 4, 6])
    assert leading_overlap_genes(selected, members, offsets, gene_ids) == ["G3,G0", "", "", "G2,G0"]
    assert leading_overlap_genes(selected, members, offsets, list(gene_ids)) == ["G3,G0", "", "", "G2,G0"]
