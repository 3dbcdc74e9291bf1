"""The rule for non-finite statistics, in every mode: +-inf are the most extreme values,
infinite running-sum weights share the hits' weight (the limit), NaN and infinite means
are refused with one line; empirical p is never 0."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.enrich.running_sum import running_sum, running_sum_dense
from permenrich.errors import InputError
from permenrich.modes._shared import check_observed_statistics
from permenrich.stats.metrics import metric_reference


def _binary_gene_study(n_genes=40, seed=0):
    """4 vs 4 samples; gene G0 is 1 in the cases and 0 in the controls, so Welch's t is +inf."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_genes, 8))
    values[0] = [1, 1, 1, 1, 0, 0, 0, 0]
    genes = [f"G{i}" for i in range(n_genes)]
    expr = pd.DataFrame(values, index=genes, columns=[f"S{j}" for j in range(8)])
    return expr, ["A"] * 4 + ["B"] * 4


@pytest.mark.parametrize("metric", ["welch_t", "student_t"])
def test_infinite_statistic_gets_exact_p_in_genes_mode(metric):
    expr, labels = _binary_gene_study()
    result = permenrich.genes(expr, labels, case="A", control="B", metric=metric, permutations=1000, threads=1)
    assert result.attrs["run"]["permutation_plan"]["exact_enumeration"]
    row = result.set_index("gene").loc["G0"]
    assert row.statistic == np.inf
    # Brute force: the labellings whose |t| reaches +inf are the observed one and its mirror.
    values = expr.to_numpy()
    reached = 0
    for cases in combinations(range(8), 4):
        is_case = np.isin(np.arange(8), cases)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = metric_reference(values[:1], is_case, metric)[0]
        reached += bool(np.abs(t) == np.inf)
    assert reached == 2
    assert row.pval == reached / 70
    assert row.pval_maxt == reached / 70  # nothing is more extreme than inf
    assert (result.pval > 0).all() and (result.pval_maxt > 0).all()


def test_infinite_statistic_in_random_permutations_never_gives_p_zero():
    expr, labels = _binary_gene_study()
    expr = pd.concat([expr, expr.add_suffix("_x")], axis=1)  # 16 samples: 12,870 labellings > 2,000
    result = permenrich.genes(expr, labels * 2, case="A", control="B", metric="welch_t", permutations=2000,
                              threads=1)
    assert not result.attrs["run"]["permutation_plan"]["exact_enumeration"]
    assert (result.pval > 0).all() and (result.pval_maxt > 0).all()


def test_running_sum_with_infinite_statistic_is_the_limit_of_large_ones():
    """The ES of a set holding an infinite statistic equals the literal running sum with
    that statistic replaced by ever larger finite values (its limit)."""
    rng = np.random.default_rng(2)
    stat = np.sort(rng.normal(size=200))[::-1].copy()
    stat[0] = np.inf
    stat[5] = np.inf
    in_set = np.zeros(200, dtype=bool)
    in_set[[0, 5, 30, 60, 61, 150]] = True
    limit = running_sum(np.flatnonzero(in_set), np.abs(stat)).es
    for big in (1e30, 1e60):
        finite = np.where(np.isinf(stat), big, stat)
        dense = running_sum_dense(in_set, finite, 1.0)
        literal = dense[np.argmax(np.abs(dense))]
        assert limit == pytest.approx(literal, abs=1e-12)


