"""Preranked GSEA (gene-set permutation null) against GSEA Java's own preranked run."""

import re

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.enrich.linear import linear_set_statistic_reference
from permenrich.enrich.running_sum import running_sum
from _tables import assert_identical


@pytest.fixture(scope="module")
def java(shared_data):
    base = shared_data / "reference" / "gsea_java_preranked"
    text = (base / "results.edb").read_text()
    records = {}
    for m in re.finditer(r'<DTG [^>]*GENESET="[^"#]*#([^"]+)" ES="([^"]+)" NES="([^"]+)" NP="([^"]+)" '
                         r'FDR="([^"]+)" FWER="([^"]+)"', text):
        records[m.group(1)] = [float(v) for v in m.groups()[1:]]
    reference = pd.DataFrame(records, index=["ES", "NES", "NP", "FDR", "FWER"]).T
    return base, reference


def test_reproduces_gsea_java_preranked(java):
    base, reference = java
    n_perm = 1000  # as the Java run
    ours = permenrich.prerank(base / "gsea_data.gsea_data.rnk", base / "gene_sets.gmt", permutations=n_perm,
                              seed=1, min_size=15, max_size=500, threads=2).set_index("gene_set")
    joined = ours.join(reference, how="inner")
    assert len(joined) == 7
    # ES exactly (GSEA writes 4 decimals)
    np.testing.assert_allclose(joined.es, joined.ES, atol=5.01e-5)
    # NES: ratio to a null mean from ~500 same-signed random-set scores: ~1% Monte Carlo error
    np.testing.assert_allclose(joined.nes, joined.NES, rtol=0.05)
    m = n_perm / 2
    for column, theirs in (("pval", "NP"), ("fdr", "FDR")):
        p, q = joined[column].to_numpy(), joined[theirs].to_numpy()
        bound = 5 * np.sqrt(2 * np.clip(q, 0.005, 1) * (1 - np.clip(q, 0, 0.99)) / m) + 3 / m
        assert (np.abs(p - q) <= bound).all(), (column, p, q)
    # FWER: GSEA draws each set's random sets on their own; the largest score of one
    # cumulative draw (every size from one sequence) gave 0.099 and 0.136 for its 0.265 and
    # 0.393. Its Monte Carlo error over 1,000 permutations, twice (ours and GSEA's):
    p, q = joined.fwer.to_numpy(), joined.FWER.to_numpy()
    bound = 5 * np.sqrt(2 * np.clip(q, 0.005, 1) * (1 - np.clip(q, 0, 0.99)) / n_perm) + 3 / n_perm
    assert (np.abs(p - q) <= bound).all(), (p, q)
    assert ours.attrs["run"]["permutation_type"].startswith("gene set")


def test_fwer_is_that_of_independently_drawn_sets():
    """FWER = P(some set's null NES reaches NES*) for sets drawn independently, from each
    set's own null (recomputed by pl.null_scores): 1 - prod_s (1 - q_s), as (mP + 1)/(m + 1).
    Sets of equal size share their draws; each still counts as its own set."""
    rng = np.random.default_rng(11)
    genes = [f"g{i}" for i in range(400)]
    scores = pd.Series(rng.normal(size=400), index=genes)
    scores.iloc[:30] += 1.0
    scores.iloc[-30:] -= 0.8
    sets = {"UP": genes[:25], "UP_TOO": genes[5:30], "DOWN": genes[-20:], "MIXED": genes[100:160:2],
            "WIDE": genes[::9], "SAME_SIZE": genes[200:225]}
    n_perm = 500
    result = permenrich.prerank(scores, sets, permutations=n_perm, seed=4, min_size=5, threads=1)
    table = result.set_index("gene_set")
    nulls = {s: permenrich.pl.null_scores(result, s) for s in table.index}
    null_nes = {}
    for s, null in nulls.items():
        positive = null >= 0  # no null score lies within the tolerance of 0 here
        assert not (np.abs(null) <= 1e-12).any()
        null_nes[s] = np.where(positive, null / null[positive].mean(), null / -null[~positive].mean())
    for s, row in table.iterrows():
        sign = 1.0 if row.nes >= 0 else -1.0
        reach = [np.count_nonzero((sign * nes > 0) & (sign * nes >= sign * row.nes - 1e-12)) / n_perm
                 for nes in null_nes.values()]
        expected = (n_perm * (1 - np.prod(1 - np.array(reach))) + 1) / (n_perm + 1)
        assert row.fwer == pytest.approx(expected, rel=1e-9), s


