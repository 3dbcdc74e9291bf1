"""Covariate-adjusted statistics with Freedman–Lane permutations: the observed t against
statsmodels' OLS, the permutation null against a literal Freedman–Lane refit, calibration
under confounding, identity across settings and backends, and one-line refusals."""

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.design import ContinuousPhenotype, PermutationPlan
from permenrich.stats.covariates import CovariateStatistic, covariate_matrix

sm = pytest.importorskip("statsmodels.api", reason="statsmodels is the OLS reference (test extra)")


def _cohort(seed=0, n=30, n_genes=40, effect=0.0, confounded=True):
    """Expression driven by age (which differs between groups when ``confounded``) and sex."""
    rng = np.random.default_rng(seed)
    group = np.array(["case"] * (n // 2) + ["control"] * (n - n // 2))
    age = rng.normal(50, 10, size=n) + (15.0 if confounded else 0.0) * (group == "case")
    sex = rng.choice(["F", "M"], size=n)
    values = rng.normal(size=(n_genes, n)) + 0.08 * (age - 50)[None, :] + 0.5 * (sex == "M")[None, :]
    values[:5] += effect * (group == "case")
    samples = [f"s{i}" for i in range(n)]
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(n_genes)], columns=samples)
    sheet = pd.DataFrame({"group": group, "age": age, "sex": sex, "score": rng.normal(size=n)}, index=samples)
    return expr, sheet


def _ols_t(values, x, design):
    """statsmodels: the t of x in y ~ design + x, for every gene."""
    full = np.column_stack([design, x])
    return np.array([sm.OLS(row, full).fit().tvalues[-1] for row in values])


def test_observed_t_equals_ols_for_two_groups_with_numeric_and_categorical_covariates():
    expr, sheet = _cohort()
    result = permenrich.genes(expr, sheet, groupby="group", case="case", control="control", metric="student_t",
                              covariates=["age", "sex"], permutations=200, device="cpu").set_index("gene")
    design = np.column_stack([np.ones(30), sheet.age, (sheet.sex == "M").astype(float)])
    expected = _ols_t(expr.to_numpy(), (sheet.group == "case").astype(float).to_numpy(), design)
    np.testing.assert_allclose(result.loc[expr.index, "statistic"], expected, rtol=1e-10)
    parametric = np.array([sm.OLS(row, np.column_stack([design, (sheet.group == "case").astype(float)])).fit()
                           .pvalues[-1] for row in expr.to_numpy()])
    np.testing.assert_allclose(result.loc[expr.index, "pval_parametric"], parametric, rtol=1e-8)
    run = result.attrs["run"]
    assert run["design"]["covariates"] == ["age", "sex[M]"] and run["design"]["residual_df"] == 26


def test_observed_t_equals_ols_for_a_continuous_phenotype():
    expr, sheet = _cohort(seed=1)
    result = permenrich.genes(expr, sheet, metric="pearson", phenotype_column="score", covariates=["age"],
                              permutations=100, device="cpu").set_index("gene")
    design = np.column_stack([np.ones(30), sheet.age])
    np.testing.assert_allclose(result.loc[expr.index, "statistic"],
                               _ols_t(expr.to_numpy(), sheet.score.to_numpy(), design), rtol=1e-10)


def test_null_is_freedman_lane():
    """Permutation k's statistics equal a literal Freedman–Lane refit: residuals of the
    reduced model permuted (row i of the permuted data takes residual shuffle[i]... as the
    kernel's convention), added to its fitted values, full model refitted by statsmodels."""
    expr, sheet = _cohort(seed=2, n=16, n_genes=6)
    design = np.column_stack([np.ones(16), sheet.age, (sheet.sex == "M").astype(float)])
    x = (sheet.group == "case").astype(float).to_numpy()
    y = expr.to_numpy()
    statistic = CovariateStatistic(y, x, design, "test")
    plan = PermutationPlan(ContinuousPhenotype(x), 50, seed=9)
    shuffles = plan.labellings(0, 5)
    backend = permenrich.backends.cpu.CpuBackend(threads=1)
    backend.prepare_statistic(y, permenrich.stats.metrics.get_metric("student_t"), phenotype=x, covariates=statistic)
    ours = backend.gene_statistics(shuffles)
    fitted = design @ np.linalg.lstsq(design, y.T, rcond=None)[0]
    residuals = y.T - fitted
    for row, shuffle in enumerate(shuffles):
        # kernel convention: sum_j v[shuffle[j]] R[j] = sum_i v[i] R[inverse[i]]
        inverse = np.argsort(shuffle)
        permuted = fitted + residuals[inverse]
        np.testing.assert_allclose(ours[row], _ols_t(permuted.T, x, design), rtol=1e-9, atol=1e-12)