def test_gsea_set_with_infinite_statistic_matches_brute_force():
    expr, labels = _binary_gene_study()
    genes = list(expr.index)
    sets = {"WITH_INF": genes[:10], "OTHER": genes[10:25]}
    result = permenrich.gsea(expr, labels, sets, case="A", control="B", metric="welch_t", permutations=1000,
                             min_size=5, threads=1).set_index("gene_set")
    values = expr.to_numpy()

    def es_of(is_case):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = metric_reference(values, is_case, "welch_t")
        order = np.lexsort((np.arange(t.size), -t))
        position = np.empty(t.size, dtype=int)
        position[order] = np.arange(t.size)
        return {name: running_sum(position[[genes.index(g) for g in members]], np.abs(t[order])).es
                for name, members in sets.items()}

    observed = es_of(np.arange(8) < 4)
    null = [es_of(np.isin(np.arange(8), cases)) for cases in combinations(range(8), 4)]
    for name in sets:
        es = observed[name]
        assert result.loc[name, "es"] == pytest.approx(es, abs=1e-12)
        scores = np.array([n[name] for n in null])
        same_sign = scores >= 0 if es >= 0 else scores < 0
        exceed = scores >= es - 1e-12 if es >= 0 else scores <= es + 1e-12
        assert result.loc[name, "pval"] == pytest.approx(exceed.sum() / same_sign.sum(), abs=1e-15)
    assert result.loc["WITH_INF", "es"] == 1.0  # the infinite gene leads and takes all the weight
    assert np.isfinite(result[["es", "nes", "pval", "fdr", "fwer"]].to_numpy()).all()


@pytest.mark.parametrize("set_statistic", ["mean", "maxmean"])
def test_linear_set_statistics_refuse_infinite_statistics(set_statistic):
    expr, labels = _binary_gene_study()
    sets = {"S": list(expr.index[:10]), "T": list(expr.index[10:25])}
    with pytest.raises(InputError, match=r"gene 'G0'.*inf.*set statistic '" + set_statistic):
        permenrich.gsea(expr, labels, sets, case="A", control="B", metric="welch_t", set_statistic=set_statistic,
                        permutations=100, min_size=5, threads=1)


def test_linear_set_statistics_refuse_infinite_null_statistics():
    """G0 is finite when observed but infinite under the labellings that separate it."""
    expr, labels = _binary_gene_study()
    expr.iloc[0] = [1, 1, 1, 0, 1, 0, 0, 0]
    sets = {"S": list(expr.index[:10]), "T": list(expr.index[10:25])}
    with pytest.raises(InputError, match="a permutation gave an infinite one"):
        permenrich.gsea(expr, labels, sets, case="A", control="B", metric="welch_t", set_statistic="mean",
                        permutations=100, min_size=5, threads=1)


def test_undefined_statistic_is_refused_naming_the_gene():
    with pytest.raises(InputError, match=r"data.gct: the welch_t statistic of gene 'B' is undefined \(NaN\)"):
        check_observed_statistics(np.array([1.0, np.nan, np.inf]), np.array(["A", "B", "C"]), "welch_t", "data.gct")
    check_observed_statistics(np.array([1.0, -np.inf, np.inf]), np.array(["A", "B", "C"]), "welch_t", "x", "ks")


def test_an_observed_running_sum_that_is_not_finite_is_refused_naming_the_set():
    """Statistics near 1e-90 with weight 3.5: |s| ** 3.5 is subnormal, 1/(the set's sum)
    overflows and the ES was reported as inf beside an ordinary p-value (values nearer 0
    than 1e-100 are refused on reading)."""
    rng = np.random.default_rng(4)
    values = rng.normal(size=(40, 8))
    values[:6] = 1e-90 * rng.uniform(1, 2, size=(6, 8)) * rng.choice([-1, 1], size=(6, 8))
    genes = [f"G{i}" for i in range(40)]
    expr = pd.DataFrame(values, index=genes, columns=[f"S{j}" for j in range(8)])
    sets = {"TINY": genes[:6], "OTHER": genes[10:20]}
    with pytest.raises(InputError, match="observed enrichment score of set 'TINY' is not finite.*weight="):
        permenrich.gsea(expr, ["A"] * 4 + ["B"] * 4, sets, metric="diff_of_classes", weight=3.5, permutations=20,
                        min_size=5)
    # weight 1: |s| = 1e-90 is an ordinary float, nothing to refuse
    assert np.isfinite(permenrich.gsea(expr, ["A"] * 4 + ["B"] * 4, sets, metric="diff_of_classes",
                                       permutations=20, min_size=5).es).all()
