"""Meta-analysis across studies (permenrich.meta, permenrich.stats.meta).

References: statsmodels' meta-analysis functions (Hedges' g, fixed and
DerSimonian-Laird random effects) and the textbook formulas written out here; a
one-study meta-analysis against the single-study run; calibration on simulated null
studies with correlated genes.
"""

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import permenrich
from permenrich.errors import InputError, OptionError
from permenrich.stats.meta import combine_studies, gather, join_genes, study_seed
from permenrich.stats.metrics import metric_reference

sm_meta = pytest.importorskip("statsmodels.stats.meta_analysis", reason="statsmodels is the reference")


def _study(rng, n_genes=30, n_case=6, n_control=7, shift=0.0, shifted=(), prefix="g", modules=True):
    n = n_case + n_control
    values = rng.normal(size=(n_genes, n))
    if modules:  # genes correlated in modules of 5
        values += 0.7 * np.repeat(rng.normal(size=(-(-n_genes // 5), n)), 5, axis=0)[:n_genes]
    for g in shifted:
        values[g, :n_case] += shift
    genes = [f"{prefix}{i}" for i in range(n_genes)]
    labels = ["case"] * n_case + ["ctrl"] * n_control
    return {"expr": pd.DataFrame(values, index=genes, columns=[f"s{i}" for i in range(n)]),
            "phenotype": labels, "case": "case", "control": "ctrl"}


def combine(stacked: np.ndarray, method: str, **kwargs):
    """combine_studies of per-study rows stacked (n_studies, n_genes), NaN = gene absent."""
    positions = np.where(np.isnan(stacked), -1, np.arange(stacked.shape[1]))
    return combine_studies([row[None, :] for row in stacked], positions, method, **kwargs).row(0)


def test_hedges_g_equals_statsmodels() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(20, 11))
    is_case = np.arange(11) < 5
    a, b = values[:, is_case], values[:, ~is_case]
    g_ref, _ = sm_meta.effectsize_smd(a.mean(1), a.std(1, ddof=1), 5, b.mean(1), b.std(1, ddof=1), 6)
    np.testing.assert_allclose(metric_reference(values, is_case, "hedges_g"), g_ref, rtol=1e-12)
    kernel = permenrich.genes(pd.DataFrame(values, index=[f"g{i}" for i in range(20)]),
                              ["a"] * 5 + ["b"] * 6, case="a", control="b", metric="hedges_g",
                              permutations=10, threads=1).set_index("gene").statistic
    np.testing.assert_allclose(kernel.loc[[f"g{i}" for i in range(20)]].to_numpy(), g_ref, rtol=1e-12)


def test_effect_size_methods_equal_statsmodels_per_gene() -> None:
    rng = np.random.default_rng(2)
    g = rng.normal(scale=0.8, size=(4, 25))
    sizes = np.array([[5, 6], [10, 12], [8, 8], [20, 15]])
    truncated = 0
    for method in ("fixed", "random"):
        got = combine(g, method, class_sizes=sizes)
        for j in range(g.shape[1]):
            n = sizes.sum(1)
            variance = n / (sizes[:, 0] * sizes[:, 1]) + g[:, j] ** 2 / 2 / (n - 3.94)
            with np.errstate(invalid="ignore"):
                res = sm_meta.combine_effects(g[:, j], variance, method_re="dl")
            truncated += method == "random" and res.tau2 <= 0
            if method == "fixed":
                assert got.effect[j] == pytest.approx(res.mean_effect_fe, rel=1e-12, abs=1e-15)
                assert got.statistic[j] == pytest.approx(res.mean_effect_fe / res.sd_eff_w_fe, rel=1e-12)
            elif res.tau2 > 0:
                assert got.effect[j] == pytest.approx(res.mean_effect_re, rel=1e-12, abs=1e-15)
                assert got.statistic[j] == pytest.approx(res.mean_effect_re / res.sd_eff_w_re, rel=1e-12)
                assert got.tau2[j] == pytest.approx(res.tau2, rel=1e-12, abs=1e-15)
            else:
                # statsmodels leaves DerSimonian-Laird's tau^2 negative; the estimator
                # truncates it at 0, where random effects equal the fixed effect.
                assert got.tau2[j] == 0.0 and got.i2[j] == 0.0
                assert got.effect[j] == pytest.approx(res.mean_effect_fe, rel=1e-12, abs=1e-15)
                assert got.statistic[j] == pytest.approx(res.mean_effect_fe / res.sd_eff_w_fe, rel=1e-12)
            if method == "random":
                assert got.q[j] == pytest.approx(res.q, rel=1e-12)
                assert got.i2[j] == pytest.approx(max(0.0, (res.q - 3) / res.q), rel=1e-12, abs=1e-15)
    assert 0 < truncated < g.shape[1]  # both branches of the estimator were checked


def test_stouffer_formula_and_missing_studies() -> None:
    rng = np.random.default_rng(3)
    t = rng.normal(size=(3, 12))
    t[1, 1:4] = np.nan  # study 2 lacks genes 1-3
    t[[0, 2], 0] = np.nan  # gene 0: measured by study 2 alone
    w = np.sqrt([20.0, 30.0, 50.0])
    got = combine(t, "stouffer", weights=w)
    for j in range(12):
        have = ~np.isnan(t[:, j])
        expected = (w[have] * t[have, j]).sum() / np.sqrt((w[have] ** 2).sum())
        if have.sum() == 1:
            assert got.statistic[j] == t[have, j][0]  # one study: its statistic, exactly
        else:
            assert got.statistic[j] == pytest.approx(expected, rel=1e-12)
        assert got.n_studies[j] == have.sum()


def test_join_and_gather() -> None:
    genes, positions = join_genes([np.array(["a", "b", "c"]), np.array(["c", "d", "a"])], "inner")
    assert list(genes) == ["a", "c"] and positions.tolist() == [[0, 2], [2, 0]]
    genes, positions = join_genes([np.array(["a", "b", "c"]), np.array(["c", "d", "a"])], "outer")
    assert list(genes) == ["a", "b", "c", "d"] and positions.tolist() == [[0, 1, 2, -1], [2, -1, 0, 1]]
    stacked = gather([np.array([[1.0, 2.0, 3.0]]), np.array([[4.0, 5.0, 6.0]])], positions)
    assert stacked.shape == (2, 1, 4)
    np.testing.assert_array_equal(stacked[0, 0], [1.0, 2.0, 3.0, np.nan])
    np.testing.assert_array_equal(stacked[1, 0], [6.0, np.nan, 4.0, 5.0])


def test_study_seeds_are_distinct_and_the_first_is_the_run_seed() -> None:
    seeds = [study_seed(7, s) for s in range(50)]
    assert seeds[0] == 7 and len(set(seeds)) == 50 and all(0 <= s < 2**64 for s in seeds)


def test_one_study_meta_equals_the_single_study_run() -> None:
    study = _study(np.random.default_rng(4), shift=1.5, shifted=range(5))
    single_kwargs = {k: v for k, v in study.items()}
    for method, metric in (("stouffer", "welch_t"), ("fixed", "hedges_g"), ("random", "hedges_g")):
        # Exact enumeration would score each labelling once; the meta-analysis always draws.
        alone = permenrich.genes(**single_kwargs, metric=metric, permutations=300, seed=11, threads=1)
        combined = permenrich.meta([study], method=method, permutations=300, seed=11, threads=1)
        alone, combined = alone.set_index("gene"), combined.set_index("gene").loc[alone.gene]
        assert np.array_equal(combined.pval.to_numpy(), alone.pval.to_numpy())
        assert np.array_equal(combined.pval_maxt.to_numpy(), alone.pval_maxt.to_numpy())
        assert np.array_equal(combined["statistic_study1"].to_numpy(), alone.statistic.to_numpy())
        if method == "stouffer":
            assert np.array_equal(combined.statistic.to_numpy(), alone.statistic.to_numpy())


@pytest.mark.parametrize("metric", ["mann_whitney", "ratio_of_classes"])
def test_one_study_meta_with_a_statistic_not_centred_at_zero(metric) -> None:
    """Mann-Whitney's U (no effect: n_A n_B / 2) and ratio_of_classes (no effect: 1)
    enter the combination centred, U also over its null sd: a one-study meta-analysis
    gives the single-study p-values exactly, a strongly down-regulated gene included
    (tested against 0 instead, it got p = 1), and its statistic is SciPy's U standardised."""
    from scipy.stats import mannwhitneyu

    study = _study(np.random.default_rng(21), n_genes=20, n_case=6, n_control=6, modules=False)
    study["expr"] = study["expr"] + 10.0  # positive values for the ratio
    study["expr"].iloc[0, :6] -= 3.0  # gene g0 strongly down in the cases
    # fewer permutations than the 924 labellings: the single study draws too, as the meta-analysis does
    alone = permenrich.genes(**study, metric=metric, permutations=800, seed=1, threads=1).set_index("gene")
    combined = permenrich.meta([study], metric=metric, permutations=800, seed=1, threads=1)
    combined = combined.set_index("gene").loc[alone.index]
    assert np.array_equal(combined.pval.to_numpy(), alone.pval.to_numpy())
    assert np.array_equal(combined.pval_maxt.to_numpy(), alone.pval_maxt.to_numpy())
    assert combined.loc["g0", "pval"] < 0.05 and combined.loc["g0", "statistic"] < 0
    if metric == "mann_whitney":
        values = study["expr"].to_numpy()
        u = mannwhitneyu(values[:, :6], values[:, 6:], axis=1).statistic
        expected = (u - 18.0) / np.sqrt(36 * 13 / 12)
        assert combined.statistic.to_numpy() == pytest.approx(expected[[int(g[1:]) for g in alone.index]],
                                                              rel=1e-12, abs=1e-12)
    else:
        assert np.array_equal(combined.statistic.to_numpy(), alone.statistic.to_numpy() - 1.0)
    down = {"DOWN": [f"g{i}" for i in range(8)], "REST": [f"g{i}" for i in range(8, 20)]}
    study["expr"].iloc[1:8, :6] -= 3.0
    # direction both: the most extreme genes either way, measured from the no-effect value
    ora = permenrich.meta([study], down, mode="ora", top=8, direction="both", metric=metric, permutations=500,
                          seed=2, threads=1, min_size=5).set_index("gene_set")
    assert ora.loc["DOWN", "overlap"] >= 7 and ora.loc["DOWN", "pval_perm"] < 0.1


def test_studies_with_covariates_combine_their_freedman_lane_t() -> None:
    """A study may adjust for covariates (the manifest's covariates column): its
    statistic is the Freedman-Lane t, and a one-study meta-analysis equals genes() with
    the same covariates exactly; other metrics are refused with covariates, naming the
    study. (Such studies were refused as if case and control were missing.)"""
    rng = np.random.default_rng(31)
    study = _study(rng, n_genes=40, n_case=7, n_control=7, shift=1.5, shifted=range(4))
    sheet = pd.DataFrame({"group": study["phenotype"], "age": rng.normal(50, 10, 14)},
                         index=study["expr"].columns)
    study = {**study, "phenotype": sheet, "groupby": "group", "covariates": ["age"]}
    combined = permenrich.meta([study], metric="student_t", permutations=300, seed=3, threads=1).set_index("gene")
    alone = permenrich.genes(study["expr"], sheet, groupby="group", case="case", control="ctrl", covariates=["age"],
                             metric="student_t", permutations=300, seed=3, threads=1).set_index("gene")
    alone = alone.loc[combined.index]
    for column in ("statistic", "pval", "pval_maxt"):
        assert np.array_equal(combined[column].to_numpy(), alone[column].to_numpy()), column
    assert combined.attrs["run"]["studies"][0]["n_case"] == 7
    with pytest.raises(OptionError, match=r"study 'study1': covariates make its statistic the t .* not 'welch_t'"):
        permenrich.meta([study], permutations=20)


def test_small_study_draws_random_labellings_not_the_enumeration() -> None:
    study = _study(np.random.default_rng(5), n_case=3, n_control=3)  # 20 distinct labellings
    result = permenrich.meta([study, study | {"name": "again"}], permutations=100, seed=1, threads=1)
    plans = [s["permutation_plan"] for s in result.attrs["run"]["studies"]]
    assert [p["exact_enumeration"] for p in plans] == [False, False]
    assert [p["permutations"] for p in plans] == [100, 100]
    assert plans[0]["seed"] != plans[1]["seed"]


def test_platforms_with_different_genes_are_joined() -> None:
    rng = np.random.default_rng(6)
    first = _study(rng, n_genes=30)
    second = _study(rng, n_genes=30)
    second["expr"] = second["expr"].iloc[10:]  # measures g10..g29 only
    inner = permenrich.meta([first, second], permutations=50, threads=1)
    outer = permenrich.meta([first, second], join="outer", permutations=50, threads=1)
    assert sorted(inner.gene) == sorted(f"g{i}" for i in range(10, 30))
    assert (inner.n_studies == 2).all()
    assert len(outer) == 30
    counts = outer.set_index("gene").n_studies
    assert (counts.loc[[f"g{i}" for i in range(10)]] == 1).all() and (counts.loc["g15"] == 2)
    alone = outer.set_index("gene").loc["g3"]
    assert alone.statistic == alone.statistic_study1 and np.isnan(alone.statistic_study2)
    # The inner join's loss of a third of study 1's genes is said (and --join outer offered).
    assert ("study 'study1': 10 of its 30 genes (33%) are not measured by every study and are left out; "
            "join='outer' keeps them (combined over the studies that measure them)") in inner.attrs["run"]["warnings"]
    assert not any("not measured by every study" in w for w in outer.attrs["run"]["warnings"])
    # The combined statistic of a shared gene is Stouffer's sum of the two studies' Welch t.
    row = inner.set_index("gene").loc["g15"]
    w = np.sqrt([13.0, 13.0])
    assert row.statistic == pytest.approx((w[0] * row.statistic_study1 + w[1] * row.statistic_study2)
                                          / np.sqrt((w ** 2).sum()), rel=1e-12)


def test_refusals_are_one_line_and_name_the_study() -> None:
    rng = np.random.default_rng(7)
    ok = _study(rng)
    lonely = _study(rng, prefix="x")
    with pytest.raises(InputError, match=r"share no gene"):
        permenrich.meta([ok, lonely], permutations=20, threads=1)
    with pytest.raises(InputError, match=r"^study 'tiny': .*class 'case' has 1 sample"):
        tiny = _study(rng, n_case=1, n_control=5) | {"name": "tiny"}
        permenrich.meta([ok, tiny], permutations=20, threads=1)
    with pytest.raises(OptionError, match=r"combines Hedges' g"):
        permenrich.meta([ok], method="fixed", metric="welch_t", permutations=20)
    with pytest.raises(OptionError, match=r"^study 'study1': unknown key 'exprs'"):
        permenrich.meta([{"exprs": ok["expr"]}], permutations=20)
    with pytest.raises(OptionError, match=r"method"):
        permenrich.meta([ok], method="bayes", permutations=20)


def test_calibration_null_studies_and_a_shift_in_one_study() -> None:
    rng = np.random.default_rng(2026)
    first_p = []
    for _ in range(60):
        studies = [_study(rng, n_genes=20) for _ in range(3)]
        result = permenrich.meta(studies, permutations=99, seed=int(rng.integers(1 << 31)), threads=1)
        first_p.append(result.set_index("gene").pval.loc["g0"])
    assert sps.kstest(first_p, "uniform").pvalue > 0.01
    # A gene shifted in one of three studies: Stouffer detects it, random effects sees heterogeneity.
    studies = [_study(rng, n_genes=20, n_case=12, n_control=12, shift=3.0 if s == 0 else 0.0, shifted=[0],
                      modules=False) for s in range(3)]
    stouffer = permenrich.meta(studies, permutations=999, threads=1).set_index("gene")
    random = permenrich.meta(studies, method="random", permutations=999, threads=1).set_index("gene")
    assert stouffer.pval.loc["g0"] < 0.01
    assert random.i2.loc["g0"] > 0.75 and random.tau2.loc["g0"] > 0.5
    assert random.i2.drop("g0").median() < 0.3


def test_batch_size_and_threads_change_nothing() -> None:
    rng = np.random.default_rng(8)
    studies = [_study(rng), _study(rng, n_case=5, n_control=9)]
    tables = [permenrich.meta(studies, method="random", permutations=301, seed=3, batch_size=size, threads=threads)
              for size, threads in ((7, 1), (64, 2), (301, 1))]
    text = [t.to_csv(sep="\t", index=False) for t in tables]
    assert text[0] == text[1] == text[2]


def _write_study_files(folder, study, name):
    """A study as a TSV expression matrix and a CLS file."""
    folder.mkdir(parents=True, exist_ok=True)
    study["expr"].rename_axis("gene").to_csv(folder / f"{name}.tsv", sep="\t", float_format="%.17g")
    labels = study["phenotype"]
    (folder / f"{name}.cls").write_text(f"{len(labels)} 2 1\n# case ctrl\n{' '.join(labels)}\n")


def test_cli_manifest_run_equals_the_api_and_bad_manifests_are_one_line(tmp_path, capsys) -> None:
    from permenrich.cli import main

    rng = np.random.default_rng(9)
    studies = [_study(rng, shift=1.2, shifted=range(4)), _study(rng, n_case=8, n_control=6)]
    _write_study_files(tmp_path / "data", studies[0], "gpl571")
    _write_study_files(tmp_path / "data", studies[1], "gpl10558")
    manifest = tmp_path / "studies.tsv"
    manifest.write_text("study\texpr\tphenotype\tcase\tcontrol\n"
                        "gpl571\tdata/gpl571.tsv\tdata/gpl571.cls\tcase\tctrl\n"
                        "gpl10558\tdata/gpl10558.tsv\tdata/gpl10558.cls\tcase\tctrl\n")
    assert main(["meta", "--manifest", str(manifest), "--method", "random", "--permutations", "200",
                 "--threads", "1", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    written = pd.read_csv(tmp_path / "out" / "results.tsv", sep="\t")
    assert list(written.columns[:3]) == ["gene", "statistic", "n_studies"]
    assert {"statistic_gpl571", "statistic_gpl10558", "tau2", "i2"} <= set(written.columns)
    direct = permenrich.meta(str(manifest), method="random", permutations=200, threads=1)
    permenrich.write_results(direct, tmp_path / "direct")
    assert (tmp_path / "out" / "results.tsv").read_text() == (tmp_path / "direct" / "results.tsv").read_text()
    (tmp_path / "sets.gmt").write_text("UP\tplanted\t" + "\t".join(f"g{i}" for i in range(12)) + "\n"
                                       "NOISE\tnone\t" + "\t".join(f"g{i}" for i in range(12, 26)) + "\n")
    assert main(["meta", "--manifest", str(manifest), "--mode", "gsea", "--gene-sets", str(tmp_path / "sets.gmt"),
                 "--leave-one-out", "--min-size", "5", "--permutations", "200", "--threads", "1",
                 "--out", str(tmp_path / "gsea"),
                 "--quiet"]) == 0
    sets_table = pd.read_csv(tmp_path / "gsea" / "results.tsv", sep="\t")
    assert sorted(sets_table.gene_set) == ["NOISE", "UP"]
    assert {"es_gpl571", "es_gpl10558", "nes", "fdr", "nes_without_gpl571", "fdr_without_gpl10558"} <= set(
        sets_table.columns)
    capsys.readouterr()

    bad = {
        "unknown column": ("study\texpr\tcolour\nx\tdata/gpl571.tsv\tred\n",
                           r"studies.tsv: line 1: unknown column 'colour'"),
        "empty expr": ("study\texpr\nx\t\n", r"studies.tsv: line 2: the 'expr' cell is empty"),
        # the file's own line numbers, past comment and blank lines
        "commented header": ("# our studies\n\nstudyy\texpr\nx\ty\n", r"studies.tsv: line 3: unknown column 'studyy'"),
        "commented row": ("study\texpr\n# first\nx\tdata/gpl571.tsv\n\ny\t\n",
                          r"studies.tsv: line 5: the 'expr' cell is empty"),
        "study twice": ("study\texpr\nx\tdata/gpl571.tsv\nx\tdata/gpl10558.tsv\n",
                        r"studies.tsv: line 3: study 'x' is listed twice \(also line 2\)"),
        "missing file": ("study\texpr\tphenotype\tcase\tcontrol\nx\tdata/none.tsv\tdata/gpl571.cls\tcase\tctrl\n",
                         r"studies.tsv: line 2: study 'x': .*none.tsv"),
        # a study's options are its row's cells, not flags 'meta' does not have
        "wrong level": ("study\texpr\tphenotype\tcase\tcontrol\n# x\nx\tdata/gpl571.tsv\tdata/gpl571.cls\tcase\tC\n",
                        r"studies.tsv: line 3: study 'x': .*gpl571.cls: control 'C' is not a class"),
        "bad policy": ("study\texpr\tphenotype\tcase\tcontrol\tnan_policy\n"
                       "x\tdata/gpl571.tsv\tdata/gpl571.cls\tcase\tctrl\tfoo\n",
                       r"studies.tsv: line 2: study 'x': 'nan_policy' must be one of error, drop, got 'foo'$"),
    }
    for label, (text, pattern) in bad.items():
        manifest.write_text(text)
        status = main(["meta", "--manifest", str(manifest), "--permutations", "20", "--out", str(tmp_path / label)])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1, (label, err)
        assert re.search(pattern, err[0]), (label, err[0])
        assert not (tmp_path / label).exists()


def test_missing_values_policy_for_every_study_or_per_manifest_row(tmp_path, capsys) -> None:
    """A GEO series with null cells is routine: meta takes nan_policy for every study, a
    manifest row may set its own, and a '#' inside a cell is part of the cell (only a line
    starting with '#' is a comment)."""
    from permenrich.cli import main

    rng = np.random.default_rng(11)
    studies = [_study(rng), _study(rng, n_case=7, n_control=6)]
    studies[1]["expr"].iloc[3, 2] = np.nan
    _write_study_files(tmp_path / "data", studies[0], "a")
    _write_study_files(tmp_path / "data", studies[1], "b")
    with pytest.raises(InputError, match=r"^study 'study2': .*nan_policy='drop'"):
        permenrich.meta(studies, permutations=20, threads=1)
    dropped = permenrich.meta(studies, nan_policy="drop", permutations=100, threads=1)
    assert "g3" not in set(dropped.gene) and len(dropped) == 29
    manifest = tmp_path / "studies.tsv"
    rows = "a\tdata/a.tsv\tdata/a.cls\tcase\tctrl\t\nb\tdata/b.tsv\tdata/b.cls\tcase\tctrl\tdrop\n"
    manifest.write_text("# studies of the #1 cohort\nstudy\texpr\tphenotype\tcase\tcontrol\tnan_policy\n" + rows)
    assert main(["meta", "--manifest", str(manifest), "--permutations", "100", "--threads", "1",
                 "--out", str(tmp_path / "row"), "--quiet"]) == 0
    manifest.write_text("study\texpr\tphenotype\tcase\tcontrol\n" + rows.replace("\t\n", "\n").replace("\tdrop", ""))
    assert main(["meta", "--manifest", str(manifest), "--nan-policy", "drop", "--permutations", "100",
                 "--threads", "1", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    written = [(tmp_path / out / "results.tsv").read_text() for out in ("row", "cli")]
    direct = tmp_path / "direct"
    permenrich.write_results(dropped.rename(columns={"statistic_study1": "statistic_a",
                                                     "statistic_study2": "statistic_b"}), direct)
    assert written[0] == written[1] == (direct / "results.tsv").read_text()
    capsys.readouterr()
    # '#' inside a cell: a class 'case#2' that does not exist, not 'case' with the rest of the row cut off
    manifest.write_text("study\texpr\tphenotype\tcase\tcontrol\na\tdata/a.tsv\tdata/a.cls\tcase#2\tctrl\n")
    assert main(["meta", "--manifest", str(manifest), "--permutations", "20", "--out", str(tmp_path / "hash")]) == 2
    assert "studies.tsv: line 2: study 'a': " in (err := capsys.readouterr().err) and "case 'case#2' is not a class" in err


def _sets(genes):
    return {"PLANTED": list(genes[:15]), "OTHER": list(genes[15:40]), "REST": list(genes[40:70])}


def test_one_study_gsea_meta_equals_the_single_study_gsea() -> None:
    study = _study(np.random.default_rng(10), n_genes=80, shift=1.0, shifted=range(15))
    sets = _sets(study["expr"].index)
    alone = permenrich.gsea(study["expr"], study["phenotype"], sets, case="case", control="ctrl", metric="welch_t",
                            permutations=300, seed=5, threads=1, min_size=10)
    combined = permenrich.meta([study], sets, mode="gsea", permutations=300, seed=5, threads=1, min_size=10)
    for column in ("gene_set", "es", "nes", "pval", "fdr", "fwer", "leading_edge"):
        assert combined[column].tolist() == alone[column].tolist(), column
    assert combined.es_study1.tolist() == alone.es.tolist()


def test_gsea_meta_finds_a_set_weak_in_each_study_and_reports_each_study() -> None:
    rng = np.random.default_rng(11)
    studies = [_study(rng, n_genes=80, shift=0.5, shifted=range(15)) for _ in range(3)]
    sets = _sets(studies[0]["expr"].index)
    singles = [permenrich.gsea(s["expr"], s["phenotype"], sets, case="case", control="ctrl", metric="welch_t",
                               permutations=500, seed=1, threads=1, min_size=10).set_index("gene_set")
               for s in studies]
    meta = permenrich.meta(studies, sets, mode="gsea", permutations=500, seed=1, threads=1,
                           min_size=10).set_index("gene_set")
    assert meta.pval.loc["PLANTED"] < min(single.pval.loc["PLANTED"] for single in singles)
    assert meta.pval.loc["PLANTED"] <= 0.01
    for i, single in enumerate(singles):  # each study's ES, from its own statistic
        assert meta.loc["PLANTED", f"es_study{i + 1}"] == single.es.loc["PLANTED"]
    assert meta.attrs["run"]["parameters"]["mode"] == "gsea"
    with pytest.raises(OptionError, match="needs gene sets"):
        permenrich.meta(studies, mode="gsea", permutations=20)


def test_leave_one_out_keeps_the_main_result_and_shows_the_driving_study() -> None:
    rng = np.random.default_rng(12)
    studies = [_study(rng, n_genes=80, n_case=10, n_control=10, shift=2.0 if s == 0 else 0.0, shifted=range(15))
               for s in range(3)]
    sets = _sets(studies[0]["expr"].index)
    kwargs = dict(mode="gsea", permutations=400, seed=2, threads=1, min_size=10)
    plain = permenrich.meta(studies, sets, **kwargs)
    loo = permenrich.meta(studies, sets, leave_one_out=True, **kwargs)
    assert loo[plain.columns].to_csv() == plain.to_csv()  # the extra parts change nothing
    planted = loo.set_index("gene_set").loc["PLANTED"]
    assert planted.pval_without_study1 > 0.05 > max(planted.pval_without_study2, planted.pval_without_study3)
    assert abs(planted.nes_without_study1) < abs(planted.nes_without_study2)

    genes_loo = permenrich.meta(studies, leave_one_out=True, permutations=200, threads=1).set_index("gene")
    pair = permenrich.meta(studies[1:], permutations=200, threads=1).set_index("gene")
    # Without study 1, the combined statistic is the meta-analysis of studies 2 and 3.
    assert np.array_equal(genes_loo.statistic_without_study1.loc[pair.index].to_numpy(), pair.statistic.to_numpy())
    with pytest.raises(OptionError, match="at least two studies"):
        permenrich.meta(studies[:1], leave_one_out=True, permutations=20)


def test_leave_one_out_leaves_genes_only_the_left_out_study_measures_empty() -> None:
    """Outer join: a gene only study 1 measures was reported as statistic 0, p = 1 without
    study 1; it has no statistic there."""
    rng = np.random.default_rng(13)
    studies = [_study(rng, n_genes=40, n_case=8, n_control=8, shift=2.0, shifted=range(4)) for _ in range(2)]
    studies[1]["expr"] = studies[1]["expr"].iloc[4:]  # g0-g3 measured by study 1 only
    table = permenrich.meta(studies, join="outer", leave_one_out=True, permutations=100, threads=1).set_index("gene")
    only_first = [f"g{i}" for i in range(4)]
    assert table.loc[only_first, ["statistic_without_study1", "pval_without_study1"]].isna().all().all()
    assert table.loc[only_first, "statistic_without_study2"].notna().all()
    assert table.drop(index=only_first)[["statistic_without_study1", "pval_without_study1"]].notna().all().all()


def test_simulated_three_study_demo_finds_jak_stat_only_in_the_combination(tmp_path, capsys) -> None:
    from permenrich.demo_meta import make_meta_studies, run_meta_demo

    table = run_meta_demo(tmp_path / "out", permutations=1000, threads=1, data_dir=tmp_path)
    jak = table[~table.gene_set.str.startswith("SIM_")].set_index("gene_set")
    studies = ["GSE_ARRAY_A", "GSE_ARRAY_B", "GSE_RNASEQ"]
    assert (jak.fdr < 0.05).sum() >= 3  # clear in the combination
    for study in studies:  # weak in each study alone
        assert (jak[f"fdr_{study}"] < 0.05).sum() == 0
    assert jak.loc["IFN_GAMMA_JAKSTAT", "nes"] > 0
    manifest = pd.read_csv(tmp_path / "meta_12000" / "studies.tsv", sep="\t", comment="#")
    assert manifest.study.tolist() == studies and manifest.normalize.fillna("").tolist() == ["", "", "log1p_cpm"]
    assert table.attrs["run"]["demo"]["simulated"] is True
    make_meta_studies(tmp_path / "again")  # deterministic: the same files again
    for name in ("studies.tsv", "GSE_ARRAY_B.gct", "GSE_RNASEQ_counts.tsv"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "meta_12000" / name).read_bytes()
    capsys.readouterr()


def test_a_streamed_study_gives_the_in_memory_answer(tmp_path) -> None:
    """A 10x file over half of the memory budget is streamed from disk in its study."""
    from test_gpu import _tiny_hdf5

    path, labels = _tiny_hdf5(tmp_path / "filtered_feature_bc_matrix.h5", "10x", n_cells=10, n_genes=8200)
    other = _study(np.random.default_rng(13), n_genes=8200, n_case=5, n_control=5)
    studies = [{"expr": str(path), "phenotype": labels, "case": "a", "control": "b"}, other]
    kwargs = dict(permutations=20, seed=4, threads=1, device="cpu", method="random")
    streamed = permenrich.meta(studies, memory="1MB", **kwargs)
    in_memory = permenrich.meta(studies, memory="1GB", **kwargs)
    records = streamed.attrs["run"]["studies"]
    assert records[0]["design"]["matrix_storage"] == "streamed from disk"
    assert in_memory.attrs["run"]["studies"][0]["design"]["matrix_storage"] != "streamed from disk"
    assert streamed.to_csv() == in_memory.to_csv()


def test_one_study_ora_meta_equals_the_expression_mode_ora() -> None:
    study = _study(np.random.default_rng(14), n_genes=80, shift=1.5, shifted=range(12))
    sets = _sets(study["expr"].index)
    alone = permenrich.ora(None, sets, expr=study["expr"], phenotype=study["phenotype"], case="case",
                           control="ctrl", metric="welch_t", top=15, direction="up", permutations=300, seed=6,
                           threads=1, min_size=10)
    combined = permenrich.meta([study], sets, mode="ora", top=15, direction="up", permutations=300, seed=6,
                               threads=1, min_size=10)
    assert combined.to_csv() == alone.to_csv()
    assert combined.set_index("gene_set").pval_perm.loc["PLANTED"] < 0.01
    with pytest.raises(OptionError, match=r"give the number of genes, e.g. top=100"):
        permenrich.meta([study], sets, mode="ora", permutations=20)
    with pytest.raises(OptionError, match=r"not ora"):
        permenrich.meta([study, study | {"name": "b"}], sets, mode="ora", top=5, leave_one_out=True, permutations=20)
    with pytest.raises(OptionError, match=r"mode= must be one of gsea, genes"):
        permenrich.contrasts(study["expr"], pd.DataFrame({"name": ["x"], "groupby": ["g"], "case": ["a"],
                                                          "control": ["b"]}), sets, mode="ora")
