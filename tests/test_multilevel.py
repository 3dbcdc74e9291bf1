"""Multilevel p-values of preranked GSEA: against fgsea's own C++ outputs (within the
stated error: the two draw different random sets), against long permutation runs, and
end to end."""

import math

import numba
import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.enrich.multilevel import multilevel_error, multilevel_pvalues
from permenrich.rng import _cpu as _rng

_bounded_index_tagged = _rng._bounded_index_tagged


def test_against_fgsea_multilevel_cpp(shared_data):
    """fgseaMultilevelCpp on ranks 1..3000, sizes 25 and 100, sampleSize 101, eps 0: our
    estimate and fgsea's differ by less than 3.5 combined standard deviations (each
    reports its own log2err, down to p = 1e-51)."""
    reference = pd.read_csv(shared_data / "reference" / "fgsea_cpp" / "refs" / "ref_fgseaMultilevelCpp.tsv", sep="\t")
    ranks = np.arange(1, 3001, dtype=np.float64)
    for size, group in reference.groupby("pathwaySize"):
        pvalues, reliable = multilevel_pvalues(ranks, 1.0, int(size), group.ES.to_numpy(), sample_size=101, seed=42,
                                               eps=0.0)
        assert reliable.all()
        for (es, p_ref, err_ref), p in zip(group[["ES", "cppMPval", "log2err"]].to_numpy(), pvalues):
            err = multilevel_error(p, 101)
            assert err == pytest.approx(err_ref, abs=0.1), (size, es)  # the same error model
            combined = math.sqrt(err ** 2 + err_ref ** 2)
            assert abs(math.log2(p) - math.log2(p_ref)) < 3.5 * combined, (size, es, p, p_ref)


def test_multilevel_error_formula():
    """fgsea's multilevelError(pval = 1e-10, sampleSize = 1001), computed by hand."""
    from scipy.special import polygamma

    expected = math.sqrt(34 * float(polygamma(1, 501) - polygamma(1, 1002))) / math.log(2)
    assert multilevel_error(1e-10, 1001) == pytest.approx(expected, rel=1e-12)


@numba.njit(cache=True)
def _reference_move(weights, samples, bound, seed, stream, tag, cursor):
    """The chain as defined: every proposal decided by scanning the running sum of the
    changed set, which is shifted into place first (no candidate)."""
    m, k = samples.shape
    n = weights.shape[0]
    moves = 0
    while moves < m * k:
        for s in range(m):
            sample = samples[s]
            norm = 0.0
            for j in range(k):
                norm += weights[sample[j]]
            for _ in range(max(1, int(0.1 * k))):
                index, cursor = _bounded_index_tagged(seed, stream, tag, cursor, k)
                value, cursor = _bounded_index_tagged(seed, stream, tag, cursor, n)
                old = sample[index]
                if np.any(sample == value):
                    moves += value == old
                    continue
                new_norm = norm - weights[old] + weights[value]
                changed = np.sort(np.concatenate((sample[:index], sample[index + 1:], np.array([value]))))
                rises = False
                if new_norm > 0.0:
                    miss, hit = 1.0 / (n - k), 1.0 / new_norm
                    running, last = 0.0, -1
                    for position in changed:
                        running += hit * weights[position] - miss * (position - last - 1)
                        if running > bound:
                            rises = True
                            break
                        last = position
                if rises:
                    sample[:] = changed
                    norm = new_norm
                    moves += 1
    return cursor


@pytest.mark.parametrize("size, n_genes, zeros", [(15, 300, 0), (40, 2000, 0), (176, 2000, 0), (60, 400, 150),
                                                  (399, 420, 0)])
