"""The figures of one set's null, leading-edge expression, maxT and ORA overlaps
(permenrich.pl): the null drawn is the run's null, recomputed; checked against brute-force
NumPy computations and the table's own counts."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest

import permenrich

matplotlib = pytest.importorskip("matplotlib", reason="figures need matplotlib: pip install permenrich[plot]")
from matplotlib.figure import Figure  # noqa: E402

from permenrich import pl  # noqa: E402
from permenrich.design import PermutationPlan, TwoGroupLabels  # noqa: E402

TIE = 1e-12


def _es(stat: np.ndarray, in_set: np.ndarray, weight: float) -> float:
    """GSEA's weighted running-sum ES, written out with NumPy (genes by decreasing stat)."""
    order = np.argsort(-stat, kind="stable")
    hits = in_set[order]
    weights = np.abs(stat[order]) ** weight
    step = np.where(hits, weights / weights[hits].sum(), -1.0 / (hits.size - hits.sum()))
    walk = np.cumsum(step)
    return float(walk[np.argmax(np.abs(walk))])


def _diff_of_classes(values: np.ndarray, is_case: np.ndarray) -> np.ndarray:
    return values[:, is_case].mean(axis=1) - values[:, ~is_case].mean(axis=1)


def _tail_counts(null: np.ndarray, es: float) -> tuple[int, int]:
    """(b, m) of the sign-specific nominal p (see permenrich.nulls)."""
    null = np.where(np.abs(null) <= TIE, 0.0, null)
    if es >= 0:
        return int((null >= es - TIE).sum()), int((null >= 0).sum())
    return int((null <= es + TIE).sum()), int((null < 0).sum())


@pytest.fixture(scope="module")
def small_study():
    rng = np.random.default_rng(5)
    genes = [f"g{i}" for i in range(120)]
    expr = pd.DataFrame(rng.normal(size=(120, 12)), index=genes, columns=[f"s{j}" for j in range(12)])
    expr.iloc[:12, :6] += 1.0
    sets = {f"set{s}": list(rng.choice(genes, size=15, replace=False)) for s in range(5)}
    sets["up"] = genes[:12] + genes[40:44]
    return expr, sets


@pytest.fixture(scope="module")
def small_gsea(small_study):
    expr, sets = small_study
    return permenrich.gsea(expr, ["a"] * 6 + ["b"] * 6, sets, metric="diff_of_classes", permutations=150, seed=3,
                           min_size=5, device="cpu")


def test_null_counts_reproduce_the_table_gsea(small_gsea):
    for _, row in small_gsea.iterrows():
        null = pl.null_scores(small_gsea, row["gene_set"])
        assert null.shape == (150,)
        b, m = _tail_counts(null, row["es"])
        assert m == row["n_null_same_sign"]
        assert (b + 1) / (m + 1) == row["pval"]


def test_null_is_the_brute_force_null(small_study, small_gsea):
    """Each permutation's labelling from the plan, its statistic and ES with NumPy."""
    expr, sets = small_study
    values = expr.to_numpy()
    is_case = np.arange(12) < 6
    design = TwoGroupLabels(is_case)
    plan = PermutationPlan(design, 150, 3)
    labellings = plan.labellings(0, plan.n_perm)
    genes = np.asarray(expr.index)
    for name in ("up", "set1"):
        in_set = np.isin(genes, sets[name])
        expected = []
        for drawn in labellings:
            mask = np.zeros(12, dtype=bool)
            mask[drawn] = True
            permuted_case = mask if design.drawn_is_case else ~mask
            expected.append(_es(_diff_of_classes(values, permuted_case), in_set, 1.0))
        np.testing.assert_allclose(pl.null_scores(small_gsea, name), expected, rtol=0, atol=1e-10)


def test_exact_enumeration_null_is_every_labelling():
    """4 vs 4 samples: 70 labellings, all enumerated; the null is their ES, whatever the order."""
    rng = np.random.default_rng(11)
    genes = [f"g{i}" for i in range(60)]
    expr = pd.DataFrame(rng.normal(size=(60, 8)), index=genes)
    expr.iloc[:10, :4] += 1.5
    members = genes[:10] + genes[30:35]
    result = permenrich.gsea(expr, ["a"] * 4 + ["b"] * 4, {"s": members, "t": genes[20:40]},
                             metric="diff_of_classes", weight=0.0, permutations=1000, min_size=5, device="cpu")
    assert result.attrs["run"]["permutation_plan"]["exact_enumeration"]
    values, in_set = expr.to_numpy(), np.isin(genes, members)
    brute = []
    for case in itertools.combinations(range(8), 4):
        mask = np.zeros(8, dtype=bool)
        mask[list(case)] = True
        brute.append(_es(_diff_of_classes(values, mask), in_set, 0.0))
    null = pl.null_scores(result, "s")
    np.testing.assert_allclose(np.sort(null), np.sort(brute), rtol=0, atol=1e-10)
    row = result.set_index("gene_set").loc["s"]
    b, m = _tail_counts(null, row["es"])
    assert (m, b / m) == (row["n_null_same_sign"], row["pval"])  # exact: p = b/m