def test_adjustment_removes_confounding_and_p_values_are_calibrated():
    """Age drives expression and differs between groups; there is no group effect. Without
    adjustment the group looks significant; with age as covariate the permutation
    p-values are uniform."""
    from scipy import stats

    expr, sheet = _cohort(seed=3, n=40, n_genes=400)
    kwargs = dict(groupby="group", case="case", control="control", metric="student_t", permutations=400,
                  seed=1, device="cpu")
    naive = permenrich.genes(expr, sheet, **kwargs)
    adjusted = permenrich.genes(expr, sheet, covariates=["age", "sex"], **kwargs)
    assert (naive.pval < 0.05).mean() > 0.3
    assert stats.kstest(adjusted.pval, "uniform").pvalue > 0.01
    assert abs((adjusted.pval < 0.05).mean() - 0.05) < 0.04


def test_planted_effect_is_found_after_adjustment():
    expr, sheet = _cohort(seed=4, n=40, n_genes=60, effect=1.5)
    sets = {"PLANTED": [f"g{i}" for i in range(5)] + [f"g{i}" for i in range(40, 50)],
            "NULL": [f"g{i}" for i in range(10, 25)]}
    result = permenrich.gsea(expr, sheet, sets, groupby="group", case="case", control="control",
                             metric="student_t", covariates=["age", "sex"], permutations=500, min_size=10,
                             device="cpu").set_index("gene_set")
    assert result.loc["PLANTED", "pval"] < 0.05 and result.loc["NULL", "pval"] > 0.05


def test_identical_across_settings_strata_and_backends():
    expr, sheet = _cohort(seed=5)
    sheet["site"] = ["a", "b", "c"] * 10
    kwargs = dict(groupby="group", case="case", control="control", metric="student_t", covariates=["age"],
                  strata="site", permutations=300, seed=3)
    tables = [permenrich.genes(expr, sheet, device="cpu", batch_size=size, threads=threads, **kwargs)
              for size, threads in ((300, 2), (7, 1))]
    tables.append(permenrich.genes(expr, sheet, device="gpu", batch_size=16, **kwargs))
    texts = [t.to_csv(sep="\t", index=False) for t in tables]
    assert texts[0] == texts[1] == texts[2]


@pytest.mark.parametrize("change, message", [
    (dict(covariates=["age", "age2"]), "covariate 'age2' (age2) is explained by the other covariates"),
    (dict(covariates=["batch"]), "covariate 'batch' has one level ('b1')"),
    (dict(covariates=["dose"]), "covariate 'dose' is constant (2)"),
    (dict(covariates=["weight"]), "covariate 'weight' is missing for 1 analysed sample"),
    (dict(covariates=["group_copy"]), "the phenotype is explained by the covariates"),
    (dict(covariates=["age"], metric="signal_to_noise"), "covariates= make the statistic the t of the phenotype"),
    (dict(covariates=["age"], pairs="pair"), "pairs= cannot be combined with covariates="),
])
def test_designs_that_cannot_be_fitted_are_one_line(change, message):
    expr, sheet = _cohort(seed=6)
    sheet["age2"] = 2 * sheet.age + 1
    sheet["batch"] = "b1"
    sheet["dose"] = 2.0
    sheet["weight"] = [70.0] * 29 + [np.nan]
    sheet["group_copy"] = sheet.group
    sheet["pair"] = [f"p{i % 15}" for i in range(30)]
    kwargs = dict(groupby="group", case="case", control="control", metric="student_t", permutations=50,
                  device="cpu") | change
    with pytest.raises(permenrich.PermenrichError, match=__import__("re").escape(message)):
        permenrich.genes(expr, sheet, **kwargs)