def test_chain_shortcuts_decide_as_the_running_sum(size, n_genes, zeros):
    """The chain's shortcut (a candidate where the running sum exceeded the bound,
    updated in O(1)) decides every proposal as a scan of the running sum does: level
    after level, the samples and the stream cursor are exactly those of the plain chain.
    Also with weights of 0 (a set's norm can reach 0) and with sets of nearly every
    gene."""
    from permenrich.enrich.multilevel import STREAM_MULTILEVEL, _move, _record_and_split

    rng = np.random.default_rng(size)
    weights = np.sort(np.abs(rng.standard_t(3, size=n_genes)))[::-1]
    weights[rng.choice(n_genes, zeros, replace=False)] = 0.0
    samples = np.sort(np.stack([rng.choice(n_genes, size, replace=False) for _ in range(31)]), axis=1)
    levels, corrector = np.empty(31 * 40), np.empty(31 * 40, dtype=np.int64)
    filled = _record_and_split(weights, samples, levels, corrector, 0)
    cursor = 0
    for _ in range(12):
        expected = samples.copy()
        expected_cursor = _reference_move(weights, expected, levels[filled - 1], np.uint64(7), 2 * size,
                                          STREAM_MULTILEVEL, cursor)
        cursor = _move(weights, samples, levels[filled - 1], np.uint64(7), 2 * size, STREAM_MULTILEVEL, cursor)
        assert cursor == expected_cursor
        assert np.array_equal(samples, expected)
        filled = _record_and_split(weights, samples, levels, corrector, filled)


@pytest.mark.parametrize("size", [1, 2, 176, 1024, 1025, 3000])
def test_insertion_point_is_numpys_searchsorted(size):
    """The chain's insertion point (members counted up to 1,024 members, bisected
    beyond) is ``np.searchsorted(sample, value, "left")`` for members, non-members and
    values beyond either end."""
    from permenrich.enrich.multilevel import _COUNT_BELOW_MAX, _insertion_point

    assert 1024 == _COUNT_BELOW_MAX  # both branches are among the sizes
    rng = np.random.default_rng(size)
    sample = np.sort(rng.choice(4 * size + 10, size, replace=False)).astype(np.int64)
    for value in [-1, 0, *rng.integers(0, 4 * size + 10, 200), *sample[:50], sample[-1], sample[-1] + 1]:
        assert _insertion_point(sample, np.int64(value)) == np.searchsorted(sample, value, side="left")


def _ranked_list(seed=3, n=2000):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n)]
    scores = pd.Series(rng.normal(size=n), index=genes)
    order = scores.sort_values(ascending=False).index
    sets = {"TOP_HEAVY": list(order[:12]) + list(rng.choice(order[12:], 18, replace=False)),
            "BOTTOM": list(order[-8:]) + list(rng.choice(order[:-8], 12, replace=False)),
            "RANDOM": list(rng.choice(genes, 40, replace=False)),
            "STRONG": list(order[:40:2])}
    return scores, sets


def test_multilevel_agrees_with_a_long_permutation_run():
    """Sets of moderate enrichment (p down to ~0.007): 1,000 permutations + multilevel
    against 100,000 permutations, within 3.5 combined standard deviations; the most
    enriched set takes the multilevel estimate (more precise than 1,000 permutations)."""
    from permenrich.enrich.multilevel import multilevel_error

    rng = np.random.default_rng(3)
    scores, _ = _ranked_list()
    order = scores.sort_values(ascending=False).index
    sets = {f"MOD{j}": list(rng.choice(order[:300], 4 + j, replace=False)) +
            list(rng.choice(order[300:], 26 - j, replace=False)) for j in range(8)}
    permutation = permenrich.prerank(scores, sets, permutations=100_000, seed=1, min_size=15, device="cpu")
    multilevel = permenrich.prerank(scores, sets, permutations=1000, seed=1, min_size=15, device="cpu",
                                    p_method="multilevel").set_index("gene_set")
    used_multilevel = 0
    for row in permutation.itertuples():
        p, err = multilevel.loc[row.gene_set, "pval"], multilevel.loc[row.gene_set, "log2err"]
        used_multilevel += bool(err == pytest.approx(multilevel_error(p, 101)))
        permutation_err = math.sqrt((1 - row.pval) / (row.pval * row.n_null_same_sign)) / math.log(2)
        assert abs(math.log2(p) - math.log2(row.pval)) < 3.5 * math.hypot(err, permutation_err), row.gene_set
    assert used_multilevel >= 1


def test_multilevel_reaches_far_below_the_permutation_floor_and_is_reproducible():
    scores, sets = _ranked_list()
    kwargs = dict(permutations=200, seed=4, min_size=15, device="cpu", p_method="multilevel")
    table = permenrich.prerank(scores, sets, **kwargs)
    strong = table.set_index("gene_set").loc["STRONG"]
    assert strong.pval < 1 / 201 / 100 and strong.log2err > 0
    assert list(table.columns).index("log2err") == list(table.columns).index("pval") + 1
    assert table.attrs["run"]["parameters"]["p_method"] == "multilevel"
    # a pure function of (seed, set size, sign): the same whatever the other sets
    again = permenrich.prerank(scores, {"STRONG": sets["STRONG"], "RANDOM": sets["RANDOM"]}, **kwargs)
    assert again.set_index("gene_set").loc["STRONG", "pval"] == strong.pval


