"""End-to-end phenotype-permutation GSEA: independent references, reproducibility,
exact enumeration against brute force."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.api import RESULT_COLUMNS
from permenrich.enrich.running_sum import running_sum_dense
from permenrich.stats.metrics import metric_reference
from _tables import assert_identical


@pytest.fixture(scope="module")
def leukemia(shared_data):
    base = shared_data / "leukemia"
    table = pd.read_csv(base / "Leukemia_hgu95av2.trim.txt", sep="\t").drop(columns="NAME")
    expr = table.groupby("Gene").mean()
    gmts = [shared_data / "genesets" / "h.all.v7.0.symbols.gmt",
            shared_data / "genesets" / "c2.cp.kegg.v7.5.1.symbols.gmt"]
    return expr, base / "Leukemia.cls", gmts


def _read_gmts(paths):
    sets = {}
    for path in paths:
        for line in open(path):
            fields = line.rstrip("\n").split("\t")
            sets[fields[0]] = fields[2:]
    return sets


def _literal_es(expr, is_case, genes_of_set, metric="signal_to_noise", weight=1.0):
    """GSEA's definition transcribed literally: metric, stable ranking, dense walk, first
    position of max |RES| (magnitudes within 1e-12 count as equal, as documented)."""
    stat = metric_reference(expr.to_numpy(float), is_case, metric)
    order = np.lexsort((np.arange(stat.size), -stat))
    ranked_genes = expr.index.to_numpy()[order]
    ranked_stat = stat[order]
    out = {}
    for name, genes in genes_of_set.items():
        in_set = np.isin(ranked_genes, genes)
        curve = running_sum_dense(in_set, ranked_stat, weight)
        magnitude = np.abs(curve)
        out[name] = curve[np.flatnonzero(magnitude >= magnitude.max() - 1e-12)[0]]
    return out


@pytest.mark.parametrize("weight", [1.0, 0.0, 2.0])
def test_es_of_every_hallmark_and_kegg_set_matches_literal_definition(leukemia, weight):
    expr, cls, gmts = leukemia
    result = permenrich.gsea(expr, cls, gmts, permutations=20, seed=0, weight=weight, threads=2)
    is_case = np.array([c.startswith("ALL") for c in expr.columns])
    sets = _read_gmts(gmts)
    reference = _literal_es(expr, is_case, {n: sets[n] for n in result.gene_set}, weight=weight)
    assert len(result) == 205
    for row in result.itertuples():
        assert row.es == pytest.approx(reference[row.gene_set], abs=1e-6), row.gene_set


def test_against_gseapy_es_nes_and_p(leukemia):
    gseapy = pytest.importorskip("gseapy", reason="gseapy is the independent reference: pip install gseapy")
    expr, cls, gmts = leukemia
    n_perm = 1000
    theirs = gseapy.gsea(data=expr, gene_sets=_read_gmts(gmts), cls=str(cls), permutation_type="phenotype",
                         permutation_num=n_perm, method="signal_to_noise", threads=2, seed=0, outdir=None,
                         no_plot=True, min_size=15, max_size=500).res2d.set_index("Term")
    ours = permenrich.gsea(expr, cls, gmts, permutations=n_perm, seed=0, threads=2).set_index("gene_set")
    joined = ours.join(theirs, how="inner")
    assert len(joined) == len(ours) == 205
    np.testing.assert_allclose(joined.es, joined.ES.astype(float), atol=1e-6)
    # NES: ratio of observed ES to a null mean estimated from ~n_perm/2 same-signed
    # scores in each tool; relative Monte Carlo error ~2%, allow 10%.
    np.testing.assert_allclose(joined.nes, joined.NES.astype(float), rtol=0.10)
    p_theirs = joined["NOM p-val"].astype(float).to_numpy()
    p = joined.pval.to_numpy()
    m = n_perm / 2
    bound = 5 * np.sqrt(2 * np.clip(p, 0.01, 1) * (1 - np.clip(p, 0, 0.99)) / m) + 2 / m
    assert (np.abs(p - p_theirs) <= bound).all()
    assert np.corrcoef(joined.fdr, joined["FDR q-val"].astype(float))[0, 1] > 0.8


def test_result_columns_order_and_leading_edge(leukemia):
    expr, cls, gmts = leukemia
    result = permenrich.gsea(expr, cls, gmts, permutations=50, seed=3, threads=1)
    assert list(result.columns) == RESULT_COLUMNS
    key = list(zip(result.fdr, -result.nes.abs()))  # FDR first, then strength
    assert key == sorted(key)
    row = result.iloc[0]
    leading = row.leading_edge.split(",")
    assert 0 < len(leading) <= row["size"]
    assert row.tags_pct == pytest.approx(100 * len(leading) / row["size"])
    assert ((result.pval > 0) & (result.pval <= 1)).all()
    run = result.attrs["run"]
    assert run["permutation_plan"]["permutations"] == 50 and not run["permutation_plan"]["exact_enumeration"]


def test_same_seed_different_batch_sizes_and_two_pass_identical(leukemia):
    expr, cls, gmts = leukemia
    kwargs = dict(permutations=400, seed=12345, threads=2)
    a = permenrich.gsea(expr, cls, gmts, batch_size=400, **kwargs)
    b = permenrich.gsea(expr, cls, gmts, batch_size=7, **kwargs)
    # A budget too small to cache the whole null forces the second pass to regenerate part
    # of it: the budget less the matrix and a batch of 64 holds 304 permutations of the 205
    # sets' scores, so 4 whole batches (256) are kept and the other 144 scored again.
    plan = a.attrs["run"]["memory_plan"]
    batch_64 = plan["batch_bytes"] // 400 * 64
    budget = plan["matrix_bytes"] + batch_64 + 304 * 8 * len(a)
    c = permenrich.gsea(expr, cls, gmts, batch_size=64, memory=budget, threads=1, permutations=400, seed=12345)
    assert c.attrs["run"]["memory_plan"] == {"budget_bytes": budget, "matrix_bytes": plan["matrix_bytes"],
                                             "batch_bytes": batch_64, "null_cache_bytes": 304 * 8 * len(a)}
    assert c.attrs["run"]["null_storage"].startswith("recomputed") and "up to 304 " in c.attrs["run"]["null_storage"]
    assert c.attrs["run"]["timings"]["permutations_scored"] == 400 + 144
    e = permenrich.gsea(expr, cls, gmts, batch_size=400, memory="1MB", threads=1, permutations=400, seed=12345)
    assert e.attrs["run"]["timings"]["permutations_scored"] == 800  # the budget leaves no room: nothing kept
    assert a.attrs["run"]["null_storage"].startswith("cached")
    assert_identical(a, e)
    assert_identical(a, b)
    assert_identical(a, c)
    d = permenrich.gsea(expr, cls, gmts, permutations=400, seed=12346, threads=2)
    assert not np.array_equal(a.sort_values("gene_set").pval, d.sort_values("gene_set").pval)


def _brute_force(values, is_case, sets, metric, weight):
    """Every labelling scored with the literal definitions, then GSEA's formulas."""
    n = is_case.size
    n_case = int(is_case.sum())
    genes = pd.Index([f"g{i}" for i in range(values.shape[0])])
    expr = pd.DataFrame(values, index=genes)
    observed = _literal_es(expr, is_case, sets, metric, weight)
    names = list(sets)
    es = np.array([observed[s] for s in names])
    null = []
    for case_positions in combinations(range(n), n_case):
        labels = np.zeros(n, dtype=bool)
        labels[list(case_positions)] = True
        scores = _literal_es(expr, labels, sets, metric, weight)
        null.append([scores[s] for s in names])
    null = np.array(null)
    pos_mean = np.array([null[null[:, j] >= 0, j].mean() for j in range(len(names))])
    neg_mean = np.array([-null[null[:, j] < 0, j].mean() for j in range(len(names))])
    nes = np.where(es >= 0, es / pos_mean, es / neg_mean)
    tol = 1e-12  # scores within this are ties, and ties count as exceedances (documented)
    pval = np.where(es >= 0, (null >= es - tol).sum(0) / (null >= 0).sum(0),
                    (null <= es + tol).sum(0) / (null < 0).sum(0))
    null_nes = np.where(null >= 0, null / pos_mean, null / neg_mean)
    fdr, fwer = [], []
    for v in nes:
        if v >= 0:
            frac_null = (null_nes >= v - tol).sum() / (null_nes >= 0).sum()
            frac_obs = (nes >= v - tol).sum() / (nes >= 0).sum()
            fwer.append((np.where(null_nes >= 0, null_nes, -np.inf).max(1) >= v - tol).mean())
        else:
            frac_null = (null_nes <= v + tol).sum() / (null_nes < 0).sum()
            frac_obs = (nes <= v + tol).sum() / (nes < 0).sum()
            fwer.append((np.where(null_nes < 0, null_nes, np.inf).min(1) <= v + tol).mean())
        fdr.append(min(1.0, frac_null / frac_obs))
    return pd.DataFrame({"es": es, "nes": nes, "pval": pval, "fdr": fdr, "fwer": fwer}, index=names)


