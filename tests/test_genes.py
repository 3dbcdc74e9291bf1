"""Per-gene permutation tests: statistics vs SciPy, exact enumeration and maxT vs brute force."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import permenrich
from _tables import assert_identical


def _study(n_genes=40, n_case=4, n_control=5, shift=1.5, seed=0):
    rng = np.random.default_rng(seed)
    n = n_case + n_control
    values = rng.normal(size=(n_genes, n))
    values[:5, :n_case] += shift
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(n_genes)], columns=[f"s{i}" for i in range(n)])
    labels = ["case"] * n_case + ["ctrl"] * n_control
    return expr, labels


@pytest.mark.parametrize("metric", ["welch_t", "student_t", "mann_whitney"])
def test_statistics_and_parametric_p_match_scipy(metric):
    expr, labels = _study(n_case=6, n_control=7)
    result = permenrich.genes(expr, labels, case="case", control="ctrl", metric=metric, permutations=200,
                              threads=1).set_index("gene").loc[expr.index]
    a, b = expr.to_numpy()[:, :6], expr.to_numpy()[:, 6:]
    if metric == "mann_whitney":
        ref = sps.mannwhitneyu(a, b, axis=1, method="asymptotic")
    else:
        ref = sps.ttest_ind(a, b, axis=1, equal_var=metric == "student_t")
    np.testing.assert_allclose(result.statistic, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(result.pval_parametric, ref.pvalue, rtol=1e-10)


@pytest.mark.parametrize("design", ["pairs", "strata"])
def test_no_textbook_p_beside_a_restricted_permutation_p(design):
    """With pairs or strata the statistic is the unpaired one and only its permutations
    respect the design: an unpaired Welch p (0.74 where the paired t test gives 0.20 in
    the audit's case) would answer another question, so none is given."""
    expr, _ = _study(n_case=6, n_control=6)
    sheet = pd.DataFrame({"label": ["case"] * 6 + ["ctrl"] * 6, "patient": [f"p{i % 6}" for i in range(12)],
                          "batch": ["b1", "b2"] * 6}, index=expr.columns)
    column = {"pairs": "patient", "strata": "batch"}[design]
    result = permenrich.genes(expr, sheet, groupby="label", case="case", control="ctrl",
                              permutations=100, threads=1, **{design: column})
    assert result.pval_parametric.isna().all()
    assert result.pval.notna().all()


@pytest.mark.parametrize("metric", ["pearson", "spearman"])
def test_correlation_statistics(metric):
    rng = np.random.default_rng(3)
    values = rng.normal(size=(30, 12))
    age = rng.normal(50, 10, size=12)
    values[:4] += 0.3 * age
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(30)], columns=[f"s{i}" for i in range(12)])
    sheet = pd.DataFrame({"age": age}, index=expr.columns)
    result = permenrich.genes(expr, sheet, metric=metric, phenotype_column="age", permutations=500,
                              threads=1).set_index("gene").loc[expr.index]
    test = sps.pearsonr if metric == "pearson" else sps.spearmanr
    ref = [test(row, age) for row in values]
    np.testing.assert_allclose(result.statistic, [r.statistic for r in ref], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.pval_parametric, [r.pvalue for r in ref], rtol=1e-6)
    assert (result.pval.iloc[:4] < 0.05).all()
    # normal data: the permutation p-value tracks the textbook one
    assert np.abs(result.pval - result.pval_parametric).max() < 0.1


def test_spearman_values_equal_in_exact_arithmetic_are_equal():
    """With 7 samples, 400 genes share 54 exact Spearman correlations with the phenotype
    (1 - 6 sum d^2 / (n(n^2 - 1))): each must come out as one float, the correctly
    rounded value or next to it, so that tied genes keep their row order in a ranking.
    Unit-vector products had given 39 of the 54 two or more floats."""
    from fractions import Fraction

    rng = np.random.default_rng(1)
    n, n_genes = 7, 400
    values = np.array([rng.permutation(n) for _ in range(n_genes)], dtype=float) * 0.37 + 5
    age = rng.permutation(n).astype(float) * 3 + 20
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(n_genes)], columns=[f"s{i}" for i in range(n)])
    sheet = pd.DataFrame({"age": age}, index=expr.columns)
    result = permenrich.genes(expr, sheet, metric="spearman", phenotype_column="age", permutations=50,
                              threads=1).set_index("gene").loc[expr.index]
    squared_rank_differences = ((values.argsort(axis=1).argsort(axis=1) - age.argsort().argsort()) ** 2).sum(axis=1)
    by_exact_value: dict[int, set[float]] = {}
    for d2, r in zip(squared_rank_differences, result.statistic):
        by_exact_value.setdefault(int(d2), set()).add(float(r))
    assert len(by_exact_value) > 40
    for d2, floats in by_exact_value.items():
        assert len(floats) == 1, (d2, floats)
        exact = 1 - Fraction(6 * d2, n * (n * n - 1))
        assert abs(Fraction(floats.pop()) - exact) <= abs(exact) * Fraction(2, 2**53) + Fraction(1, 2**60)


