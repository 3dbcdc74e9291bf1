"""``min_cells=`` / ``--min-cells``: pseudo-samples (donor x group) of too few cells are
dropped before the test, with one design warning; the result equals the same analysis of
the pseudobulk matrix without them."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.cli import main
from _tables import assert_identical

anndata = pytest.importorskip("anndata")

N_GENES = 120
DONORS = [f"d{i}" for i in range(6)]
#: Cells per donor and cell type: d5's T cells (4) and d4's B cells (3) are too few for
#: the default min_cells=10.
CELLS = {"T": [15, 15, 15, 15, 15, 4], "B": [12, 12, 12, 12, 3, 12]}
SMALL = ["d4|B", "d5|T"]
FAST = dict(groupby="cell_type", case="T", control="B", permutations=200, seed=5, device="cpu")


@pytest.fixture
def cells():
    rng = np.random.default_rng(11)
    donor, cell_type = [], []
    for kind, counts in CELLS.items():
        for name, n in zip(DONORS, counts):
            donor += [name] * n
            cell_type += [kind] * n
    order = rng.permutation(len(donor))  # cells of one pseudo-sample are not contiguous
    obs = pd.DataFrame({"donor": np.array(donor)[order], "cell_type": np.array(cell_type)[order]},
                       index=[f"c{i}" for i in range(len(donor))])
    counts = rng.poisson(5, size=(len(obs), N_GENES)).astype(float)
    counts[(obs.cell_type == "T").to_numpy(), :10] += 3
    return anndata.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(N_GENES)]))


def _by_hand(adata, drop):
    """The pseudobulk sums (genes x donor|cell_type, in permenrich's sorted order) and
    their labels, without the samples ``drop``."""
    frame = pd.DataFrame(adata.X, columns=adata.var_names)
    keys = adata.obs.donor.to_numpy() + "|" + adata.obs.cell_type.to_numpy()
    sums = frame.groupby(keys, sort=True).sum().drop(index=drop)
    return sums.T, [name.split("|")[1] for name in sums.index]


def _sets():
    return {"UP": [f"G{i}" for i in range(10)], "OTHER": [f"G{i}" for i in range(40, 60)]}


def test_small_pseudo_samples_are_dropped_with_one_warning(cells, caplog):
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        result = permenrich.genes(cells, pseudobulk="donor", **FAST)
    design = result.attrs["run"]["design"]
    assert design["pseudobulk"]["dropped"] == SMALL and design["pseudobulk"]["samples"] == 10
    assert design["pseudobulk"]["min_cells"] == 10 and design["pseudobulk"]["cells_per_sample_min"] == 12
    warned = [w for w in design["warnings"] if "pseudo-samples with fewer than" in w]
    assert len(warned) == 1
    assert "dropped 2 of 12 pseudo-samples with fewer than min_cells=10 cells: d4|B (3), d5|T (4)" in warned[0]
    assert sum("dropped 2 of 12" in r.getMessage() for r in caplog.records) == 1
    assert design["n_case"] == 5 and design["n_control"] == 5


def test_min_cells_zero_keeps_every_pseudo_sample(cells):
    design = permenrich.genes(cells, pseudobulk="donor", min_cells=0, **FAST).attrs["run"]["design"]
    assert design["pseudobulk"]["samples"] == 12 and "dropped" not in design["pseudobulk"]
    assert not [w for w in design.get("warnings", []) if "pseudo-samples with fewer than" in w]


@pytest.mark.parametrize("min_cells, drop", [(10, SMALL), (0, [])])
def test_results_equal_the_pseudobulk_matrix_without_them(cells, min_cells, drop):
    matrix, labels = _by_hand(cells, drop)
    options = {k: v for k, v in FAST.items() if k != "groupby"}
    got = permenrich.genes(cells, pseudobulk="donor", min_cells=min_cells, **FAST)
    assert_identical(got, permenrich.genes(matrix, labels, **options))
    got = permenrich.gsea(cells, None, _sets(), pseudobulk="donor", min_cells=min_cells, min_size=5, **FAST)
    expected = permenrich.gsea(matrix, labels, _sets(), min_size=5, **options)
    assert_identical(got, expected)


def test_emptied_class_and_bad_values_are_one_line_errors(cells):
    message = r"min_cells=13 dropped every pseudo-sample of cell_type 'B'"
    with pytest.raises(permenrich.InputError, match=message) as error:
        permenrich.genes(cells, pseudobulk="donor", min_cells=13, **FAST)
    assert "\n" not in str(error.value)
    with pytest.raises(permenrich.InputError, match=r"every pseudo-sample has fewer than min_cells=16 cells"):
        permenrich.genes(cells, pseudobulk="donor", min_cells=16, **FAST)
    for bad in (-1, 2.5, True):
        with pytest.raises(permenrich.OptionError, match=r"min_cells= must be a non-negative integer"):
            permenrich.genes(cells, pseudobulk="donor", min_cells=bad, **FAST)


def test_cli_min_cells(cells, tmp_path, capsys):
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)
    common = ["genes", "--expr", path, "--groupby", "cell_type", "--case", "T", "--control", "B",
              "--pseudobulk", "donor", "--permutations", 100, "--seed", 1, "--device", "cpu", "--quiet"]
    assert main([str(a) for a in [*common, "--min-cells", 4, "--out", tmp_path / "out"]]) == 0
    design = json.loads((tmp_path / "out" / "run.json").read_text())["design"]
    assert design["pseudobulk"]["dropped"] == ["d4|B"] and design["pseudobulk"]["min_cells"] == 4
    assert any("fewer than --min-cells 4 cells: d4|B (3)" in w for w in design["warnings"])
    assert main([str(a) for a in [*common, "--min-cells", 13, "--out", tmp_path / "bad"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "--min-cells 13 dropped every pseudo-sample of cell_type 'B'" in err and "\n" not in err


def test_tl_over_every_group_leaves_out_a_group_too_rare_to_pseudobulk(cells, caplog):
    """permenrich.tl over every group: a rare cell type whose pseudo-samples min_cells
    drops entirely is left out with a warning (and named in params), the other groups'
    tables are kept (the whole run was lost); asked for by name, it still stops."""
    from permenrich import tl

    rare = cells[:20].copy()
    rare.obs["cell_type"] = "pDC"
    rare.obs_names = [f"r{i}" for i in range(rare.n_obs)]
    rare.obs["donor"] = [DONORS[i % 6] for i in range(rare.n_obs)]  # 3-4 cells per donor
    adata = anndata.concat([cells, rare])
    options = dict(pseudobulk="donor", permutations=50, seed=5, device="cpu")
    with caplog.at_level("WARNING", logger="permenrich"):
        tl.genes(adata, "cell_type", **options)
    store = adata.uns["permenrich"]["permenrich_genes"]
    assert set(store["results"].group) == {"B", "T"} and store["params"]["groups"] == ["B", "T"]
    assert "pDC" in store["params"]["skipped_groups"]
    assert "group 'pDC': min_cells=10 dropped every pseudo-sample" in caplog.text and "the group is left out" in caplog.text
    with pytest.raises(permenrich.InputError, match=r"dropped every pseudo-sample of cell_type 'pDC'"):
        tl.genes(adata, "cell_type", groups=["pDC"], **options)


def test_only_the_compared_groups_pseudo_samples_are_warned_about(cells):
    """A group outside the comparison (NK, here d4's three B cells renamed) is not
    analysed: its dropped pseudo-sample is recorded but not warned about."""
    obs = cells.obs.copy()
    obs["cell_type"] = np.where((obs.donor == "d4") & (obs.cell_type == "B"), "NK", obs.cell_type)
    cells.obs = obs
    design = permenrich.genes(cells, pseudobulk="donor", **FAST).attrs["run"]["design"]
    assert design["pseudobulk"]["dropped"] == ["d4|NK", "d5|T"]
    warned = [w for w in design["warnings"] if "pseudo-samples with fewer than" in w]
    assert len(warned) == 1 and warned[0].endswith("dropped 1 of 12 pseudo-samples with fewer than min_cells=10 "
                                                   "cells: d5|T (4)")
    # against the rest every group is analysed, so each dropped one is said
    rest = permenrich.genes(cells, pseudobulk="donor", **{**FAST, "control": "rest"}).attrs["run"]["design"]
    assert any("dropped 2 of 12" in w for w in rest["warnings"])


def test_unnormalised_sums_of_unequal_pseudo_samples_are_warned_about(cells):
    """Summed pseudo-samples grow with their numbers of cells: without normalisation the
    cell counts decide the test (iid counts, 4x rarer cells in one group: every gene
    'significant'), and nothing said so."""
    def warned(**options):
        design = permenrich.genes(cells, pseudobulk="donor", **FAST, **options).attrs["run"]["design"]
        return [w for w in design.get("warnings", []) if "not normalised" in w]

    assert "summed over 12 to 15 cells and not normalised" in warned()[0]
    assert not warned(normalize="log1p_cpm") and not warned(pseudobulk_method="mean")


def test_contrasts_refuse_min_cells_without_pseudobulk_and_keep_covariates_through_it(cells):
    """contrasts() missed both: min_cells without pseudobulk ran (ignored), and covariates
    in obs were lost by its pseudobulk ('not in obs') while genes() kept them."""
    spec = pd.DataFrame({"name": ["tb"], "groupby": ["cell_type"], "case": ["T"], "control": ["B"]})
    with pytest.raises(permenrich.OptionError, match="min_cells=3 drops small pseudo-samples, and this run makes none"):
        permenrich.contrasts(cells, spec, mode="genes", min_cells=3, permutations=20, device="cpu")
    donor_age = {d: 30.0 + 7 * i for i, d in enumerate(DONORS)}
    cells.obs["age"] = cells.obs.donor.map(donor_age)
    options = dict(pseudobulk="donor", normalize="log1p_cpm", covariates=["age"], metric="student_t", min_cells=0,
                   permutations=50, seed=2, device="cpu")
    table = permenrich.contrasts(cells, spec, mode="genes", **options).attrs["per_contrast"]["tb"]
    alone = permenrich.genes(cells, groupby="cell_type", case="T", control="B", **options)
    table.attrs, alone.attrs = {}, {}
    assert_identical(table, alone)
