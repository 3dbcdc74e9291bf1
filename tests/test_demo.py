"""Tests of the SIMULATED demo cohort, its gene sets, the summary and the end-to-end demo."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

anndata = pytest.importorskip("anndata", reason="the demo cohort is an h5ad file: pip install anndata")

from permenrich import demo  # noqa: E402
from permenrich.errors import OptionError, PermenrichError  # noqa: E402

SMALL_GENES = 3000


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> anndata.AnnData:
    path = demo.make_demo_cohort(tmp_path_factory.mktemp("cohort") / "demo_cohort.h5ad", n_genes=SMALL_GENES)
    return anndata.read_h5ad(path)


def _curated_sets() -> dict[str, list[str]]:
    return {name: genes for name, genes in demo.demo_gene_sets(0, n_genes=SMALL_GENES).items()}


def test_same_seed_same_matrix_and_other_seed_differs(tmp_path: Path) -> None:
    first = anndata.read_h5ad(demo.make_demo_cohort(tmp_path / "a.h5ad", n_genes=SMALL_GENES, seed=7))
    again = anndata.read_h5ad(demo.make_demo_cohort(tmp_path / "b.h5ad", n_genes=SMALL_GENES, seed=7))
    other = anndata.read_h5ad(demo.make_demo_cohort(tmp_path / "c.h5ad", n_genes=SMALL_GENES, seed=8))
    np.testing.assert_array_equal(first.X, again.X)
    assert list(first.var_names) == list(again.var_names)
    assert list(first.obs["group"]) == list(again.obs["group"])
    assert first.X.shape == other.X.shape
    assert not np.array_equal(first.X, other.X)


def test_shapes_groups_and_simulated_labels(small_cohort: anndata.AnnData) -> None:
    adata = small_cohort
    assert adata.shape == (133, SMALL_GENES)
    assert adata.X.dtype == np.float32
    counts = adata.obs["group"].value_counts()
    assert counts["VTE"] == 70 and counts["control"] == 63
    assert set(adata.obs["group"]) == {"VTE", "control"}
    assert adata.obs["donor"].is_unique and adata.var_names.is_unique
    assert bool(adata.uns["simulated"]) is True
    assert "SIMULATED" in adata.uns["description"]
    assert int(adata.uns["generator"]["n_genes"]) == SMALL_GENES
    # Log2-scale values, lower-expressed genes noisier (the mean-variance trend).
    means, sds = adata.X.mean(axis=0), adata.X.std(axis=0)
    assert 0 < np.median(means) < 12
    assert np.corrcoef(means, sds)[0, 1] < -0.5


def test_every_curated_gene_is_a_column(small_cohort: anndata.AnnData) -> None:
    genes = {g for genes in _curated_sets().values() for g in genes}
    assert len(genes) > 200
    assert genes <= set(small_cohort.var_names)
    assert set(small_cohort.var_names[small_cohort.var["jak_stat"].to_numpy()]) == genes
    synthetic = [g for g in small_cohort.var_names if g not in genes]
    assert all(g.startswith("SIMG") for g in synthetic)


def test_planted_shift_is_visible(small_cohort: anndata.AnnData) -> None:
    adata = small_cohort
    x = np.asarray(adata.X, dtype=np.float64)
    case = (adata.obs["group"] == "VTE").to_numpy()
    effect = (x[case].mean(axis=0) - x[~case].mean(axis=0)) / x.std(axis=0, ddof=1)
    jak_stat = adata.var["jak_stat"].to_numpy()
    truth = adata.var["sim_shift_sd"].to_numpy()
    assert effect[jak_stat].mean() > effect[~jak_stat].mean() + 0.04
    # Shifted genes move in the planted direction; the planted size is modest.
    shifted = truth != 0
    assert np.corrcoef(effect[shifted], truth[shifted])[0, 1] > 0.3
    assert np.abs(truth[jak_stat]).max() <= 0.4 + 1e-6
    assert 0.3 < shifted[jak_stat].mean() < 0.9


def test_module_correlation_present(small_cohort: anndata.AnnData) -> None:
    adata = small_cohort
    x = np.asarray(adata.X, dtype=np.float64)
    module = adata.var["sim_module"].to_numpy()
    background = np.unique(module[~adata.var["jak_stat"].to_numpy() & (module >= 0)])
    assert background.size >= 10
    within = []
    for m in background:
        members = np.flatnonzero(module == m)[:40]
        corr = np.corrcoef(x[:, members].T)
        within.append(corr[np.triu_indices(members.size, 1)].mean())
    rng = np.random.default_rng(0)
    sample = rng.choice(np.flatnonzero(module >= 0), size=400, replace=False)
    corr = np.corrcoef(x[:, sample].T)
    different = module[sample][:, None] != module[sample][None, :]
    between = corr[different].mean()
    assert 0.2 < np.mean(within) < 0.7
    assert np.mean(within) > between + 0.15


def test_demo_gene_sets_layout() -> None:
    sets = demo.demo_gene_sets(40, n_genes=SMALL_GENES)
    curated = [name for name in sets if not name.startswith("SIM_")]
    assert curated[0] == "JAKSTAT_CORE_PATHWAY"
    assert 4 <= len(curated) <= 6
    assert len(sets) == len(curated) + 40
    for name, genes in sets.items():
        assert len(genes) == len(set(genes)), name
        if name.startswith("SIM_"):
            assert 15 <= len(genes) <= 300, name
        else:
            assert 15 <= len(genes) <= 150, name
    assert any(name.startswith("SIM_MODULE_") for name in sets)
    assert any(name.startswith("SIM_RANDOM_") for name in sets)
    assert sets == demo.demo_gene_sets(40, n_genes=SMALL_GENES)


def test_demo_gene_sets_match_cohort_modules(small_cohort: anndata.AnnData) -> None:
    seed = int(small_cohort.uns["generator"]["seed"])
    sets = demo.demo_gene_sets(60, seed=seed, n_genes=SMALL_GENES)
    var = small_cohort.var
    assert {g for genes in sets.values() for g in genes} <= set(var.index)
    for name, genes in sets.items():
        if name.startswith("SIM_MODULE_"):
            module = int(name.rsplit("_", 1)[1])
            assert (var.loc[genes, "sim_module"] == module).mean() >= 0.85


def test_gmt_curation_rules() -> None:
    text = (Path(demo.__file__).resolve().parents[2] / "data" / demo.GMT_FILENAME).read_text()
    for line in text.splitlines():
        fields = line.split("\t")
        name, description, genes = fields[0], fields[1], fields[2:]
        assert name.isupper() and not name.startswith("SIM_")
        assert "README" in description
        assert "KEGG" not in description and "MSigDB" not in description
        assert all(g and g == g.strip() and g.upper() == g for g in genes), name


def test_installed_package_data_stands_in_for_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed from a wheel there is no checkout data/: the GMT comes from the package
    data (pyproject maps data/ to permenrich.demo_data) and the cohort goes to the cache."""
    checkout_gmt = demo._find_gmt()
    monkeypatch.setattr(demo, "_repo_data_dir", lambda: tmp_path / "nowhere")
    shipped = demo._shipped_gmt()
    assert shipped is not None and shipped.read_bytes() == checkout_gmt.read_bytes()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert demo._default_cohort_dir() == tmp_path / "cache" / "permenrich"