def test_multilevel_rulers_on_threads_give_the_same_table():
    """Rulers of different sizes run on threads: one thread or three give the same p-values
    and errors, bit for bit. A set whose permutation error is below any multilevel
    error (a large p) keeps its permutation p and error (no ruler runs for it)."""
    from permenrich.enrich.multilevel import multilevel_error, permutation_error

    scores, sets = _ranked_list()
    order = scores.sort_values(ascending=False).index
    sets["SMALL_TOP"] = list(order[:16:2])  # a size of its own
    sets["EVEN"] = list(order[25::50])  # spread evenly over the ranking: ES near 0, p near 1
    kwargs = dict(permutations=300, seed=9, min_size=5, device="cpu", p_method="multilevel")
    one = permenrich.prerank(scores, sets, threads=1, **kwargs).set_index("gene_set")
    three = permenrich.prerank(scores, sets, threads=3, **kwargs).set_index("gene_set")
    assert one["size"].nunique() >= 4
    for column in ("pval", "log2err", "nes"):
        assert np.array_equal(one[column].to_numpy(), three[column].to_numpy(), equal_nan=True), column
    even = one.loc["EVEN"]
    b = int(round(even.pval * (even.n_null_same_sign + 1))) - 1
    assert even.log2err == permutation_error(b, int(even.n_null_same_sign)) <= multilevel_error(1.0, 101)
    assert one.loc["STRONG", "pval"] < 1 / 301  # while the strong sets got rulers


@pytest.mark.parametrize("bad, message", [
    (dict(p_method="multilevel", set_statistic="mean"), "p_method='multilevel' applies to the running-sum"),
    (dict(p_method="exact"), "p_method= must be one of permutation, multilevel"),
    (dict(p_method="multilevel", sample_size=2), "sample_size= must lie between 3 and 100,000"),
    # was a traceback after all the permutations had run
    (dict(p_method="multilevel", sample_size=10**20), "sample_size= must lie between 3 and 100,000"),
    (dict(p_method="multilevel", eps=1.5), "eps= must lie in [0, 1)"),
])
def test_multilevel_options_are_checked(bad, message):
    scores, sets = _ranked_list()
    with pytest.raises(permenrich.OptionError, match=__import__("re").escape(message)):
        permenrich.prerank(scores, sets, permutations=50, min_size=15, device="cpu", **bad)


@pytest.mark.parametrize("eps", [1e-50, 0.0])
def test_multilevel_p_falls_as_the_score_rises(eps):
    """Sets of one size drawn from ever shorter heads of the ranked list: p must fall as
    ES rises. Keeping whichever estimate had the smaller error at its own p had given the
    most enriched sets (ES 0.89-1.0) the permutation floor, 2.3e-3, while ES 0.78 had
    7e-34: a multilevel estimate's error grows like sqrt(-log2 p). With eps = 0 no p is 0."""
    rng = np.random.default_rng(0)
    n_genes, size = 1000, 100
    genes = [f"G{i}" for i in range(n_genes)]
    scores = pd.Series(np.sort(rng.normal(size=n_genes))[::-1], index=genes)
    sets = {f"top{head}": [genes[i] for i in (np.sort(rng.choice(head, size, replace=False)) if head > size
                                              else np.arange(size))]
            for head in (100, 103, 110, 130, 160, 200, 300, 450, 700)}
    table = permenrich.prerank(scores, sets, p_method="multilevel", eps=eps, permutations=1000, min_size=1,
                               max_size=n_genes, threads=1, device="cpu").sort_values("es", ascending=False)
    assert (table.es.diff().dropna() < 0).all()
    assert (table.pval.diff().dropna() >= 0).all(), table[["gene_set", "es", "pval"]]
    assert (table.pval > 0).all()
    floor = 1 / (table.n_null_same_sign + 1)
    assert (table.pval[table.es > 0.8] < floor[table.es > 0.8] / 1e6).all()
    if eps:
        assert table.pval.iloc[0] == eps