def test_prerank_batch_invariance_and_seed(java):
    base, _ = java
    kwargs = dict(permutations=300, seed=9, threads=2)
    a = permenrich.prerank(base / "gsea_data.gsea_data.rnk", base / "gene_sets.gmt", batch_size=300, **kwargs)
    b = permenrich.prerank(base / "gsea_data.gsea_data.rnk", base / "gene_sets.gmt", batch_size=17, **kwargs)
    assert_identical(a, b)


@pytest.mark.parametrize("statistic", ["mean", "maxmean"])
def test_linear_set_statistics_observed_and_null(statistic):
    rng = np.random.default_rng(5)
    genes = [f"g{i}" for i in range(300)]
    scores = pd.Series(rng.normal(size=300), index=genes)
    scores.iloc[:20] += 2.0
    sets = {"TOP": genes[:20], "MIXED": genes[100:140], "ALL_LOW": list(scores.sort_values().index[:25])}
    result = permenrich.prerank(scores, sets, set_statistic=statistic, permutations=2000, seed=0,
                                min_size=5).set_index("gene_set")
    for name, members in sets.items():
        expected = linear_set_statistic_reference(statistic, scores[members].to_numpy(), np.arange(len(members)))
        assert result.loc[name, "es"] == pytest.approx(expected, abs=1e-12)
    assert result.loc["TOP", "pval"] < 0.01 and result.loc["ALL_LOW", "pval"] < 0.01
    assert result.loc["MIXED", "pval"] > 0.01
    assert result.leading_edge.eq("").all()


def test_random_set_null_matches_closed_form():
    """The null kernel's KS score of a drawn set equals running_sum on the same positions."""
    from permenrich.backends.cpu import _sorted_positions_score

    rng = np.random.default_rng(1)
    ranked = np.sort(rng.normal(size=500))[::-1]
    for k in [15, 60, 200]:
        positions = np.sort(rng.choice(500, size=k, replace=False))
        for weight in [0.0, 1.0, 2.0]:
            expected = running_sum(positions, np.abs(ranked) ** weight).es
            assert _sorted_positions_score(positions, ranked, weight, 0, 500) == pytest.approx(expected, abs=1e-12)


def test_duplicated_genes_in_ranked_list(tmp_path):
    path = tmp_path / "dup.rnk"
    path.write_text("A\t1.0\nB\t0.5\nA\t0.2\n")
    with pytest.raises(permenrich.InputError, match="duplicates"):
        permenrich.prerank(path, {"S": ["A", "B"]}, min_size=1)


def test_p_floor_column_and_fdr_order():
    """A strongly negative set in a list of mostly positive scores: few null scores are
    negative, so its nominal p cannot be small. ``n_null_same_sign`` says how many stand
    behind each p, and rows are ordered by FDR then |NES|, not by that p."""
    from permenrich.backends.cpu import CpuBackend

    rng = np.random.default_rng(12)
    genes = [f"g{i}" for i in range(400)]
    scores = pd.Series(np.abs(rng.normal(size=400)) + 0.3, index=genes)
    scores.iloc[-20:] = -3.0 - rng.random(20)
    sets = {"NEG": genes[-20:], "RANDOM1": list(rng.choice(genes[:380], 20, replace=False)),
            "RANDOM2": list(rng.choice(genes[:380], 30, replace=False)), "TOP": genes[:25]}
    result = permenrich.prerank(scores, sets, permutations=1000, seed=4, min_size=5, device="cpu")
    assert list(result.columns).index("n_null_same_sign") == list(result.columns).index("pval") + 1
    fdr, magnitude = result.fdr.to_numpy(), np.abs(result.nes.to_numpy())
    assert all((fdr[i], -magnitude[i]) <= (fdr[i + 1], -magnitude[i + 1]) for i in range(len(result) - 1))
    by_set = result.set_index("gene_set")
    # Recount the null scores of each sign from the null kernel itself.
    ranked = np.sort(scores.to_numpy())[::-1]
    sizes = np.array(sorted({len(m) for m in sets.values()}))
    null = CpuBackend(threads=1).random_set_null(4, 0, 1000, ranked, 1.0, "ks", sizes)
    for name, members in sets.items():
        column = null[:, int(np.searchsorted(sizes, len(members)))]
        es = by_set.loc[name, "es"]
        expected = int((column >= 0).sum()) if es >= 0 else int((column < 0).sum())
        assert by_set.loc[name, "n_null_same_sign"] == expected
        assert by_set.loc[name, "pval"] >= 1 / (expected + 1)
    assert by_set.loc["NEG", "es"] < 0 and by_set.loc["NEG", "n_null_same_sign"] < 500  # a minority
    assert result.gene_set.iloc[0] == "NEG"  # the strongest set leads, whatever its nominal p