def test_missing_gene_sets_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "_repo_data_dir", lambda: tmp_path / "nowhere")
    monkeypatch.setattr(demo, "_shipped_gmt", lambda: None)
    with pytest.raises(PermenrichError, match="jak_stat_gene_sets.gmt"):
        demo.demo_gene_sets(10)
    with pytest.raises(PermenrichError, match="reinstall permenrich"):
        demo.make_demo_cohort(tmp_path / "x.h5ad", n_genes=SMALL_GENES)
    assert not (tmp_path / "x.h5ad").exists()


@pytest.mark.parametrize("kwargs", [{"n_cases": 2}, {"n_controls": 0}, {"n_genes": 500}, {"seed": -1},
                                    {"n_cases": 7.5}])
def test_bad_sizes_are_option_errors(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(OptionError):
        demo.make_demo_cohort(tmp_path / "x.h5ad", **kwargs)
    with pytest.raises(OptionError):
        demo.demo_gene_sets(-1)


def test_write_is_atomic_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "demo_cohort.h5ad"
    demo.make_demo_cohort(target, n_genes=SMALL_GENES)
    demo.make_demo_cohort(target, n_genes=SMALL_GENES)  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["demo_cohort.h5ad"]


def _fake_result() -> pd.DataFrame:
    names = ["SIM_MODULE_017", "IFN_ALPHA_BETA_JAKSTAT", "STAT3_TARGETS"] + [f"SIM_RANDOM_{i:03d}" for i in range(12)]
    n = len(names)
    res = pd.DataFrame({
        "gene_set": names, "size": np.arange(n) + 15, "size_original": np.arange(n) + 15,
        "es": np.linspace(0.6, -0.2, n), "nes": np.linspace(2.5, -1.0, n),
        "pval": np.linspace(1e-4, 0.9, n), "fdr": np.linspace(1e-3, 1.0, n), "fwer": np.linspace(0, 1, n),
        "padj_bh": np.linspace(1e-3, 1, n), "leading_edge": "", "tags_pct": 0.0, "list_pct": 0.0,
        "signal_pct": 0.0,
    })
    res.attrs["run"] = {"design": {"n_case": 70, "n_control": 63}, "data": {"n_genes": 20000},
                        "parameters": {"permutations": 10000}}
    return res


def test_format_demo_summary() -> None:
    text = demo.format_demo_summary(_fake_result())
    first = text.splitlines()[0]
    assert first == ("SIMULATED demo cohort (not patient data): 70 VTE vs 63 controls, 20,000 genes, "
                     "15 gene sets, 10,000 permutations")
    assert "IFN_ALPHA_BETA_JAKSTAT" in text and "STAT3_TARGETS" in text
    jak_block = text.split("Top")[0]
    assert "SIM_RANDOM" not in jak_block
    assert any(line.split()[:2] == ["2", "IFN_ALPHA_BETA_JAKSTAT"] for line in jak_block.splitlines())
    top_block = text.split("Top 10 gene sets")[1]
    assert len([line for line in top_block.splitlines() if line.strip() and line.split()[0].isdigit()]) == 10


def test_format_demo_summary_without_run_metadata() -> None:
    res = _fake_result()
    res.attrs = {}
    assert demo.format_demo_summary(res).startswith("SIMULATED demo cohort (not patient data): ? VTE")


def _engine_gsea():
    """The engine's gsea, or skip: the engine is developed alongside this demo."""
    for module_name in ("permenrich", "permenrich.api"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if callable(getattr(module, "gsea", None)):
            return module.gsea
    pytest.skip("permenrich.gsea is not available yet (the engine has not landed)")


@pytest.mark.slow
def test_run_demo_end_to_end(tmp_path: Path) -> None:
    _engine_gsea()
    data_dir = tmp_path / "data"
    demo.make_demo_cohort(data_dir / demo.COHORT_FILENAME, n_genes=4000)
    res = demo.run_demo(tmp_path / "out", permutations=200, seed=1, threads=1, quiet=True, data_dir=data_dir)

    assert list(res.columns[:6]) == ["gene_set", "size", "size_original", "es", "nes", "pval"]
    assert (tmp_path / "out" / "results.tsv").is_file()
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["demo"]["simulated"] is True
    assert run["demo"]["cohort_n_genes"] == 4000

    ranked = list(res["gene_set"])
    core = res.set_index("gene_set").loc["JAKSTAT_CORE_PATHWAY"]
    assert core["nes"] > 0
    assert core["fdr"] < 0.25 or ranked.index("JAKSTAT_CORE_PATHWAY") < 10
    curated = [name for name in ranked if not name.startswith("SIM_")]
    top_ranks = sorted(ranked.index(name) for name in curated)
    assert top_ranks[2] < 15  # at least three of the JAK-STAT sets near the top

    summary = demo.format_demo_summary(res)
    assert summary.startswith("SIMULATED demo cohort (not patient data): 70 VTE vs 63 controls, 4,000 genes")


def test_confounded_cohort_demo_shows_what_adjustment_removes(tmp_path):
    """The SIMULATED confounded cohort, from its GEO files: the two age-driven JAK-STAT
    sets lead before adjustment and drop after it; the interferon set the disease shifts
    stays on top."""
    from permenrich.demo_cohort import AGE_DRIVEN_SETS, format_cohort_summary, run_cohort_demo

    combined = run_cohort_demo(tmp_path / "out", permutations=500, data_dir=tmp_path / "data")
    assert (tmp_path / "out" / "results.tsv").is_file()
    assert sorted(p.name for p in (tmp_path / "data" / "confounded_12000").iterdir()) == [
        "demo_confounded_platform.soft.gz", "demo_confounded_series_matrix.txt.gz"]
    plain = combined[combined.analysis == "unadjusted"].set_index("gene_set")
    adjusted = combined[combined.analysis == "adjusted for age and sex"].set_index("gene_set")
    for name in AGE_DRIVEN_SETS:
        assert plain.loc[name, "fdr"] < 0.05 < adjusted.loc[name, "fdr"], name
    assert adjusted.loc["IFN_ALPHA_BETA_JAKSTAT", "fdr"] < 0.05
    summary = format_cohort_summary(combined)
    assert "SIMULATED" in summary and "removes the false enrichment" in summary