def test_null_counts_reproduce_the_table_prerank():
    rng = np.random.default_rng(2)
    genes = [f"g{i}" for i in range(300)]
    scores = pd.Series(rng.normal(size=300), index=genes)
    sets = {f"s{k}": list(rng.choice(genes, size=size, replace=False)) for k, size in enumerate((8, 8, 15, 30))}
    scores[sets["s0"]] += 1.0
    result = permenrich.prerank(scores, sets, permutations=200, seed=4, min_size=5, device="cpu")
    for _, row in result.iterrows():
        null = pl.null_scores(result, row["gene_set"])
        b, m = _tail_counts(null, row["es"])
        assert (m, (b + 1) / (m + 1)) == (row["n_null_same_sign"], row["pval"])
    # Same size, same random sets: the null belongs to the size, as GSEA preranked's does.
    np.testing.assert_array_equal(pl.null_scores(result, "s0"), pl.null_scores(result, "s1"))
    assert np.all(np.abs(pl.null_scores(result, "s3")) <= 1.0)
    figure = pl.null_distribution(result, "s0", bins=20)
    assert f"= {result.set_index('gene_set').loc['s0', 'pval']:.3g}" in figure.axes[0].get_title()


def test_null_distribution_figure(small_gsea):
    row = small_gsea.set_index("gene_set").loc["up"]
    figure = pl.null_distribution(small_gsea, "up")
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    ax = figure.axes[0]
    assert "nominal p = " in ax.get_title() and f"{row['pval']:.3g}" in ax.get_title()
    assert sum(bar.get_height() for bar in ax.containers[0]) == 150  # every permutation, once
    mine = Figure()
    target = mine.add_subplot()
    assert pl.null_distribution(small_gsea, "set1", ax=target, bins=10) is mine


def test_result_keeps_a_reference_not_a_copy(small_gsea):
    reference = small_gsea.attrs["ranking"].study
    assert reference is not None
    assert small_gsea.head(2).attrs["ranking"].study is reference
    # Pickling drops the study: the pickle stays the table's size, and the figure says why.
    restored = pickle.loads(pickle.dumps(small_gsea))
    assert restored.attrs["ranking"].study is None
    assert restored.attrs["ranking"].gene_ids.size == 120
    with pytest.raises(ValueError, match="no longer references"):
        pl.null_distribution(restored, "up")
    with pytest.raises(ValueError, match="no longer references"):
        pl.leading_edge_heatmap(restored, "up")


def test_leading_edge_heatmap(small_study, small_gsea):
    expr, _ = small_study
    row = small_gsea.set_index("gene_set").loc["up"]
    edge = row["leading_edge"].split(",")
    figure = pl.leading_edge_heatmap(small_gsea, "up")
    heat = next(ax for ax in figure.axes if ax.images and ax.images[0].get_array().shape == (len(edge), 12))
    shown = np.asarray(heat.images[0].get_array())
    ranking = small_gsea.attrs["ranking"]
    rank = {g: i for i, g in enumerate(ranking.gene_ids)}
    ordered = sorted(edge, key=rank.get)
    assert [t.get_text() for t in heat.get_yticklabels()] == ordered
    values = expr.loc[ordered].to_numpy()  # classes: the first six samples are "a"
    z = (values - values.mean(axis=1, keepdims=True)) / values.std(axis=1, keepdims=True)
    np.testing.assert_allclose(shown, z, atol=1e-12)
    assert any("z-score per gene" in ax.get_ylabel() for ax in figure.axes)
    two = pl.leading_edge_heatmap(small_gsea, ["up", "set1"])
    assert len(two.axes) == 4


