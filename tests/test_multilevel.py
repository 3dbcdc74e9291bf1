"""Multilevel p-values of preranked GSEA: against fgsea's own C++ outputs (within the
stated error: the two draw different random sets), against long permutation runs, and
end to end."""

import math

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.enrich.multilevel import multilevel_error, multilevel_pvalues


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


@pytest.mark.parametrize("bad, message", [
    (dict(p_method="multilevel", set_statistic="mean"), "p_method='multilevel' applies to the running-sum"),
    (dict(p_method="exact"), "p_method= must be one of permutation, multilevel"),
    (dict(p_method="multilevel", sample_size=2), "sample_size= must be at least 3"),
    (dict(p_method="multilevel", eps=1.5), "eps= must lie in [0, 1)"),
])
def test_multilevel_options_are_checked(bad, message):
    scores, sets = _ranked_list()
    with pytest.raises(permenrich.OptionError, match=__import__("re").escape(message)):
        permenrich.prerank(scores, sets, permutations=50, min_size=15, device="cpu", **bad)