def test_covariate_matrix_indicators():
    design, terms = covariate_matrix({"sex": np.array(["M", "F", "F", "M", "X", "F", "X", "M"]),
                                      "age": np.array(["30", "41", "52", "33", "60", "45", "38", "29"])}, "x")
    assert terms == ["sex[M]", "sex[X]", "age"]
    np.testing.assert_array_equal(design[:, 0], np.ones(8))
    np.testing.assert_array_equal(design[:, 1], [1, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(design[:, 3], [30, 41, 52, 33, 60, 45, 38, 29])


def test_missing_covariates_dropped_with_nan_policy_drop(caplog):
    import logging

    expr, sheet = _cohort(seed=7)
    sheet.loc["s3", "age"] = np.nan
    sheet.loc["s17", "sex"] = ""
    kwargs = dict(groupby="group", case="case", control="control", metric="student_t", covariates=["age", "sex"],
                  permutations=100, device="cpu")
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(expr, sheet, nan_policy="drop", **kwargs).set_index("gene")
    assert any("2 analysed sample(s) lack a covariate value" in r.getMessage() for r in caplog.records)
    kept = sheet.drop(index=["s3", "s17"])
    design = np.column_stack([np.ones(28), kept.age, (kept.sex == "M").astype(float)])
    expected = _ols_t(expr[kept.index].to_numpy(), (kept.group == "case").astype(float).to_numpy(), design)
    np.testing.assert_allclose(result.loc[expr.index, "statistic"], expected, rtol=1e-10)
    with pytest.raises(permenrich.InputError, match="covariate 'age' is missing for 1 analysed sample"):
        permenrich.genes(expr, sheet, **kwargs)


def test_intercept_only_equals_student_t():
    """With no covariate but the intercept, the Freedman–Lane t of every permutation is
    Student's t of the permuted labels (residuals are centred values; permuting them
    permutes the labels)."""
    expr, sheet = _cohort(seed=8, n=14, n_genes=20)
    y = expr.to_numpy()
    x = (sheet.group == "case").astype(float).to_numpy()
    statistic = CovariateStatistic(y, x, np.ones((14, 1)), "test")
    backend = permenrich.backends.cpu.CpuBackend(threads=1)
    backend.prepare_statistic(y, permenrich.stats.metrics.get_metric("student_t"), phenotype=x, covariates=statistic)
    shuffles = PermutationPlan(ContinuousPhenotype(x), 40, seed=2).labellings(0, 10)
    ours = backend.gene_statistics(np.vstack([np.arange(14), shuffles]))
    from permenrich.stats.metrics import metric_reference

    for row, shuffle in enumerate(np.vstack([np.arange(14), shuffles])):
        is_case = x[shuffle] == 1.0  # sample j takes the label of sample shuffle[j]
        np.testing.assert_allclose(ours[row], metric_reference(y, is_case, "student_t"), rtol=1e-10)


def test_ora_expression_mode_with_covariates_and_a_universe():
    """ORA re-derives the altered list from the Freedman–Lane t under every permutation;
    a universe restricts the genes (the statistic is rebuilt on them)."""
    expr, sheet = _cohort(seed=9, n=30, n_genes=120, effect=2.0)
    sets = {"PLANTED": [f"g{i}" for i in range(5)] + [f"g{i}" for i in range(60, 70)],
            "OTHER": [f"g{i}" for i in range(20, 40)]}
    universe = [f"g{i}" for i in range(100)]
    kwargs = dict(expr=expr, phenotype=sheet, groupby="group", case="case", control="control", metric="student_t",
                  covariates=["age", "sex"], top=10, direction="up", permutations=300, min_size=10, device="cpu")
    result = permenrich.ora(None, sets, universe=universe, **kwargs).set_index("gene_set")
    assert result.attrs["run"]["data"]["n_universe"] == 100
    assert result.loc["PLANTED", "pval_perm"] < 0.05 < result.loc["OTHER", "pval_perm"]
    fdr_rule = permenrich.ora(None, sets, **dict(kwargs, top=None, fdr=0.2)).set_index("gene_set")
    assert fdr_rule.loc["PLANTED", "overlap"] >= 3


def test_tiled_freedman_lane_kernel_adds_samples_in_order():
    """The CPU kernel's tiles (8 shuffles, 512 genes, 4 samples per pass) must not change
    a single dot product: compared exactly with NumPy adding the samples one by one and
    the scalar t."""
    from permenrich.backends import cpu

    rng = np.random.default_rng(21)
    n_samples, n_genes, n_vectors, n_shuffles = 19, cpu.DOT_TILE_GENES // 2 + 77, 3, 10
    by_sample = rng.normal(size=(n_samples, n_genes))
    vectors = rng.normal(size=(n_vectors, n_samples))
    shuffles = np.array([rng.permutation(n_samples) for _ in range(n_shuffles)])
    residual_ss = 50.0 + rng.random(n_genes)
    sxx, df = 4.0, float(n_samples - n_vectors - 1)
    out = np.empty((n_shuffles, n_genes))
    cpu.freedman_lane_batch(by_sample, vectors, shuffles, residual_ss, sxx, np.sqrt(sxx), df, 2, out)
    for b in range(n_shuffles):
        dots = np.zeros((n_vectors, n_genes))
        for j in range(n_samples):
            dots = dots + vectors[:, shuffles[b, j]][:, None] * by_sample[j]
        explained = np.zeros(n_genes)
        for v in range(1, n_vectors):
            explained = explained + dots[v] * dots[v]
        expected = [cpu._freedman_lane_t(dots[0, g], explained[g], residual_ss[g], sxx, np.sqrt(sxx), df)
                    for g in range(n_genes)]
        assert np.array_equal(out[b], expected)


def test_covariates_as_geo_writes_them(caplog):
    """GEO characteristics carry units ('45 yrs') and code batches as numbers: a number with
    one unit is fitted as the number (said), number codes as a slope (said, C(name) offered),
    and C(batch) fits the same indicators as text levels, to the bit."""
    import logging

    expr, sheet = _cohort(seed=8)
    sheet["age_text"] = [f"{a:.6f} yrs" for a in sheet.age]
    sheet["age_rounded"] = [float(f"{a:.6f}") for a in sheet.age]
    sheet["batch"] = [1, 2, 3] * 10
    sheet["batch_text"] = ["b1", "b2", "b3"] * 10
    kwargs = dict(groupby="group", case="case", control="control", metric="student_t", permutations=100,
                  device="cpu")
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        with_units = permenrich.genes(expr, sheet, covariates=["age_text", "sex"], **kwargs)
    numbers = permenrich.genes(expr, sheet, covariates=["age_rounded", "sex"], **kwargs)
    assert with_units.drop(columns=[]).to_csv() == numbers.to_csv()
    assert with_units.attrs["run"]["design"]["covariates"] == ["age_text", "sex[M]"]
    assert "covariate 'age_text': every value carries the unit 'yrs' (e.g. '" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        slope = permenrich.genes(expr, sheet, covariates=["batch"], **kwargs)
    assert slope.attrs["run"]["design"]["covariates"] == ["batch"]
    assert "covariate 'batch' takes the values 1, 2, 3: fitted as a number (one slope); if they code categories " \
           "(batches), write C(batch)" in caplog.text
    categories = permenrich.genes(expr, sheet, covariates=["C(batch)"], **kwargs)
    text_levels = permenrich.genes(expr, sheet, covariates=["batch_text"], **kwargs)
    assert categories.attrs["run"]["design"]["covariates"] == ["batch[2]", "batch[3]"]
    assert categories.to_csv() == text_levels.to_csv()
    assert not categories.equals(slope)


def test_covariate_levels_that_look_like_mistakes_are_warned_about(caplog):
    import logging

    design, terms = None, None
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        design, terms = covariate_matrix({"sex": np.array(["M", "F", "F", "M", "male", "F", "M", "m"])}, "sheet.tsv",
                                         sample_ids=[f"s{i}" for i in range(8)])
    assert terms == ["sex[M]", "sex[m]", "sex[male]"]
    assert "covariate 'sex' has levels that differ only in case or spacing ('M' and 'm')" in caplog.text
    assert "covariate 'sex' has 2 level(s) of one sample ('m', 'male'): such a sample is fitted exactly" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        _, percent = covariate_matrix({"fat": np.array(["10%", "20%", "15%", "30%", "12%", "25%", "18%", "22%"])},
                                      "sheet.tsv")
        _, mixed = covariate_matrix({"age": np.array(["6 months", "2 yrs", "6 months", "3 yrs", "5 months", "2 yrs",
                                                      "6 months", "3 yrs"])}, "sheet.tsv")
    assert percent == ["fat"] and len(mixed) == 3
    assert "covariate 'age' is a number in different units ('months', 'yrs'): fitted as categories" in caplog.text
    with pytest.raises(permenrich.PermenrichError, match="is a number for 7 analysed sample.s. but 'x' for sample 's4'"):
        covariate_matrix({"age": np.array(["30", "41", "52", "33", "x", "45", "38", "29"])}, "sheet.tsv",
                         sample_ids=[f"s{i}" for i in range(8)])


def test_few_residual_degrees_of_freedom_are_warned_about(caplog):
    import logging

    expr, sheet = _cohort(seed=9, n=10, n_genes=12)
    sheet["site"] = ["a", "b", "c", "d", "e"] * 2
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        table = permenrich.genes(expr, sheet, groupby="group", case="case", control="control", metric="student_t",
                                 covariates=["age", "site"], permutations=50, device="cpu")
    assert table.attrs["run"]["design"]["residual_df"] == 3
    assert "10 samples leave 3 residual degree(s) of freedom after 5 covariate term(s)" in caplog.text


def test_samples_dropped_for_missing_covariates_leave_their_strata_too():
    """nan_policy='drop' with strata: the design keeps the strata of the samples analysed
    (the strata of all samples had been kept, one more than the samples, and the kernels
    read past the matrix), so the run equals one on the sheet without those samples."""
    from _tables import assert_identical

    expr, sheet = _cohort(seed=10)
    sheet["site"] = ["a", "b", "c"] * 10
    sheet.loc["s4", "age"] = np.nan
    kwargs = dict(groupby="group", case="case", control="control", metric="student_t", covariates=["age"],
                  strata="site", permutations=200, seed=5, device="cpu")
    dropped = permenrich.genes(expr, sheet, nan_policy="drop", **kwargs)
    kept = sheet.drop(index="s4")
    expected = permenrich.genes(expr[kept.index], kept, **kwargs)
    dropped.attrs, expected.attrs = {}, {}
    assert_identical(dropped, expected)


def test_strata_of_one_class_are_refused_with_covariates_too():
    """Strata that separate the classes were refused without covariates but ran with them,
    silently powerless: the residuals moved only among samples of one class. A 3-SD effect
    in every gene gave p <= 0.05 for 1% of them (100% without the strata)."""
    expr, sheet = _cohort(seed=11, n=20, effect=3.0)
    sheet["site"] = np.where(sheet.group == "case", "A", "B")
    kwargs = dict(groupby="group", case="case", control="control", metric="student_t", covariates=["age"],
                  strata="site", permutations=50, device="cpu")
    message = r"<DataFrame>: every stratum of strata='site' holds one class only, so no label can move"
    with pytest.raises(permenrich.InputError, match=message):
        permenrich.genes(expr, sheet, **kwargs)
    # strata that mix the classes only through a sample whose covariate is missing: refused once it leaves
    sheet.loc["s0", "site"] = "B"
    sheet.loc["s0", "age"] = np.nan
    with pytest.raises(permenrich.InputError, match=message):
        permenrich.genes(expr, sheet, nan_policy="drop", **kwargs)


def test_class_counts_in_the_run_are_those_analysed():
    """nan_policy='drop' left run.json's class counts as before the drop (10 and 10 where
    9 and 10 were analysed)."""
    expr, sheet = _cohort(seed=12, n=20)
    sheet.loc["s2", "age"] = np.nan
    result = permenrich.genes(expr, sheet, groupby="group", case="case", control="control", metric="student_t",
                              covariates=["age"], permutations=20, device="cpu", nan_policy="drop")
    design = result.attrs["run"]["design"]
    assert (design["n_case"], design["n_control"], design["n_samples_without_covariates"]) == (9, 10, 1)


@pytest.mark.parametrize("strata", [None, "site"])
def test_contrasts_take_covariates_from_the_sample_sheet(strata):
    """contrasts() passed only the strata and pairs columns of a sample sheet on to each
    contrast, so covariates held there were 'not found'; each contrast now equals its own
    run exactly."""
    from _tables import assert_identical

    expr, sheet = _cohort(seed=13, n=24)
    sheet["site"] = ["a", "b"] * 12
    spec = pd.DataFrame({"name": ["cc"], "groupby": ["group"], "case": ["case"], "control": ["control"]})
    kwargs = dict(metric="student_t", covariates=["age", "C(site)"], strata=strata, permutations=60, seed=2,
                  device="cpu")
    table = permenrich.contrasts(expr, spec, mode="genes", phenotype=sheet, **kwargs).attrs["per_contrast"]["cc"]
    alone = permenrich.genes(expr, sheet, groupby="group", case="case", control="control", **kwargs)
    assert table.attrs["run"]["design"]["covariates"] == alone.attrs["run"]["design"]["covariates"]
    table.attrs, alone.attrs = {}, {}
    assert_identical(table, alone)