@pytest.mark.parametrize("metric,weight", [("signal_to_noise", 1.0), ("t_test", 0.0), ("diff_of_classes", 2.0)])
def test_exact_enumeration_matches_brute_force(metric, weight):
    rng = np.random.default_rng(7)
    n_genes = 60
    values = rng.normal(size=(n_genes, 9)) + np.linspace(0, 1, 9)[None, :] * (np.arange(n_genes) < 10)[:, None]
    is_case = np.array([True] * 4 + [False] * 5)
    sets = {f"S{j}": [f"g{i}" for i in rng.choice(n_genes, size=k, replace=False)] for j, k in enumerate([5, 8, 12, 20, 30])}
    sets["PLANTED"] = [f"g{i}" for i in range(10)]
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(n_genes)], columns=[f"s{i}" for i in range(9)])
    result = permenrich.gsea(expr, ["A"] * 4 + ["B"] * 5, sets, case="A", control="B", metric=metric,
                             weight=weight, permutations=10000, min_size=1, threads=2)
    plan = result.attrs["run"]["permutation_plan"]
    assert plan["exact_enumeration"] and plan["permutations"] == 126
    expected = _brute_force(values, is_case, sets, metric, weight)
    got = result.set_index("gene_set").loc[expected.index]
    for column in ["es", "nes", "pval", "fdr", "fwer"]:
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-9, atol=1e-12, err_msg=column)