def _brute_force(values, n_case, alternative):
    n = values.shape[1]
    def welch(mask):
        return sps.ttest_ind(values[:, mask], values[:, ~mask], axis=1, equal_var=False).statistic
    mask = np.zeros(n, dtype=bool)
    mask[:n_case] = True
    t_obs = welch(mask)
    null = []
    for chosen in combinations(range(n), n_case):
        m = np.zeros(n, dtype=bool)
        m[list(chosen)] = True
        null.append(welch(m))
    null = np.array(null)
    f = {"two-sided": np.abs, "greater": lambda x: x, "less": lambda x: -x}[alternative]
    u_obs, u_null = f(t_obs), f(null)
    tol = 1e-12 * np.maximum(1, np.abs(u_obs))
    pval = (u_null >= u_obs - tol).mean(axis=0)
    order = np.argsort(-u_obs, kind="stable")
    step = []
    for j in range(order.size):
        maxima = u_null[:, order[j:]].max(axis=1)
        step.append((maxima >= u_obs[order[j]] - tol[order[j]]).mean())
    adjusted = np.empty(order.size)
    adjusted[order] = np.maximum.accumulate(step)
    return t_obs, pval, adjusted


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_enumeration_and_maxt_match_brute_force(alternative):
    expr, labels = _study(n_genes=25, n_case=4, n_control=5)
    result = permenrich.genes(expr, labels, case="case", control="ctrl", metric="welch_t",
                              alternative=alternative, permutations=10000, threads=2).set_index("gene")
    assert result.attrs["run"]["permutation_plan"]["exact_enumeration"]
    t_obs, pval, adjusted = _brute_force(expr.to_numpy(), 4, alternative)
    got = result.loc[expr.index]
    np.testing.assert_allclose(got.statistic, t_obs, rtol=1e-10)
    np.testing.assert_allclose(got.pval, pval, rtol=1e-12)
    np.testing.assert_allclose(got.pval_maxt, adjusted, rtol=1e-12)
    assert (got.pval_maxt >= got.pval - 1e-15).all()


def test_random_permutations_batch_invariant_and_never_zero():
    expr, labels = _study(n_genes=60, n_case=10, n_control=12, shift=3.0)
    kwargs = dict(case="case", control="ctrl", permutations=999, seed=4, threads=2)
    a = permenrich.genes(expr, labels, batch_size=999, **kwargs)
    b = permenrich.genes(expr, labels, batch_size=50, **kwargs)
    assert_identical(a, b)
    assert a.pval.min() == pytest.approx(1 / 1000)
    assert (a.pval_maxt >= a.pval).all() and a.qval_bh.between(0, 1).all()


def test_cumulative_max_scan_for_array_modules_without_accumulate():
    """The log-step scan used with CuPy (no ufunc.accumulate for maximum) equals NumPy's."""
    from permenrich.nulls import _cumulative_max

    class NumpyWithoutIdentity:  # any module other than numpy itself takes the scan branch
        def __getattr__(self, name):
            return getattr(np, name)

    for shape in [(1, 1), (3, 2), (7, 37), (4, 64)]:
        a = np.random.default_rng(sum(shape)).normal(size=shape)
        np.testing.assert_array_equal(_cumulative_max(a, NumpyWithoutIdentity()), np.maximum.accumulate(a, axis=1))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("array_centre", [False, True])
def test_cpu_exceedance_kernel_equals_array_module_path(alternative, array_centre):
    """The fused CPU kernel of ExceedanceAccumulator.add counts exactly what the
    array-module path (the one CuPy runs) counts: NaN, infinite and tied statistics,
    scalar or per-feature centre, batches of any size."""
    from permenrich.nulls import ExceedanceAccumulator

    class NumpyWithoutIdentity:  # any module other than numpy itself takes the array path
        def __getattr__(self, name):
            return getattr(np, name)

    rng = np.random.default_rng(7)
    n_features = 53
    observed = rng.normal(size=n_features)
    observed[[3, 9]] = np.nan
    observed[5] = observed[6]  # tied observed values
    centre = rng.normal(scale=0.1, size=n_features) if array_centre else 0.2
    batches = [rng.normal(size=(n, n_features)) for n in (1, 17, 64)]
    batches[1][:, 11] = np.nan
    batches[2][0, 12] = np.inf
    batches[2][:, 5] = observed[5]  # ties with the observed value count as exceedances
    total = sum(b.shape[0] for b in batches)
    results = []
    for xp, threads in ((np, 1), (np, 2), (NumpyWithoutIdentity(), None)):
        accumulator = ExceedanceAccumulator(observed, alternative=alternative, centre=centre, n_perm=total,
                                            exact=False, xp=xp, threads=threads)
        for batch in batches:
            accumulator.add(0, batch)
        results.append((np.asarray(accumulator.n_exceed), np.asarray(accumulator.n_exceed_max)))
    for counts, counts_max in results[1:]:
        np.testing.assert_array_equal(counts, results[0][0])
        np.testing.assert_array_equal(counts_max, results[0][1])
    assert results[0][0].sum() > 0 and results[0][1].sum() > 0


