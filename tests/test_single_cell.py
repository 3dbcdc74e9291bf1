"""The scanpy-native single-cell path: ``layer=``/``use_raw=`` (in memory, h5ad read whole
and streamed, command line), ``control="rest"``, design warnings and ``permenrich.tl``."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich import tl
from permenrich.cli import main
from _tables import assert_identical

anndata = pytest.importorskip("anndata")

N_CELLS, N_GENES = 40, 2000  # dense float64 640 kB: streamed with memory="1MB"
GROUPS = np.repeat(["T", "B", "NK", "Mono"], N_CELLS // 4)
FAST = dict(permutations=200, seed=3, device="cpu")


def _counts(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(6, size=(N_CELLS, N_GENES)).astype(float)
    counts[GROUPS == "T", :8] += rng.poisson(6, size=(int((GROUPS == "T").sum()), 8))
    return counts


@pytest.fixture
def cells():
    """Cells whose X is scaled (negative values) and whose counts sit in a layer and in raw."""
    counts = _counts()
    genes = [f"G{i}" for i in range(N_GENES)]
    names = [f"c{i}" for i in range(N_CELLS)]
    obs = pd.DataFrame({"cell_type": GROUPS}, index=names)
    scaled = (counts - counts.mean(axis=0)) / counts.std(axis=0)
    adata = anndata.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=genes))
    adata.raw = adata  # raw.X: the counts
    adata.X = scaled
    adata.layers["counts"] = counts.copy()
    frame = pd.DataFrame(counts.T, index=genes, columns=names)
    return adata, frame


def _sets(n: int = 3, size: int = 8) -> dict:
    return {f"S{k}": [f"G{i}" for i in range(k * size, (k + 1) * size)] for k in range(n)}


# ---- layer= and use_raw= ----------------------------------------------------------------------
@pytest.mark.parametrize("choice", [{"layer": "counts"}, {"use_raw": True}])
def test_layer_and_raw_equal_the_counts_as_a_dataframe(cells, tmp_path, choice):
    adata, frame = cells
    labels = list(adata.obs.cell_type)
    expected_genes = permenrich.genes(frame, labels, case="T", control="B", **FAST)
    expected_gsea = permenrich.gsea(frame, labels, _sets(), case="T", control="B", min_size=2, **FAST)
    got = permenrich.genes(adata, groupby="cell_type", case="T", control="B", **choice, **FAST)
    assert_identical(got, expected_genes)
    got = permenrich.gsea(adata, None, _sets(), groupby="cell_type", case="T", control="B", min_size=2, **choice,
                          **FAST)
    assert_identical(got, expected_gsea)
    # the same from an h5ad, read whole and streamed (a budget far below the matrix)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    in_memory = permenrich.genes(path, groupby="cell_type", case="T", control="B", **choice, **FAST)
    assert_identical(in_memory, expected_genes)
    streamed = permenrich.genes(path, groupby="cell_type", case="T", control="B", memory="1MB", metric="welch_t",
                                **choice, **FAST)
    assert streamed.attrs["run"]["design"]["matrix_storage"] == "streamed from disk"
    assert streamed.pval_parametric.notna().all()  # Welch's t from the class sums, streamed too
    assert_identical(streamed, in_memory)
    assert in_memory.attrs["run"]["design"]["matrix"] == ("raw.X" if "use_raw" in choice else "layers['counts']")


def test_x_is_the_default_and_differs(cells):
    adata, frame = cells
    on_x = permenrich.genes(adata, groupby="cell_type", case="T", control="B", **FAST)
    on_counts = permenrich.genes(adata, groupby="cell_type", case="T", control="B", layer="counts", **FAST)
    assert not on_x.statistic.equals(on_counts.statistic)


def test_layer_errors_are_one_line(cells, tmp_path):
    adata, frame = cells
    with pytest.raises(permenrich.OptionError, match=r"^layer and use_raw exclude each other"):
        permenrich.genes(adata, groupby="cell_type", case="T", control="B", layer="counts", use_raw=True, **FAST)
    with pytest.raises(permenrich.InputError, match=r"layer 'spliced' not found; available layers: 'counts'"):
        permenrich.genes(adata, groupby="cell_type", case="T", control="B", layer="spliced", **FAST)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    for memory in ("1GB", "1MB"):  # read whole, streamed
        with pytest.raises(permenrich.InputError, match=r"layer 'spliced' not found .*available layers: 'counts'"):
            permenrich.genes(path, groupby="cell_type", case="T", control="B", layer="spliced", memory=memory,
                             **FAST)
    no_raw = anndata.AnnData(X=adata.layers["counts"], obs=adata.obs, var=adata.var)
    with pytest.raises(permenrich.InputError, match=r"use_raw=True but the AnnData has no raw"):
        permenrich.genes(no_raw, groupby="cell_type", case="T", control="B", use_raw=True, **FAST)
    with pytest.raises(permenrich.OptionError, match=r"layer='counts' applies only to h5ad/AnnData input"):
        permenrich.genes(frame, list(adata.obs.cell_type), case="T", control="B", layer="counts", **FAST)
    with pytest.raises(permenrich.OptionError, match=r"use_raw= must be True or False"):
        permenrich.genes(adata, groupby="cell_type", case="T", control="B", use_raw="yes", **FAST)


def test_ora_takes_a_layer(cells):
    adata, frame = cells
    expected = permenrich.ora(None, _sets(), expr=frame, phenotype=list(adata.obs.cell_type), case="T", control="B",
                              top=10, min_size=2, **FAST)
    got = permenrich.ora(None, _sets(), expr=adata, groupby="cell_type", case="T", control="B", top=10, min_size=2,
                         layer="counts", **FAST)
    assert_identical(got, expected)


def test_cli_layer_and_use_raw(cells, tmp_path, capsys):
    adata, frame = cells
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    expected = permenrich.genes(adata, groupby="cell_type", case="T", control="B", layer="counts",
                                permutations=100, seed=0, device="cpu")
    for flags in (["--layer", "counts"], ["--use-raw"]):
        out = tmp_path / f"out{len(flags)}"
        status = main(["genes", "--expr", str(path), "--groupby", "cell_type", "--case", "T", "--control", "B",
                       "--permutations", "100", "--device", "cpu", "--quiet", "--out", str(out), *flags])
        assert status == 0, capsys.readouterr().err
        # the CLI's file holds the API's table exactly (as written by write_results)
        permenrich.write_results(expected, tmp_path / "api")
        assert (out / "results.tsv").read_text() == (tmp_path / "api" / "results.tsv").read_text()
    status = main(["genes", "--expr", str(path), "--groupby", "cell_type", "--case", "T", "--control", "B",
                   "--layer", "counts", "--use-raw", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert status == 2 and err.splitlines() == [
        "permenrich: error: --layer and --use-raw exclude each other (raw holds only X); pass one of them"]
    status = main(["gsea", "--expr", str(path), "--one-vs-rest", "cell_type", "--gene-sets", str(_gmt(tmp_path)),
                   "--min-size", "2", "--layer", "counts", "--permutations", "50", "--device", "cpu", "--quiet",
                   "--out", str(tmp_path / "screen")])
    assert status == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "screen" / "run.json").read_text())
    assert run["data"]["matrix"] == "layers['counts']"


def _gmt(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("".join(f"{name}\tna\t" + "\t".join(genes) + "\n" for name, genes in _sets().items()))
    return path


# ---- control="rest" -------------------------------------------------------------------------
def test_control_rest_equals_explicitly_relabelled_groups(cells):
    adata, frame = cells
    labels = np.array(adata.obs.cell_type)
    relabelled = list(np.where(labels == "T", "T", "rest"))
    for function, extra in ((permenrich.genes, {}), (permenrich.gsea, {"min_size": 2})):
        args = (_sets(),) if function is permenrich.gsea else ()
        expected = function(frame, relabelled, *args, case="T", control="rest", **extra, **FAST)
        from_labels = function(frame, list(labels), *args, case="T", control="rest", **extra, **FAST)
        from_obs = function(adata, None, *args, groupby="cell_type", case="T", control="rest", layer="counts",
                            **extra, **FAST)
        assert_identical(from_labels, expected)
        assert_identical(from_obs, expected)
        assert from_obs.attrs["run"]["design"]["n_control"] == 30


def test_control_rest_errors(cells):
    adata, frame = cells
    with pytest.raises(permenrich.OptionError, match=r"control='rest' compares one class with all others; name "
                                                     r"that class with case="):
        permenrich.genes(frame, list(adata.obs.cell_type), control="rest", **FAST)
    with pytest.raises(permenrich.OptionError, match=r"case='X' is not a class; classes \(samples\): 'T' \(10\)"):
        permenrich.genes(frame, list(adata.obs.cell_type), case="X", control="rest", **FAST)


# ---- design warnings --------------------------------------------------------------------------
def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_log1p_cpm_on_log_values_warns_and_run_json_keeps_it(cells, caplog):
    adata, frame = cells
    logged = adata.copy()
    logged.layers["logged"] = np.log1p(adata.layers["counts"])
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(logged, groupby="cell_type", case="T", control="B", layer="logged",
                                  normalize="log1p_cpm", **FAST)
    expected = ("normalize='log1p_cpm' expects raw counts, but the values are non-integer and at most "
                f"{np.log1p(adata.layers['counts']).max():.3g}")
    assert any(expected in m for m in _warnings(caplog))
    assert any(expected in m for m in result.attrs["run"]["design"]["warnings"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(adata, groupby="cell_type", case="T", control="B", layer="counts",
                                  normalize="log1p_cpm", **FAST)
    assert not any("expects raw counts" in m for m in _warnings(caplog))
    assert "warnings" not in result.attrs["run"]["design"]
    with pytest.raises(permenrich.InputError, match="negative value"):  # scaled X: refused, as before
        permenrich.genes(adata, groupby="cell_type", case="T", control="B", normalize="log1p_cpm", **FAST)


def test_log1p_cpm_warning_for_a_streamed_h5ad(cells, tmp_path, caplog):
    adata, frame = cells
    logged = anndata.AnnData(X=np.log1p(adata.layers["counts"]), obs=adata.obs, var=adata.var)
    path = tmp_path / "logged.h5ad"
    logged.write_h5ad(path)
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(path, groupby="cell_type", case="T", control="B", normalize="log1p_cpm",
                                  memory="1MB", **FAST)
    assert result.attrs["run"]["design"]["matrix_storage"] == "streamed from disk"
    assert any("expects raw counts" in m for m in _warnings(caplog))


def test_cell_level_permutation_with_donors_warns(cells, caplog):
    adata, frame = cells
    with_donors = adata.copy()
    with_donors.obs["Donor_ID"] = np.tile(["d1", "d2", "d3", "d4"], N_CELLS // 4)
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(with_donors, groupby="cell_type", case="T", control="B", layer="counts", **FAST)
    message = ("<AnnData>: labels are permuted across 40 cells, but obs['Donor_ID'] groups them into 4 Donor_ID "
               "levels")
    assert any(m.startswith(message) and "pseudobulk='Donor_ID'" in m for m in _warnings(caplog))
    assert any(m.startswith(message) for m in result.attrs["run"]["design"]["warnings"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):  # a DataFrame has no obs; a pseudobulk run tests donors
        permenrich.genes(frame, list(adata.obs.cell_type), case="T", control="B", **FAST)
        permenrich.genes(with_donors, groupby="cell_type", case="T", control="B", layer="counts",
                         pseudobulk="Donor_ID", min_cells=0, permutations=20, device="cpu")
    assert not any("pseudoreplication" in m for m in _warnings(caplog))
    unique = adata.copy()
    unique.obs["sample"] = [f"s{i}" for i in range(N_CELLS)]  # one sample per row: bulk data
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        permenrich.genes(unique, groupby="cell_type", case="T", control="B", **FAST)
    assert not any("pseudoreplication" in m for m in _warnings(caplog))


def test_smallest_attainable_p_value_is_said_up_front(cells, caplog):
    adata, frame = cells
    labels = list(adata.obs.cell_type)
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(frame, labels, case="T", control="B", permutations=50, device="cpu")
    message = "<DataFrame>: no p-value can fall below 0.0196 (1/(50+1)): 50 permutations; raise permutations="
    assert any(m.startswith(message) for m in _warnings(caplog))
    assert any(m.startswith(message) for m in result.attrs["run"]["design"]["warnings"])
    small = frame.iloc[:, [0, 1, 2, 10, 11, 12]]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(small, ["T"] * 3 + ["B"] * 3, case="T", control="B", permutations=1000,
                                  device="cpu")
    assert result.attrs["run"]["permutation_plan"]["exact_enumeration"]
    assert any("no p-value can fall below 0.1 (2 x 1/20: each labelling's complement scores alike, two-sided): the "
               "design has only 20 distinct labellings" in m
               for m in _warnings(caplog))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        permenrich.genes(frame, labels, case="T", control="B", permutations=200, device="cpu")
    assert not any("no p-value can fall below" in m for m in _warnings(caplog))


# ---- permenrich.tl -----------------------------------------------------------------------------
def test_tl_gsea_stores_what_direct_calls_give(cells):
    adata, frame = cells
    before = adata.copy()
    options = dict(min_size=2, **FAST)
    result = tl.gsea(adata, _sets(), "cell_type", layer="counts", **options)
    assert result is None
    stored = adata.uns["permenrich"]["permenrich_gsea"]
    table = stored["results"]
    assert list(dict.fromkeys(table.group)) == ["B", "Mono", "NK", "T"]  # sorted: not a categorical
    for group in ("B", "T"):
        direct = permenrich.gsea(before, None, _sets(), groupby="cell_type", case=group, control="rest",
                                 layer="counts", **options)
        part = table[table.group == group].drop(columns="group").reset_index(drop=True)
        assert_identical(part, direct)
        assert json.loads(stored["runs"].loc[group, "run"])["parameters"]["case"] == group
    assert stored["params"] == {"mode": "gsea", "groupby": "cell_type", "reference": "rest",
                                "groups": ["B", "Mono", "NK", "T"], "layer": "counts", "use_raw": False,
                                "min_size": 2, "permutations": 200, "seed": 3, "device": "cpu"}


def test_tl_copy_named_reference_groups_and_other_modes(cells, tmp_path):
    adata, frame = cells
    before = adata.copy()
    copied = tl.genes(adata, "cell_type", groups=["T"], reference="B", key_added="t_vs_b", copy=True,
                      use_raw=True, **FAST)
    assert "permenrich" not in adata.uns and adata.X.tolist() == before.X.tolist()
    table = copied.uns["permenrich"]["t_vs_b"]["results"]
    direct = permenrich.genes(adata, groupby="cell_type", case="T", control="B", use_raw=True, **FAST)
    assert_identical(table.drop(columns="group"), direct)
    tl.ora(copied, _sets(), "cell_type", groups="NK", layer="counts", top=10, min_size=2, **FAST)
    assert set(copied.uns["permenrich"]) == {"t_vs_b", "permenrich_ora"}  # keys accumulate
    direct = permenrich.ora(None, _sets(), expr=adata, groupby="cell_type", case="NK", control="rest",
                            layer="counts", top=10, min_size=2, **FAST)
    assert_identical(copied.uns["permenrich"]["permenrich_ora"]["results"].drop(columns="group"),
                                  direct)
    copied.write_h5ad(tmp_path / "with_results.h5ad")  # what is stored can be saved
    categorical = adata.copy()
    categorical.obs["cell_type"] = pd.Categorical(GROUPS, categories=["T", "NK", "B", "Mono"])
    tl.genes(categorical, "cell_type", reference="Mono", layer="counts", permutations=20, device="cpu")
    assert list(dict.fromkeys(categorical.uns["permenrich"]["permenrich_genes"]["results"].group)) == ["T", "NK", "B"]


def test_tl_errors_are_one_line(cells):
    adata, frame = cells
    with pytest.raises(permenrich.InputError, match=r"^permenrich.tl.gsea needs an AnnData, got DataFrame"):
        tl.gsea(frame, _sets(), "cell_type")
    with pytest.raises(permenrich.InputError, match=r"obs has no column 'celltype'; available columns: 'cell_type'"):
        tl.genes(adata, "celltype")
    with pytest.raises(permenrich.OptionError, match=r"reference='DC' is not a group of obs\['cell_type'\]"):
        tl.genes(adata, "cell_type", reference="DC")
    with pytest.raises(permenrich.OptionError, match=r"groups: 'DC' is not a group"):
        tl.genes(adata, "cell_type", groups=["DC"])
    with pytest.raises(permenrich.OptionError, match=r"groups: 'B' is the reference"):
        tl.genes(adata, "cell_type", groups=["B"], reference="B")
    with pytest.raises(permenrich.OptionError, match=r"case= is set for each group"):
        tl.genes(adata, "cell_type", case="T")
    assert "permenrich" not in adata.uns


# ---- log1p_cpm: library sizes and unusable cells ----------------------------------------------
def test_library_sizes_count_every_feature_before_duplicates_are_merged():
    """A cell's library size is the sum of all its counts, duplicated feature names
    included (they are merged after normalising): it was the sum over the merged genes."""
    from permenrich._pipeline import load_data

    counts = np.array([[10.0, 20, 70], [5, 5, 90], [30, 30, 40], [1, 1, 98]])  # every cell totals 100
    adata = anndata.AnnData(counts, obs=pd.DataFrame({"g": list("AABB")}, index=list("wxyz")),
                            var=pd.DataFrame(index=["DUP", "DUP", "OTHER"]))
    data = load_data(adata, chip=None, collapse="mean", nan_policy="error", normalize="log1p_cpm", budget=10**9).data
    assert list(data.gene_ids) == ["DUP", "OTHER"]
    np.testing.assert_allclose(data.values[1], np.log1p(counts[:, 2] / 100 * 1e6), rtol=1e-15)
    np.testing.assert_allclose(data.values[0], np.log1p(counts[:, :2] / 100 * 1e6).mean(axis=1), rtol=1e-15)


def test_an_empty_cell_outside_the_comparison_is_ignored_in_memory_as_when_streamed(cells, tmp_path):
    """A cell without counts (or with a negative value) in a group not compared: log1p_cpm
    of the others runs, read whole or streamed, with the same result; compared, it is
    refused in both, with the same message."""
    adata, _ = cells
    adata = adata.copy()
    counts = adata.layers["counts"]
    nk, mono = np.flatnonzero(GROUPS == "NK")[0], np.flatnonzero(GROUPS == "Mono")[0]
    counts[nk] = 0.0
    counts[mono, 5] = -1.0
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    kwargs = dict(groupby="cell_type", case="T", control="B", layer="counts", normalize="log1p_cpm", **FAST)
    in_memory = permenrich.genes(adata, **kwargs)
    streamed = permenrich.genes(path, memory="1MB", **kwargs)
    assert streamed.attrs["run"]["design"]["matrix_storage"] == "streamed from disk"
    assert_identical(in_memory, streamed)
    for case, message in (("NK", f"sample 'c{nk}' has no counts"), ("Mono", f"sample 'c{mono}' has a negative")):
        for source, memory in ((adata, "1GB"), (path, "1MB")):
            with pytest.raises(permenrich.InputError, match=message):
                permenrich.genes(source, **{**kwargs, "case": case}, memory=memory)


def test_a_streamed_file_is_released_after_the_run_and_reopened_unchanged_only(cells, tmp_path):
    """After a streamed run the HDF5 file is closed, so it can be written again while the
    result is alive (it stayed open through attrs['ranking']); redrawing a set's null
    reads it again, unless the file changed, which is refused rather than read."""
    import gc

    from permenrich import pl

    adata, _ = cells
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    kwargs = dict(groupby="cell_type", case="T", control="B", layer="counts", memory="1MB", min_size=2, **FAST)
    result = permenrich.gsea(path, None, _sets(), **kwargs)
    assert result.attrs["run"]["design"]["matrix_storage"] == "streamed from disk"
    expected = pl.null_scores(result, "S0")  # reads the file again
    gc.collect()
    adata.write_h5ad(tmp_path / "copy.h5ad")
    np.testing.assert_array_equal(pl.null_scores(result, "S0"), expected)
    adata.obs["extra"] = 1
    adata.write_h5ad(path)  # possible now: the run's file is released again after each read
    with pytest.raises(permenrich.InputError, match="the file changed .* since this run read it"):
        pl.null_scores(result, "S1")
    permenrich.genes(path, **{k: v for k, v in kwargs.items() if k != "min_size"})
    adata.write_h5ad(path)  # genes released it too


def test_numeric_obs_classes_are_named_by_their_numbers(cells):
    """Clusters numbered in an integer obs column are classes '0', '1', ...: case=1 names
    the same class as case='1' (it was 'not a class')."""
    adata, _ = cells
    adata = adata.copy()
    adata.obs["cluster"] = pd.Categorical(GROUPS).codes.astype(int)
    kwargs = dict(groupby="cluster", control="rest", layer="counts", **FAST)
    by_number = permenrich.genes(adata, case=1, **kwargs)
    by_text = permenrich.genes(adata, case="1", **kwargs)
    assert_identical(by_number, by_text)


def test_cells_without_a_pseudobulk_key_are_said_to_be_left_out(cells, caplog):
    """Cells whose donor (or group) is missing cannot join a pseudo-sample: they are left
    out, now with a warning and a count in run.json (they were dropped silently)."""
    adata, _ = cells
    adata = adata.copy()
    adata.obs["donor"] = pd.array([f"d{i % 4}" for i in range(N_CELLS)], dtype="string")
    adata.obs.loc[adata.obs_names[:6], "donor"] = pd.NA
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        table = permenrich.genes(adata, groupby="cell_type", case="T", control="B", layer="counts",
                                 pseudobulk="donor", min_cells=0, **FAST)
    assert f"6 of {N_CELLS} cells have no value in 'donor' or 'cell_type'" in caplog.text
    assert table.attrs["run"]["design"]["pseudobulk"]["cells_without_keys"] == 6


@pytest.mark.parametrize("storage", ["csr", "csc", "dense"])
def test_a_backed_anndata_reads_as_the_file(cells, tmp_path, storage):
    """anndata.read_h5ad(path, backed='r') with sparse X gave a bare ValueError; it now
    reads as the file does."""
    import scipy.sparse

    adata, _ = cells
    counts = adata.layers["counts"]
    stored = anndata.AnnData({"csr": scipy.sparse.csr_matrix, "csc": scipy.sparse.csc_matrix,
                              "dense": np.asarray}[storage](counts), obs=adata.obs.copy(), var=adata.var.copy())
    path = tmp_path / f"{storage}.h5ad"
    stored.write_h5ad(path)
    kwargs = dict(groupby="cell_type", case="T", control="B", **FAST)
    backed = anndata.read_h5ad(path, backed="r")
    try:
        got = permenrich.genes(backed, **kwargs)
    finally:
        backed.file.close()
    assert_identical(got, permenrich.genes(path, **kwargs))


def test_pseudo_sample_names_that_would_collide_are_refused(cells):
    adata, _ = cells
    adata = adata.copy()
    adata.obs["donor"] = ["x|T" if g == "B" else "x" for g in GROUPS]
    adata.obs["kind"] = ["B" if g == "B" else ("T|B" if g == "T" else "other") for g in GROUPS]
    with pytest.raises(permenrich.InputError, match=r"make the same pseudo-sample name 'x\|T\|B'.*remove '\|'"):
        permenrich.genes(adata, groupby="kind", case="B", control="rest", layer="counts", pseudobulk="donor",
                         min_cells=0, **FAST)


# ---- real single cells: scanpy's own data and tests as the reference -----------------------------
@pytest.mark.parametrize("metric, method", [("mann_whitney", "wilcoxon"), ("welch_t", "t-test")])
def test_tl_genes_on_pbmc68k_agrees_with_scanpys_rank_genes_groups(metric, method):
    """scanpy's pbmc68k_reduced (700 real PBMCs, log-normalised values in raw): each
    cell type against the rest, permenrich's per-gene statistic against scanpy's
    rank_genes_groups scores, an independent implementation: Welch's t as it is, and
    Mann-Whitney's U as scanpy's z, (U - n_A n_B/2)/sqrt(n_A n_B (n + 1)/12) without
    tie correction."""
    sc = pytest.importorskip("scanpy", reason="scanpy is the reference")
    adata = sc.datasets.pbmc68k_reduced()
    groups = ["CD19+ B", "CD56+ NK", "CD14+ Monocyte"]
    tl.genes(adata, "bulk_labels", groups=groups, use_raw=True, metric=metric, permutations=20, seed=0,
             device="cpu")
    ours = adata.uns["permenrich"]["permenrich_genes"]["results"]
    sc.tl.rank_genes_groups(adata, "bulk_labels", groups=groups, reference="rest", method=method, use_raw=True,
                            tie_correct=False, n_genes=adata.raw.n_vars)
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    for group in groups:
        theirs = sc.get.rank_genes_groups_df(adata, group=group).set_index("names")["scores"]
        mine = ours[ours.group == group].set_index("gene")["statistic"].loc[theirs.index]
        if metric == "mann_whitney":
            n_a = int((labels == group).sum())
            n_b = labels.size - n_a
            mine = (mine - n_a * n_b / 2) / np.sqrt(n_a * n_b * (n_a + n_b + 1) / 12)
        # scanpy keeps its scores as float32: agreement to its precision
        np.testing.assert_allclose(mine.to_numpy(), theirs.to_numpy(dtype=np.float64), rtol=1e-6, atol=1e-6)


def test_tl_results_of_a_group_named_with_a_slash_save_to_h5ad(cells, tmp_path):
    """scanpy's pbmc68k_reduced has 'CD4+/CD25 T Reg': a key of an h5 store may not hold a
    '/' (anndata warns, and will refuse), so the runs are a table indexed by group."""
    import warnings

    adata, _ = cells
    adata.obs["cell_type"] = np.where(GROUPS == "T", "CD4+/CD25 T Reg", GROUPS)
    tl.genes(adata, "cell_type", groups=["CD4+/CD25 T Reg"], reference="B", layer="counts", **FAST)
    path = tmp_path / "slash.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anndata's "Forward slashes will be disallowed" included
        adata.write_h5ad(path)
    stored = anndata.read_h5ad(path).uns["permenrich"]["permenrich_genes"]
    assert json.loads(stored["runs"].loc["CD4+/CD25 T Reg", "run"])["parameters"]["case"] == "CD4+/CD25 T Reg"


def test_tl_reads_group_labels_as_the_design_does(cells):
    """'T ' beside 'T' was a group of its own for tl (which then failed) and a second
    pseudo-sample per donor (two pseudoreplicates, silently); 'nan' (a scanpy astype(str)
    of missing values) was a group that failed after the others had run; duplicated
    groups= stored every row twice."""
    adata, _ = cells
    donors = np.tile([f"d{i}" for i in range(5)], N_CELLS // 5)
    labels = GROUPS.astype(object).copy()
    labels[GROUPS == "T"] = np.where(np.arange(int((GROUPS == "T").sum())) % 2, "T ", "T")
    labels[-3:] = "nan"
    tidy = GROUPS.astype(object).copy()
    tidy[-3:] = None
    messy, clean = adata.copy(), adata.copy()
    messy.obs = pd.DataFrame({"cell_type": labels, "donor": donors}, index=adata.obs_names)
    clean.obs = pd.DataFrame({"cell_type": tidy, "donor": donors}, index=adata.obs_names)
    options = dict(layer="counts", pseudobulk="donor", min_cells=0, **FAST)
    tl.genes(messy, "cell_type", groups=["T", "T", "B"], reference="Mono", **options)
    tl.genes(clean, "cell_type", groups=["T", "B"], reference="Mono", **options)
    got, expected = (a.uns["permenrich"]["permenrich_genes"] for a in (messy, clean))
    assert got["params"]["groups"] == ["T", "B"]
    assert_identical(got["results"], expected["results"])
    runs = json.loads(got["runs"].loc["T", "run"])
    assert runs["design"]["n_case"] == 5  # one pseudo-sample per donor, not two
    tl.genes(messy, "cell_type", key_added="every", **dict(options, min_cells=0))
    assert "nan" not in set(messy.uns["permenrich"]["every"]["results"].group)


@pytest.mark.parametrize("change, message", [
    (dict(key_added="run/1"), "'/' cannot be part of a key that an h5ad file keeps"),
    (dict(permutation=10), "permenrich.tl.genes: unknown option 'permutation'"),
    (dict(metric="pearson"), "metric 'pearson' correlates with a numeric phenotype"),
])
def test_tl_refuses_before_running(cells, change, message):
    adata, _ = cells
    with pytest.raises(permenrich.OptionError, match=message):
        tl.genes(adata, "cell_type", **{**FAST, **change})


def test_tl_copy_of_a_backed_anndata_is_refused_before_running(cells, tmp_path):
    adata, _ = cells
    adata.write_h5ad(tmp_path / "cells.h5ad")
    backed = anndata.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    with pytest.raises(permenrich.OptionError, match="copy=True needs an AnnData in memory"):
        tl.genes(backed, "cell_type", copy=True, **FAST)
    backed.file.close()


def test_tl_over_every_group_leaves_out_one_that_cannot_be_tested(cells, caplog):
    """One pseudo-sample left in a group (other causes than min_cells emptying it) ended
    the whole run after the other groups had been computed, and nothing was stored."""
    adata, _ = cells
    donors = np.tile([f"d{i}" for i in range(5)], N_CELLS // 5).astype(object)
    donors[GROUPS == "NK"] = "d0"  # NK: one pseudo-sample
    adata.obs["donor"] = donors
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        tl.genes(adata, "cell_type", layer="counts", pseudobulk="donor", min_cells=0, **FAST)
    store = adata.uns["permenrich"]["permenrich_genes"]
    assert set(store["results"].group) == {"T", "B", "Mono"} and "NK" in json.loads(store["params"]["skipped_groups"])
    assert "permenrich.tl.genes: group 'NK': " in caplog.text
    with pytest.raises(permenrich.InputError, match="permenrich.tl.genes: group 'NK': "):
        tl.genes(adata, "cell_type", groups=["NK"], layer="counts", pseudobulk="donor", min_cells=0, **FAST)


def test_the_counts_warning_fits_the_matrix_chosen(cells):
    """With use_raw=True already given, the warning still said 'pass ... use_raw=True'."""
    adata, _ = cells
    logged = adata.copy()
    logged.raw = anndata.AnnData(X=np.log1p(adata.layers["counts"]) + 0.5, obs=adata.obs, var=adata.var)
    design = permenrich.genes(logged, groupby="cell_type", case="T", control="B", use_raw=True,
                              normalize="log1p_cpm", **FAST).attrs["run"]["design"]
    said = [w for w in design["warnings"] if "expects raw counts" in w]
    assert said and "raw.X holds no counts: pass the layer that does" in said[0] and "use_raw=True" not in said[0]


def test_tl_stops_at_the_first_group_on_an_error_every_group_meets(cells, caplog):
    """A missing layer was reported as 'the group is left out' for every group but the
    last, which then raised (each group re-reading the data first): only a group that
    cannot be tested on its own is left out."""
    adata, _ = cells
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        with pytest.raises(permenrich.InputError, match="layer 'nothing'"):
            tl.genes(adata, "cell_type", layer="nothing", **FAST)
    assert "left out" not in caplog.text