def test_leading_edge_heatmap_orders_samples_by_class(small_study):
    expr, sets = small_study
    labels = ["a", "b"] * 6  # interleaved: the heatmap puts the case class first
    result = permenrich.gsea(expr, labels, sets, metric="diff_of_classes", permutations=20, min_size=5,
                             device="cpu")
    edge = result.set_index("gene_set").loc["set0", "leading_edge"].split(",")
    figure = pl.leading_edge_heatmap(result, "set0")
    heat = next(ax for ax in figure.axes if ax.images and ax.images[0].get_array().shape[0] == len(edge))
    rank = {g: i for i, g in enumerate(result.attrs["ranking"].gene_ids)}
    values = expr.loc[sorted(edge, key=rank.get)].to_numpy()[:, list(range(0, 12, 2)) + list(range(1, 12, 2))]
    z = (values - values.mean(axis=1, keepdims=True)) / values.std(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(heat.images[0].get_array()), z, atol=1e-12)


@pytest.fixture(scope="module")
def genes_result():
    rng = np.random.default_rng(3)
    expr = pd.DataFrame(rng.normal(size=(200, 12)), index=[f"g{i}" for i in range(200)])
    expr.iloc[:15, :6] += 2.5
    return permenrich.genes(expr, ["a"] * 6 + ["b"] * 6, case="a", control="b", permutations=300, device="cpu")


def test_maxt(genes_result):
    figure = pl.maxt(genes_result, alpha=0.05, label=3)
    ax = figure.axes[0]
    passing = genes_result[genes_result.pval_maxt < 0.05]
    assert len(passing) > 0
    red = [c for c in ax.collections if "FWER" in c.get_label()][0]
    np.testing.assert_allclose(np.sort(red.get_offsets()[:, 1]), np.sort(-np.log10(passing.pval_maxt)))
    assert len(ax.texts) == min(3, len(passing))
    assert ax.get_ylabel() == "-log10 maxT-adjusted p (FWER)"
    read_back = pd.DataFrame(genes_result)  # the columns alone suffice (a table read from a file)
    read_back.attrs = {}
    assert isinstance(pl.maxt(read_back), Figure)


@pytest.fixture(scope="module")
def ora_result():
    universe = [f"g{i}" for i in range(500)]
    sets = {f"s{k}": universe[k * 20:k * 20 + 40] for k in range(10)}
    listed = universe[:30] + universe[100:105]
    return permenrich.ora(listed, sets, universe=universe, min_size=5)


def test_overlap(ora_result):
    figure = pl.overlap(ora_result, top=4)
    ax = figure.axes[0]
    top = ora_result.sort_values(["pval_hypergeom", "gene_set"]).head(4)
    labels = [t.get_text() for _, t in sorted(zip(ax.get_yticks(), ax.get_yticklabels()), key=lambda p: -p[0])]
    assert labels == top.gene_set.tolist()
    observed = [c for c in ax.collections if c.get_label() == "observed overlap"][0]
    expected = [c for c in ax.collections if c.get_label() == "expected overlap"][0]
    np.testing.assert_allclose(observed.get_offsets()[:, 0], top.overlap.to_numpy(float))
    np.testing.assert_allclose(expected.get_offsets()[:, 0], top.expected.to_numpy(float))
    np.testing.assert_allclose(observed.get_array(), -np.log10(top.pval_hypergeom.to_numpy()))
    assert figure.axes[1].get_ylabel() == "-log10 p (hypergeometric)"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"observed overlap", "expected overlap"}


def test_anndata_results():
    anndata = pytest.importorskip("anndata")
    rng = np.random.default_rng(1)
    adata = anndata.AnnData(X=rng.normal(size=(12, 80)),
                            obs=pd.DataFrame({"cell": ["x"] * 4 + ["y"] * 4 + ["z"] * 4},
                                             index=[f"c{i}" for i in range(12)]),
                            var=pd.DataFrame(index=[f"g{i}" for i in range(80)]))
    permenrich.tl.genes(adata, groupby="cell", reference="z", permutations=50, device="cpu")
    with pytest.raises(ValueError, match="choose one with group="):
        pl.maxt(adata)
    stored = adata.uns["permenrich"]["permenrich_genes"]["results"]
    figure = pl.volcano(adata, group="x")
    assert sum(len(c.get_offsets()) for c in figure.axes[0].collections) == (stored.group == "x").sum()
    assert isinstance(pl.maxt(adata, key="permenrich_genes", group="y"), Figure)
    with pytest.raises(ValueError, match="group 'w' is not in the results"):
        pl.maxt(adata, group="w")
    with pytest.raises(ValueError, match="permenrich.gsea or prerank"):
        pl.dotplot(adata, group="x")
    with pytest.raises(ValueError, match="keep no ranked list or study"):
        pl.null_distribution(adata, "set")