def test_welch_parametric_p_at_every_accepted_scale():
    """The Welch-Satterthwaite degrees of freedom squared the class variances (fourth
    powers of the data): NaN p for genes near 1e80 or 1e-82 and a p three times too large
    at 1e-80, where t itself was exact. p does not depend on the scale: SciPy's at scale 1."""
    rng = np.random.default_rng(2)
    base = np.r_[2.0 + 0.3 * rng.normal(size=4), 1.0 + 0.2 * rng.normal(size=6)]
    scales = [3e-99, 1e-82, 1e-80, 1.0, 1e78, 1e99]
    expr = pd.DataFrame(np.vstack([s * base for s in scales]), index=[f"g{i}" for i in range(len(scales))],
                        columns=[f"s{j}" for j in range(10)])
    result = permenrich.genes(expr, ["a"] * 4 + ["b"] * 6, case="a", control="b", metric="welch_t",
                              permutations=50, threads=1).set_index("gene").loc[expr.index]
    expected = sps.ttest_ind(base[:4], base[4:], equal_var=False).pvalue
    np.testing.assert_allclose(result.pval_parametric, expected, rtol=1e-9)


def test_pearson_of_a_nearly_constant_gene_or_phenotype():
    """One centring pass left the rounding of the mean as a constant residue as large as
    the variation of a gene at 0.1 plus 0-3 units in the last place (r 0.466 for 0.494,
    and the parametric p of np.corrcoef's r off alike). Such a gene is an affine image of
    its integer offsets, so its exact r is Pearson's r of those integers; likewise for a
    phenotype at 5 plus a few units in the last place."""
    y = np.array([0.3, -1.2, 0.8, 1.9, -0.4, 0.1, -0.7, 1.1, 0.5, -1.5, 0.9, -0.2])
    steps = np.array([0, 3, 1, 3, 0, 2, 1, 3, 2, 0, 3, 1], dtype=float)
    near_constant = 0.1 + np.spacing(0.1) * steps
    other = np.random.default_rng(0).normal(size=12)
    expr = pd.DataFrame(np.vstack([near_constant, other]), index=["near_constant", "other"],
                        columns=[f"s{j}" for j in range(12)])
    result = permenrich.genes(expr, list(y), metric="pearson", permutations=50, threads=1).set_index("gene")
    expected = sps.pearsonr(steps, y)
    assert result.statistic["near_constant"] == pytest.approx(expected.statistic, rel=1e-12)
    assert result.pval_parametric["near_constant"] == pytest.approx(expected.pvalue, rel=1e-9)
    phenotype = 5.0 + np.spacing(5.0) * steps
    result = permenrich.genes(expr, list(phenotype), metric="pearson", permutations=50, threads=1).set_index("gene")
    assert result.statistic["other"] == pytest.approx(sps.pearsonr(other, steps).statistic, rel=1e-12)


def test_a_gene_on_a_large_scale_leaves_the_others_ties_alone():
    """With diff_of_classes, near ties were judged relative to the largest observed
    difference of all genes: one unrelated gene at 1e15 made every other gene's null
    values "tie" with its observed one (p 0.001 -> 0.31, 0.27 -> 1). Differences of means
    have a scale per gene; their p-values no longer depend on the other genes. The t
    statistics share one scale and keep theirs."""
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 16))
    values[:3, :8] += 3.0
    big = 1e15 * (1 + 0.1 * rng.normal(size=16))
    genes = [f"g{i}" for i in range(7)]
    labels = ["a"] * 8 + ["b"] * 8
    kwargs = dict(case="a", control="b", metric="diff_of_classes", permutations=500, seed=4, threads=1)
    alone = permenrich.genes(pd.DataFrame(values, index=genes[:6]), labels, **kwargs).set_index("gene").pval
    beside = permenrich.genes(pd.DataFrame(np.vstack([values, big]), index=genes), labels,
                              **kwargs).set_index("gene").pval
    assert beside.loc[genes[:6]].to_list() == alone.loc[genes[:6]].to_list()
    assert (alone.loc[genes[:3]] < 0.01).all()