def test_cumulative_null_scores_prefixes_of_one_random_sequence():
    """Every size of a permutation is scored on the first k elements of one random
    sequence (fgsea's cumulative null): checked against the sequence itself and the
    closed form of the running sum."""
    from permenrich.backends.cpu import CpuBackend
    from permenrich.rng import STREAM_GENE_SET, random_sequence

    rng = np.random.default_rng(2)
    ranked = np.sort(rng.normal(size=300))[::-1].copy()
    sizes = np.array([5, 9, 30, 31, 120], dtype=np.int64)
    null = CpuBackend(threads=2).random_set_null(7, 40, 60, ranked, 1.0, "ks", sizes)
    pool, sequence = np.arange(300), np.empty(120, dtype=np.int64)
    for row, permutation in enumerate(range(40, 60)):
        random_sequence(np.uint64(7), permutation, STREAM_GENE_SET, 120, pool, sequence)
        assert np.array_equal(pool, np.arange(300))  # the pool is restored
        assert np.unique(sequence).size == 120
        for column, k in enumerate(sizes):
            expected = running_sum(np.sort(sequence[:k]), np.abs(ranked)).es
            assert null[row, column] == pytest.approx(expected, abs=1e-12)


def test_random_sequence_prefixes_are_uniform_subsets():
    """Calibration: over many permutations, the first 2 of 5 draws from 6 positions are
    each of the C(6, 2) = 15 pairs equally often (chi-square)."""
    from scipy import stats as sps

    from permenrich.rng import STREAM_GENE_SET, random_sequence

    pool, sequence = np.arange(6), np.empty(5, dtype=np.int64)
    counts = {}
    for permutation in range(15_000):
        random_sequence(np.uint64(11), permutation, STREAM_GENE_SET, 5, pool, sequence)
        pair = tuple(sorted(sequence[:2]))
        counts[pair] = counts.get(pair, 0) + 1
    assert len(counts) == 15
    assert sps.chisquare(list(counts.values())).pvalue > 1e-3


def test_scores_whose_hit_weights_leave_float64_are_scaled_by_a_power_of_two():
    """p-values as scores: 1e-160 ** 2 is subnormal and 1/(a set's sum) overflowed, so a
    set of such genes had ES = inf beside an ordinary p-value. The running sum now runs on
    the scores times 2**j (ES does not depend on their scale): the same table as a list the
    user scaled so, and ordinary lists untouched to the bit."""
    from permenrich.enrich.running_sum import scaled_for_weights

    ordinary = np.linspace(3.0, -3.0, 50)
    assert scaled_for_weights(ordinary, 2.0)[0] is ordinary and scaled_for_weights(ordinary, 2.0)[1] == 0
    genes = [f"g{i}" for i in range(60)]
    scores = pd.Series(np.r_[np.linspace(2.0, 0.5, 30), np.geomspace(1e-150, 1e-170, 30)], index=genes)
    sets = {"TINY": genes[35:45], "TOP": genes[:10], "MIXED": genes[20:40]}
    scaled, shift = scaled_for_weights(scores.to_numpy(), 2.0)
    assert shift > 0 and np.array_equal(scaled, np.ldexp(scores.to_numpy(), shift))
    kwargs = dict(weight=2.0, permutations=300, seed=2, min_size=5, threads=1)
    table = permenrich.prerank(scores, sets, **kwargs)
    assert np.isfinite(table.es).all() and table.attrs["run"]["data"]["running_sum_scale"].startswith(f"2**{shift}")
    by_user = permenrich.prerank(pd.Series(scaled, index=genes), sets, **kwargs)
    columns = ["gene_set", "es", "nes", "pval", "fdr", "fwer", "leading_edge"]
    assert_identical(table[columns], by_user[columns])
    # the figures' running sum and null are the run's
    tiny = table.set_index("gene_set").loc["TINY"]
    curve = permenrich.pl.running_sum_curve(table, "TINY")[0]
    assert curve[np.argmax(np.abs(curve))] == pytest.approx(tiny.es, abs=1e-12)
    null = permenrich.pl.null_scores(table, "TINY")
    assert np.isfinite(null).all()
    # no power of two holds this range, nor a huge weight's 0/1/inf: left as they are
    extreme = np.array([1e-300, 1e300])
    assert scaled_for_weights(extreme, 4.0)[0] is extreme and scaled_for_weights(ordinary, 1e308)[1] == 0