def test_errors(small_gsea, genes_result, ora_result):
    with pytest.raises(ValueError, match="'nope' is not in the result"):
        pl.null_distribution(small_gsea, "nope")
    with pytest.raises(ValueError, match="'nope' is not in the result"):
        pl.leading_edge_heatmap(small_gsea, ["up", "nope"])
    with pytest.raises(ValueError, match="permenrich.gsea or prerank"):
        pl.null_distribution(genes_result, "up")
    with pytest.raises(ValueError, match="permenrich.gsea\\(\\)"):
        pl.leading_edge_heatmap(genes_result, "up")
    with pytest.raises(ValueError, match="permenrich.genes"):
        pl.maxt(ora_result)
    with pytest.raises(ValueError, match="permenrich.ora"):
        pl.overlap(genes_result)
    with pytest.raises(ValueError, match="top must be a positive integer"):
        pl.overlap(ora_result, top=0)
    with pytest.raises(ValueError, match="alpha must lie in"):
        pl.maxt(genes_result, alpha=1.5)
    read_back = pd.DataFrame(small_gsea)
    read_back.attrs = {}
    with pytest.raises(ValueError, match="a table read from a file"):
        pl.null_distribution(read_back, "up")


def test_no_global_matplotlib_state(small_gsea, genes_result, ora_result):
    import matplotlib.pyplot as plt

    before = (dict(matplotlib.rcParams), matplotlib.get_backend(), plt.get_fignums())
    pl.null_distribution(small_gsea, "up")
    pl.leading_edge_heatmap(small_gsea, ["up", "set0"])
    pl.maxt(genes_result)
    pl.overlap(ora_result)
    after = (dict(matplotlib.rcParams), matplotlib.get_backend(), plt.get_fignums())
    assert after == before


def test_saved_png_is_not_empty(small_gsea, genes_result, ora_result, tmp_path):
    for name, figure in [("null", pl.null_distribution(small_gsea, "up")),
                         ("heatmap", pl.leading_edge_heatmap(small_gsea, "up")),
                         ("maxt", pl.maxt(genes_result)), ("overlap", pl.overlap(ora_result))]:
        path = tmp_path / f"{name}.png"
        figure.savefig(path, dpi=60)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_long_set_names_keep_their_ends_and_a_missing_fdr_is_grey(small_gsea):
    """A 300-character name cut the axes down to nothing, and names that differ at the end
    were drawn alike; a NaN FDR was a transparent dot (only its outline) with no legend."""
    long_one, long_two = "X" * 100 + "_END_ONE", "X" * 100 + "_END_TWO"
    assert len(pl.short_label(long_one)) == pl.LABEL_CHARACTERS
    assert pl.short_label(long_one) != pl.short_label(long_two) and pl.short_label(long_one).endswith("_END_ONE")
    assert pl.short_label("HALLMARK_APOPTOSIS") == "HALLMARK_APOPTOSIS"
    table = small_gsea.copy()
    table.loc[table.index[0], "gene_set"] = long_one
    table.loc[table.index[0], "fdr"] = np.nan
    figure = pl.dotplot(table, top=5)
    ax = figure.axes[0]
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert pl.short_label(long_one) in labels and all(len(label) <= pl.LABEL_CHARACTERS for label in labels)
    [dots] = [c for c in ax.collections if len(c.get_offsets()) == len(labels)]
    figure.draw_without_rendering()  # colours are mapped when drawn
    faces = dots.get_facecolors()
    assert len(faces) == len(labels) and (faces[:, 3] > 0).all()  # every dot filled, the NaN one grey
    assert figure.axes[-1].get_ylabel() == "FDR q (grey: none)"
    bars = pl.barplot(table, top=5)
    assert all(patch.get_facecolor()[3] > 0 for patch in bars.axes[0].patches)


def test_long_names_that_differ_in_the_middle_keep_distinct_ticks():
    """Two names differing only in the middle got one tick label."""
    from permenrich.pl import LABEL_CHARACTERS, short_label, short_labels

    start, end = "HALLMARK_" + "A" * 60, "_" + "Z" * 40
    names = [start + "_UP" + end, start + "_DN" + end, "SHORT"]
    assert short_label(names[0]) == short_label(names[1])
    labels = short_labels(names)
    assert len(set(labels)) == 3 and labels[2] == "SHORT"
    assert all(len(label) <= len(name) for label, name in zip(labels, names))
    assert short_labels(["x" * 100, "y" * 100]) == [short_label("x" * 100), short_label("y" * 100)]
    assert len(short_labels(["x" * 100])[0]) == LABEL_CHARACTERS