@pytest.mark.parametrize("set_statistic", ["ks", "mean"])
def test_mann_whitney_ranks_by_u_less_its_no_effect_value(set_statistic):
    """GSEA with Mann-Whitney's U ranks genes by U - n_A n_B / 2 (SciPy's U, centred),
    so a set of genes down in the cases scores as far below 0 as its mirror image above:
    raw U (never negative) would weigh the most down-regulated genes least."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(3)
    values = rng.normal(size=(200, 12))
    values[:15, :6] += 2.0
    values[15:30, :6] -= 2.0
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(200)])
    labels = ["case"] * 6 + ["ctrl"] * 6
    sets = {"UP": [f"g{i}" for i in range(15)], "DOWN": [f"g{i}" for i in range(15, 30)],
            "MIXED": [f"g{i}" for i in range(0, 60, 4)]}
    result = permenrich.gsea(expr, labels, sets, case="case", control="ctrl", metric="mann_whitney",
                             set_statistic=set_statistic, permutations=200, seed=0, threads=1, min_size=5)
    result = result.set_index("gene_set")
    centred = mannwhitneyu(values[:, :6], values[:, 6:], axis=1).statistic - 18.0
    order = np.lexsort((np.arange(200), -centred))
    for name, genes in sets.items():
        members = np.isin(expr.index.to_numpy()[order], genes)
        if set_statistic == "ks":
            curve = running_sum_dense(members, centred[order], 1.0)
            expected = curve[np.argmax(np.abs(curve) >= np.abs(curve).max() - 1e-12)]
        else:
            expected = centred[order][members].mean()
        assert result.loc[name, "es"] == pytest.approx(expected, abs=1e-9), name
    assert result.loc["DOWN", "es"] < 0 < result.loc["UP", "es"]
    assert result.loc["DOWN", "pval"] < 0.05 and result.loc["UP", "pval"] < 0.05


def test_continuous_phenotype_gsea_matches_literal_correlation_ranking():
    """GSEA with a correlation metric: ES from the Pearson ranking, by the literal definition."""
    rng = np.random.default_rng(8)
    n_genes, n_samples = 80, 14
    age = rng.uniform(20, 80, size=n_samples)
    values = rng.normal(size=(n_genes, n_samples))
    values[:12] += 0.05 * age
    genes = [f"g{i}" for i in range(n_genes)]
    expr = pd.DataFrame(values, index=genes, columns=[f"s{i}" for i in range(n_samples)])
    sheet = pd.DataFrame({"age": age}, index=expr.columns)
    sets = {"AGE_UP": genes[:12], "OTHER": genes[30:50]}
    result = permenrich.gsea(expr, sheet, sets, metric="pearson", phenotype_column="age", permutations=500,
                             seed=2, min_size=5, threads=1).set_index("gene_set")
    r = np.array([np.corrcoef(row, age)[0, 1] for row in values])
    order = np.lexsort((np.arange(n_genes), -r))
    for name, members in sets.items():
        in_set = np.isin(np.array(genes)[order], members)
        curve = running_sum_dense(in_set, r[order], 1.0)
        assert result.loc[name, "es"] == pytest.approx(curve[np.argmax(np.abs(curve))], abs=1e-9)
    assert result.loc["AGE_UP", "pval"] < 0.01 and result.loc["OTHER", "pval"] > 0.01
    assert result.attrs["run"]["permutation_plan"]["distinct_labellings"] == 87178291200  # 14!


def test_tail_counter_grid_counts_like_searchsorted():
    """The CPU tail counter finds each value's slot through a grid of cells; the counts
    must be exactly NumPy's searchsorted + bincount (the path the GPU takes): values on
    and a hair below thresholds, repeated thresholds, zeros, infinities, NaN."""
    from permenrich.nulls import TIE_TOLERANCE, _TailCounter

    rng = np.random.default_rng(3)
    for n_thresholds in (2, 7, 206, 4725):
        thresholds = np.sort(np.abs(rng.normal(1.0, 0.5, n_thresholds)))
        thresholds[: n_thresholds // 3] = np.round(thresholds[: n_thresholds // 3], 1)  # repeats
        values = np.abs(rng.normal(1.0, 0.7, 20_000))
        k = min(n_thresholds, 50)
        values[:k] = thresholds[:k] - TIE_TOLERANCE  # exactly on a (shifted) threshold
        values[k:2 * k] = np.nextafter(thresholds[:k] - TIE_TOLERANCE, -np.inf)  # a hair below
        values[-6:] = [np.inf, -np.inf, np.nan, 0.0, -0.0, thresholds[-1] * 10]
        by_grid = _TailCounter.create(thresholds, np)
        assert by_grid.grid is not None
        by_search = _TailCounter.create(thresholds, np)
        by_search.grid = None
        for part in np.array_split(values, 3):
            by_grid.add(part, np)
            by_search.add(part, np)
        assert np.array_equal(by_grid.histogram, by_search.histogram)
    assert _TailCounter.create(np.ones(5), np).grid is None  # no spread: NumPy's search
    assert _TailCounter.create(np.array([0.5, np.inf]), np).grid is None


@pytest.mark.parametrize("kwargs", [dict(metric="signal_to_noise"), dict(metric="pearson", phenotype_column="x"),
                                    dict(metric="student_t", covariates=["x"], set_statistic="mean")])
def test_a_finished_run_leaves_no_backend_behind(kwargs, monkeypatch):
    """No reference cycle holds a run's backend (and its copy of the matrix) after the run:
    it is freed when the run returns, without waiting for Python's cyclic collector (a
    one-vs-rest screen had kept every contrast's matrix copies alive)."""
    import gc
    import weakref

    from permenrich.backends.cpu import CpuBackend

    created = []
    original = CpuBackend.__init__

    def recording(self, *args, **kw):
        original(self, *args, **kw)
        created.append(weakref.ref(self))

    monkeypatch.setattr(CpuBackend, "__init__", recording)
    rng = np.random.default_rng(4)
    genes = [f"g{i}" for i in range(40)]
    expr = pd.DataFrame(rng.normal(size=(40, 10)), index=genes, columns=[f"s{i}" for i in range(10)])
    sheet = pd.DataFrame({"group": ["a"] * 5 + ["b"] * 5, "x": rng.normal(size=10)}, index=expr.columns)
    two_group = {} if "phenotype_column" in kwargs else dict(groupby="group")

    def run():
        permenrich.gsea(expr, sheet, {"S": genes[:10], "T": genes[10:25]}, permutations=20, min_size=5,
                        device="cpu", **two_group, **kwargs)

    run()  # compiles what is not cached yet (Numba's compiler keeps its arguments' types a while)
    created.clear()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        run()
        assert created and all(ref() is None for ref in created)
    finally:
        if was_enabled:
            gc.enable()
