"""Per-contrast output files: any contrast name (``CD4+/CD25 T Reg``, ``results``) gets
its own safe file, the real name stays in the tables and run.json maps names to files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

anndata = pytest.importorskip("anndata", reason="the cells are an h5ad file: pip install anndata")

from permenrich.api import read_contrasts  # noqa: E402
from permenrich.cli import main  # noqa: E402
from permenrich.errors import InputError  # noqa: E402
from permenrich.modes.contrasts import contrast_file_names  # noqa: E402
from _tables import assert_identical

TREG = "CD4+/CD25 T Reg"  # as in scanpy's pbmc68k_reduced


@pytest.fixture()
def cells(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    cell_type = np.array([TREG, "B", "results"] * 12)
    values = rng.normal(size=(cell_type.size, 30)).astype(np.float32)
    values[cell_type == TREG, :5] += 2.0
    obs = pd.DataFrame({"cell_type": cell_type}, index=[f"c{i}" for i in range(cell_type.size)])
    path = tmp_path / "cells.h5ad"
    anndata.AnnData(X=values, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(30)])).write_h5ad(path)
    return path


def test_file_names_are_safe_distinct_and_keep_clear_of_the_run_files() -> None:
    names = [f"{TREG}_vs_rest", "results", "RUN", "a b", "a/b", "A_B", "..", ".hidden", "x" * 300, "-", "ü"]
    files = contrast_file_names(names)
    assert files[f"{TREG}_vs_rest"] == "CD4_CD25_T_Reg_vs_rest.tsv"
    assert files["results"] == "results-2.tsv" and files["RUN"] == "RUN-2.tsv"
    assert [files[n] for n in ("a b", "a/b", "A_B")] == ["a_b.tsv", "a_b-2.tsv", "A_B-3.tsv"]
    assert files[".."] == "contrast.tsv" and files["-"] == "contrast-2.tsv" and files["ü"] == "contrast-3.tsv"
    assert files[".hidden"] == "hidden.tsv" and files["x" * 300] == "x" * 100 + ".tsv"
    stems = [f.lower() for f in files.values()]
    assert len(set(stems)) == len(names) and not {"results.tsv", "run.tsv"} & set(stems)


def test_one_vs_rest_with_a_slash_in_a_cell_type(cells: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    status = main(["genes", "--expr", str(cells), "--one-vs-rest", "cell_type", "--permutations", "20",
                   "--out", str(out), "--quiet"])
    assert status == 0, capsys.readouterr().err
    assert "3 contrast tables" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["contrast_files"] == {"B_vs_rest": "B_vs_rest.tsv", f"{TREG}_vs_rest": "CD4_CD25_T_Reg_vs_rest.tsv",
                                     "results_vs_rest": "results_vs_rest.tsv"}
    assert sorted(p.name for p in out.iterdir()) == sorted([*run["contrast_files"].values(), "results.tsv",
                                                           "run.json"])
    combined = pd.read_csv(out / "results.tsv", sep="\t")
    treg = pd.read_csv(out / "CD4_CD25_T_Reg_vs_rest.tsv", sep="\t")
    assert f"{TREG}_vs_rest" in set(combined.contrast) and f"{TREG}_vs_rest" in run["contrasts"]
    assert_identical(
        combined[combined.contrast == f"{TREG}_vs_rest"].drop(columns="contrast").reset_index(drop=True), treg)


def test_contrasts_named_results_and_run_do_not_overwrite_the_run_files(cells: Path, tmp_path: Path,
                                                                        capsys) -> None:
    spec = tmp_path / "contrasts.tsv"
    pd.DataFrame({"name": ["results", "run", TREG], "groupby": "cell_type", "case": [TREG, "B", TREG],
                  "control": ["rest", "results", "B"]}).to_csv(spec, sep="\t", index=False)
    out = tmp_path / "out"
    status = main(["genes", "--expr", str(cells), "--contrasts", str(spec), "--permutations", "20",
                   "--out", str(out), "--quiet"])
    assert status == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["contrast_files"] == {"results": "results-2.tsv", "run": "run-2.tsv",
                                     TREG: "CD4_CD25_T_Reg.tsv"}
    assert run["command"] == "genes (contrasts)"
    combined = pd.read_csv(out / "results.tsv", sep="\t")
    assert list(dict.fromkeys(combined.contrast)) == ["results", "run", TREG]
    assert len(pd.read_csv(out / "results-2.tsv", sep="\t")) == 30


def test_contrast_names_may_hold_any_text_but_not_be_empty(tmp_path: Path) -> None:
    spec = pd.DataFrame({"name": [TREG, "x"], "groupby": "g", "case": ["a", "b"], "control": "rest"})
    assert list(read_contrasts(spec).name) == [TREG, "x"]
    with pytest.raises(InputError, match=r"<contrasts>: contrast 2 has no name"):
        read_contrasts(spec.assign(name=[TREG, "  "]))
    path = tmp_path / "c.tsv"
    path.write_text("name\tgroupby\tcase\tcontrol\n\tg\ta\trest\n")
    with pytest.raises(InputError, match=r"c.tsv: line 2: the 'name' cell is empty"):
        read_contrasts(path)
    # a '#' inside a cell is text (a level 'CD4 #2'); only a line starting with '#' is a comment
    path.write_text("# contrasts of the #1 screen\nname\tgroupby\tcase\tcontrol\nCD4 #2 vs rest\tg\tCD4 #2\trest\n")
    assert read_contrasts(path).iloc[0].tolist() == ["CD4 #2 vs rest", "g", "CD4 #2", "rest"]
    path.write_text("name\tgroupby\tcase\tcontrol\nx\tg\ta\trest\ny\tg\tb\tb\n")
    with pytest.raises(InputError, match=r"c.tsv: line 3: contrast 'y' compares 'b' with itself"):
        read_contrasts(path)
    path.write_text("name\tgroupby\tcase\tcontrol\nx\tg\ta\trest\textra\n")
    with pytest.raises(InputError, match=r"c.tsv: a row has more cells than the header"):
        read_contrasts(path)
    # notes beside the contrasts, and a gzipped table, are read as before
    import gzip

    zipped = tmp_path / "c.tsv.gz"
    zipped.write_bytes(gzip.compress(b"name\tgroupby\tcase\tcontrol\tnotes\nx\tg\ta\trest\tfirst screen\n"))
    assert read_contrasts(zipped).iloc[0].tolist() == ["x", "g", "a", "rest"]


@pytest.mark.parametrize("content,expected", [
    (b"", "contrasts.tsv: cannot read the contrasts table (empty file)"),
    (b"\xff\xfe\x00bad\n", "contrasts.tsv: the file is UTF-16 text (e.g. Excel's 'Unicode text'); save it as UTF-8")])
def test_unreadable_contrast_file_is_one_line(cells: Path, tmp_path: Path, capsys, content, expected) -> None:
    spec = tmp_path / "contrasts.tsv"
    spec.write_bytes(content)
    status = main(["genes", "--expr", str(cells), "--contrasts", str(spec), "--out", str(tmp_path / "out"),
                   "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0]


def test_a_contrast_of_a_level_without_samples_names_its_line_and_the_levels(cells: Path, tmp_path: Path,
                                                                             capsys) -> None:
    spec = tmp_path / "c.tsv"
    spec.write_text("name\tgroupby\tcase\tcontrol\n# a comment line\nok\tcell_type\tB\trest\n"
                    "bad\tcell_type\tMono\trest\nalso\tcell_type\tB\tNK\n")
    status = main(["genes", "--expr", str(cells), "--contrasts", str(spec), "--out", str(tmp_path / "out"),
                   "--quiet", "--permutations", "20"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1
    assert f"{spec}: line 4: contrast 'bad': level 'Mono' of 'cell_type' has no samples; its levels are " \
           f"'B', '{TREG}', 'results'" in lines[0]
    assert not (tmp_path / "out").exists()
    spec.write_text("name\tgroupby\tcase\tcontrol\nalso\tcell_type\tB\tNK\n")  # a control without samples
    assert main(["genes", "--expr", str(cells), "--contrasts", str(spec), "--out", str(tmp_path / "out"),
                 "--quiet", "--permutations", "20"]) == 2
    assert f"{spec}: line 2: contrast 'also': level 'NK'" in capsys.readouterr().err


def test_contrasts_on_a_dataframe_take_strata_from_the_sample_sheet() -> None:
    """The labels alone sent each contrast's run to the matrix's obs for strata=, which a
    DataFrame has none of: refused, with a sheet given. The same table as from an AnnData
    whose obs is that sheet."""
    rng = np.random.default_rng(0)
    cells, genes = [f"c{i}" for i in range(40)], [f"G{i}" for i in range(30)]
    values = rng.poisson(4, size=(40, 30)).astype(float)
    sheet = pd.DataFrame({"group": np.array(["T", "B", "NK"])[np.arange(40) % 3],
                          "batch": np.where(np.arange(40) < 20, "b1", "b2")}, index=cells)
    kwargs = dict(mode="genes", one_vs_rest="group", strata="batch", permutations=50, seed=1, device="cpu")
    import permenrich

    from_frame = permenrich.contrasts(pd.DataFrame(values.T, index=genes, columns=cells), None, None,
                                      phenotype=sheet, **kwargs)
    from_anndata = permenrich.contrasts(anndata.AnnData(X=values, obs=sheet, var=pd.DataFrame(index=genes)), None,
                                        None, **kwargs)
    assert_identical(from_frame, from_anndata)
    assert all(run["permutation_plan"]["strata"] == 2 for run in from_frame.attrs["run"]["contrasts"].values())
