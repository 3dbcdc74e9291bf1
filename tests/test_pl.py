"""Figures (permenrich.pl): the running sum drawn is the one behind the table's ES; the
right panels, errors and ``ax=`` behaviour. Figures are ``Figure`` objects, which need
no pyplot and no backend choice."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

import permenrich

matplotlib = pytest.importorskip("matplotlib", reason="figures need matplotlib: pip install permenrich[plot]")
from matplotlib.figure import Figure  # noqa: E402

from permenrich import pl  # noqa: E402

# The plotted curve is running_sum_dense (divides by N_R, N - k; NumPy's pairwise sum),
# the table's ES comes from the compiled walk (multiplies by their reciprocals, sums N_R
# member by member): the same real number, rounded differently by a few ulps of 1.
ES_ROUNDING = 1e-12


@pytest.fixture(scope="module")
def leukemia(shared_data):
    base = shared_data / "leukemia"
    table = pd.read_csv(base / "Leukemia_hgu95av2.trim.txt", sep="\t").drop(columns="NAME")
    return table.groupby("Gene").mean(), base / "Leukemia.cls", shared_data / "genesets" / "h.all.v7.0.symbols.gmt"


@pytest.fixture(scope="module")
def golub_gsea(leukemia):
    expr, cls, gmt = leukemia
    return permenrich.gsea(expr, cls, gmt, permutations=200, seed=1, device="cpu")


@pytest.fixture(scope="module")
def simulated():
    """A small ranked list with a few sets, some shifted up and some down."""
    rng = np.random.default_rng(7)
    genes = [f"g{i}" for i in range(600)]
    scores = pd.Series(rng.normal(size=600), index=genes)
    sets = {f"set{s}": list(rng.choice(genes, size=25, replace=False)) for s in range(8)}
    scores[sets["set0"]] += 1.5
    scores[sets["set1"]] -= 1.5
    return scores, sets


@pytest.fixture(scope="module")
def prerank_result(simulated):
    scores, sets = simulated
    return permenrich.prerank(scores, sets, permutations=200, seed=0, min_size=5, device="cpu")


@pytest.fixture(scope="module")
def genes_result():
    rng = np.random.default_rng(3)
    expr = pd.DataFrame(rng.normal(size=(300, 12)), index=[f"g{i}" for i in range(300)])
    expr.iloc[:20, :6] += 2.0
    return permenrich.genes(expr, ["a"] * 6 + ["b"] * 6, case="a", control="b", permutations=200, device="cpu")


def _extreme(curve):
    return curve[np.argmax(np.abs(curve))]


def test_running_sum_extreme_is_the_table_es_golub(golub_gsea):
    for _, row in golub_gsea.head(10).iterrows():
        curve, positions, peak = pl.running_sum_curve(golub_gsea, row["gene_set"])
        assert curve.size == golub_gsea.attrs["ranking"].statistic.size
        assert positions.size == row["size"]
        assert abs(_extreme(curve) - row["es"]) <= ES_ROUNDING
        assert abs(curve[peak] - row["es"]) <= ES_ROUNDING  # the marked point is the ES


@pytest.mark.parametrize("weight", [0.0, 1.0, 2.0])
def test_running_sum_extreme_is_the_table_es_prerank(simulated, weight):
    scores, sets = simulated
    result = permenrich.prerank(scores, sets, weight=weight, permutations=50, seed=0, min_size=5, device="cpu")
    ranking = result.attrs["ranking"]
    assert list(ranking.frame().columns) == ["gene", "statistic"]
    assert np.all(np.diff(ranking.statistic) <= 0)
    for _, row in result.iterrows():
        curve, positions, peak = pl.running_sum_curve(result, row["gene_set"])
        assert sorted(ranking.gene_ids[positions]) == sorted(sets[row["gene_set"]])
        assert abs(_extreme(curve) - row["es"]) <= ES_ROUNDING
        assert abs(curve[peak] - row["es"]) <= ES_ROUNDING


def test_ranking_survives_table_operations(prerank_result):
    ranking = prerank_result.attrs["ranking"]
    assert prerank_result.head(3).attrs["ranking"] is ranking  # shared, not deep-copied
    assert copy.deepcopy(prerank_result).attrs["ranking"] is ranking
    assert len(pd.concat([prerank_result.head(3), prerank_result.tail(3)])) == 6


def test_enrichment_has_three_panels(prerank_result):
    figure = pl.enrichment(prerank_result, "set0")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3
    assert "set0" in figure.axes[0].get_title()


def test_enrichment_draws_into_given_axes(prerank_result):
    figure = Figure()
    ax = figure.add_subplot(1, 2, 1)
    other = figure.add_subplot(1, 2, 2)
    assert pl.enrichment(prerank_result, "set1", ax=ax) is figure
    assert other in figure.axes and len(figure.axes) == 4  # the given area became three panels


def test_dotplot_and_volcano_draw_into_given_axes(prerank_result, genes_result):
    figure = Figure()
    ax = figure.add_subplot()
    assert pl.dotplot(prerank_result, top=3, ax=ax) is figure
    assert len(ax.collections) >= 1
    figure = Figure()
    ax = figure.add_subplot()
    assert pl.volcano(genes_result, ax=ax) is figure
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(genes_result)


def test_dotplot_top_sets_by_sign(prerank_result):
    figure = pl.dotplot(prerank_result, top=2)
    ax = figure.axes[0]
    labels = [t.get_text() for _, t in sorted(zip(ax.get_yticks(), ax.get_yticklabels()), key=lambda p: -p[0])]
    positive = prerank_result[prerank_result.nes > 0].nlargest(2, "nes").gene_set.tolist()
    negative = prerank_result[prerank_result.nes < 0].nsmallest(2, "nes").gene_set.tolist()
    assert labels == positive + negative  # from the top down
    assert len(figure.axes) == 2  # the dots and the FDR colour bar


def test_barplot_same_sets_as_dotplot_with_nes_bars_coloured_by_fdr(prerank_result):
    from matplotlib import colormaps, colors

    figure = pl.barplot(prerank_result, top=2)
    ax = figure.axes[0]
    order = np.argsort(-np.asarray(ax.get_yticks()))
    labels = [ax.get_yticklabels()[i].get_text() for i in order]
    positive = prerank_result[prerank_result.nes > 0].nlargest(2, "nes")
    negative = prerank_result[prerank_result.nes < 0].nsmallest(2, "nes")
    shown = pd.concat([positive, negative])
    assert labels == shown.gene_set.tolist()  # from the top down, as the dot plot
    bars = sorted(ax.patches, key=lambda bar: -bar.get_y())
    assert np.allclose([bar.get_width() for bar in bars], shown.nes)
    scale = colors.Normalize(0.0, max(float(shown.fdr.max()), 1e-3))
    expected = colormaps["viridis_r"](scale(shown.fdr.to_numpy()))
    assert np.allclose([bar.get_facecolor() for bar in bars], expected)
    assert [t.get_text() for t in ax.texts] == [str(int(k)) for k in shown["size"]]
    assert len(figure.axes) == 2  # the bars and the FDR colour bar
    with pytest.raises(ValueError, match="top must be a positive integer"):
        pl.barplot(prerank_result, top=0)


def test_volcano_one_axes(genes_result):
    figure = pl.volcano(genes_result)
    assert len(figure.axes) == 1
    assert figure.axes[0].get_ylabel() == "-log10 permutation p"


def test_errors(prerank_result, genes_result, simulated):
    with pytest.raises(ValueError, match="'nope' is not in the result"):
        pl.enrichment(prerank_result, "nope")
    with pytest.raises(ValueError, match="permenrich.gsea or prerank"):
        pl.enrichment(genes_result, "set0")
    with pytest.raises(ValueError, match="permenrich.gsea or prerank"):
        pl.dotplot(genes_result)
    with pytest.raises(ValueError, match="permenrich.genes"):
        pl.volcano(prerank_result)
    with pytest.raises(ValueError, match="top must be a positive integer"):
        pl.dotplot(prerank_result, top=0)
    scores, sets = simulated
    mean = permenrich.prerank(scores, sets, set_statistic="mean", permutations=20, min_size=5, device="cpu")
    with pytest.raises(ValueError, match="set_statistic='mean'"):
        pl.enrichment(mean, "set0")


def test_missing_matplotlib_says_what_to_install(prerank_result, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"pip install permenrich\[plot\]"):
        pl.dotplot(prerank_result)


def test_saved_png_is_not_empty(prerank_result, genes_result, tmp_path):
    for name, figure in [("enrichment", pl.enrichment(prerank_result, "set0")),
                         ("dotplot", pl.dotplot(prerank_result)), ("volcano", pl.volcano(genes_result))]:
        path = tmp_path / f"{name}.png"
        figure.savefig(path, dpi=60)
        assert path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_global_matplotlib_state(prerank_result):
    import matplotlib.pyplot as plt

    before = (matplotlib.get_backend(), plt.get_fignums())
    pl.enrichment(prerank_result, "set0")
    pl.dotplot(prerank_result)
    assert (matplotlib.get_backend(), plt.get_fignums()) == before
