"""CLS files, sample sheets and the two-group design."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from permenrich.errors import InputError, OptionError, PermenrichError
from permenrich.io import (
    ExpressionData,
    design_from_phenotype,
    read_cls,
    read_expression,
    read_sample_sheet,
    two_group_design,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def expression(samples: list[str], obs: pd.DataFrame | None = None) -> ExpressionData:
    n = len(samples)
    return ExpressionData(
        values=np.arange(3 * n, dtype=float).reshape(3, n),
        gene_ids=np.array(["g1", "g2", "g3"], dtype=object),
        sample_ids=np.array(samples, dtype=object),
        source="e.gct",
        obs=obs,
    )


# --------------------------------------------------------------------------- CLS


def test_read_cls_names_and_int_labels(tmp_path: Path) -> None:
    names, labels = read_cls(write(tmp_path / "a.cls", "4 2 1\n# tumor normal\ntumor tumor normal normal\n"))
    assert names == ["tumor", "normal"] and labels == ["tumor", "tumor", "normal", "normal"]
    names, labels = read_cls(write(tmp_path / "b.cls", "5 2 1\r\n#\tA\tB\r\n0\t1 1 0 1\r\n\r\n"))
    assert names == ["A", "B"] and labels == ["A", "B", "B", "A", "B"]


def test_cls_numeric_names_are_names_not_indices(tmp_path: Path) -> None:
    names, labels = read_cls(write(tmp_path / "n.cls", "4 2 1\n# 1 0\n0 0 1 1\n"))
    assert names == ["1", "0"] and labels == ["0", "0", "1", "1"]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("#numeric\n#age\n1 2 3\n", ["line 1", "#numeric", "continuous", "two classes"]),
        ("4 2\n# A B\nA A B B\n", ["line 1", "n_samples n_classes 1"]),
        ("4 2 1\nA B\nA A B B\n", ["line 2", "'#'"]),
        ("4 3 1\n# A B\nA A B B\n", ["line 2", "2 class names", "3 classes"]),
        ("5 2 1\n# A B\nA A B B\n", ["line 3", "4 labels", "5 samples"]),
        ("4 2 1\n# A B\nA A B C\n", ["line 3", "label 4", "'C'", "0..1"]),
        ("4 2 1\n# A B\nA A 0 2\n", ["line 3", "label 4", "'2'"]),
        ("4 3 1\n# A B C\nA A B B\n", ["declares 3 classes", "use 2", "'C'"]),
        ("4 2 1\n# A B\nA A\nB B\n", ["line 4", "extra line"]),
        ("4 2 1\n# A A\nA A A A\n", ["line 2", "'A' is listed twice"]),
        ("4 2 1\n", ["1 non-blank lines"]),
    ],
)
def test_cls_bad_input(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        read_cls(write(tmp_path / "bad.cls", text))
    message = str(info.value)
    assert "bad.cls" in message
    for fragment in fragments:
        assert fragment in message


# ------------------------------------------------------------------ two groups


def test_default_case_is_first_class() -> None:
    design = two_group_design(["B", "A", "A", "B", "B"], case=None, control=None)
    assert (design.case, design.control) == ("B", "A")
    np.testing.assert_array_equal(design.is_case, [True, False, False, True, True])
    assert design.keep.all() and (design.n_case, design.n_control) == (3, 2)
    ordered = two_group_design(["B", "A", "A", "B"], case=None, control=None, class_order=["A", "B"])
    assert ordered.case == "A"


def test_one_side_given_picks_the_other() -> None:
    assert two_group_design(["x", "y", "x", "y"], case="y", control=None).control == "x"
    assert two_group_design(["x", "y", "x", "y"], case=None, control="y").case == "x"


def test_samples_outside_the_two_classes_are_left_out() -> None:
    design = two_group_design(["a", "b", "c", "a", "b", "c", ""], case="c", control="a")
    np.testing.assert_array_equal(design.keep, [True, False, True, True, False, True, False])
    np.testing.assert_array_equal(design.is_case, [False, True, False, True])
    assert design.is_case.dtype == bool and design.keep.dtype == bool
    assert design.excluded == {"b": 2}


def test_classes_spelled_like_a_compared_one_are_warned_about(caplog) -> None:
    """'all' beside 'ALL' is a typo more often than a class: left out (or put in 'rest')
    with a warning, not quietly; other classes are left out as asked."""
    import logging

    labels = ["ALL"] * 3 + ["AML"] * 3 + ["all", "A ML", "T-cell", "T-cell"]
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        design = two_group_design(labels, case="ALL", control="AML")
    assert design.excluded == {"all": 1, "A ML": 1, "T-cell": 2} and design.keep.sum() == 6
    assert ("classes 'all' (1 sample), 'A ML' (1 sample) are spelled like the compared 'ALL' and 'AML' but for case "
            "or spacing, and are left out; correct the label if it is the same class") in caplog.text
    assert "T-cell" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        rest = two_group_design(labels, case="ALL", control="rest")
    assert rest.n_case == 3 and rest.n_control == 7
    assert "class 'all' (1 sample) is spelled like the compared 'ALL' but for case or spacing, and is counted in " \
           "'rest'" in caplog.text


@pytest.mark.parametrize(
    ("labels", "case", "control", "error", "fragments"),
    [
        (["a", "b", "c", "a", "b", "c"], None, None, OptionError, ["3 classes", "'a' (2)", "case=", "control="]),
        (["a", "b", "c", "a", "b", "c"], "a", None, OptionError, ["case= and control="]),
        (["a", "b", "a", "b"], "z", None, OptionError, ["case='z'", "'a' (2), 'b' (2)"]),
        (["a", "b", "a", "b"], "a", "a", OptionError, ["both 'a'"]),
        (["a", "a", "a"], None, None, InputError, ["1 class", "two classes"]),
        (["a", "b", "a", "a"], None, None, InputError, ["class 'b' has 1 sample", "at least 2"]),
    ],
)
def test_two_group_errors(labels, case, control, error, fragments) -> None:
    with pytest.raises(error) as info:
        two_group_design(labels, case=case, control=control, source="lab.cls")
    message = str(info.value)
    assert "lab.cls" in message
    for fragment in fragments:
        assert fragment in message


# ---------------------------------------------------------------- sample sheets


def test_sample_sheet_matched_by_name(tmp_path: Path) -> None:
    sheet = write(
        tmp_path / "s.tsv",
        "sample\tgroup\tbatch\nS3\tctl\t1\nS1\ttrt\t1\nextra\ttrt\t2\nS2\ttrt\t2\nS4\tctl\t2\nS5\tNA\t1\n",
    )
    labels = read_sample_sheet(sheet, column="group")
    assert labels.loc["S1"] == "trt" and labels.loc["S5"] == ""
    design = design_from_phenotype(expression(["S1", "S2", "S3", "S4", "S5"]), sheet, groupby="group", case="trt")
    np.testing.assert_array_equal(design.keep, [True, True, True, True, False])
    np.testing.assert_array_equal(design.is_case, [True, True, False, False])
    assert design.source.endswith("s.tsv")


def test_sample_sheet_csv_single_label_column_and_sample_column(tmp_path: Path) -> None:
    sheet = write(tmp_path / "s.csv", "group,id\nA,s1\nB,s2\n")
    labels = read_sample_sheet(sheet, sample_column="id")
    assert labels.to_dict() == {"s1": "A", "s2": "B"}
    r_style = write(tmp_path / "r.tsv", "group\ns1\tA\ns2\tB\n")  # no header cell for the ids
    assert read_sample_sheet(r_style).to_dict() == {"s1": "A", "s2": "B"}


def test_sample_sheet_errors(tmp_path: Path) -> None:
    sheet = write(tmp_path / "s.tsv", "sample\tgroup\tbatch\nS1\ta\t1\nS2\tb\t1\n")
    with pytest.raises(InputError, match="s.tsv.*several label columns.*'group', 'batch'.*groupby="):
        read_sample_sheet(sheet)
    with pytest.raises(InputError, match="s.tsv.*column 'tissue' not found.*'sample', 'group', 'batch'"):
        read_sample_sheet(sheet, column="tissue")
    with pytest.raises(InputError, match="s.tsv.*sample column 'id' not found"):
        read_sample_sheet(sheet, column="group", sample_column="id")
    dup = write(tmp_path / "d.tsv", "sample\tgroup\nS1\ta\nS2\tb\nS1\tb\n")
    with pytest.raises(InputError, match="d.tsv.*'S1' appears on lines 2 and 4"):
        read_sample_sheet(dup)
    with pytest.raises(InputError, match=r"s.tsv.*2 of 3 samples of e.gct have no label.*'S3', 'S4'"):
        design_from_phenotype(expression(["S1", "S3", "S4"]), sheet, groupby="group")


# ------------------------------------------------------------- other sources


def test_design_from_cls_count_mismatch(tmp_path: Path) -> None:
    cls = write(tmp_path / "p.cls", "4 2 1\n# A B\nA A B B\n")
    with pytest.raises(InputError) as info:
        design_from_phenotype(expression(["s1", "s2", "s3"]), cls)
    message = str(info.value)
    assert "p.cls" in message and "e.gct" in message and "4 labels" in message and "3 samples" in message


def test_design_from_sequence_series_categorical() -> None:
    expr = expression(["s1", "s2", "s3", "s4"])
    assert design_from_phenotype(expr, ["b", "a", "b", "a"]).case == "b"
    categorical = pd.Categorical(["b", "a", "b", "a"], categories=["a", "b"])
    assert design_from_phenotype(expr, categorical).case == "a"
    series = pd.Series({"s4": "y", "s3": "y", "s2": "x", "s1": "x"})
    design = design_from_phenotype(expr, series, case="y")
    np.testing.assert_array_equal(design.is_case, [False, False, True, True])
    with pytest.raises(InputError, match="3 labels given but e.gct has 4 samples"):
        design_from_phenotype(expr, ["a", "b", "a"])
    with pytest.raises(PermenrichError, match="no phenotype given"):
        design_from_phenotype(expr, None)


def test_design_from_obs_column() -> None:
    obs = pd.DataFrame(
        {"cond": pd.Categorical(["ko", "wt", "ko", "wt"], categories=["wt", "ko"])},
        index=["s1", "s2", "s3", "s4"],
    )
    expr = expression(["s1", "s2", "s3", "s4"], obs=obs)
    design = design_from_phenotype(expr, None, groupby="cond")
    assert (design.case, design.control) == ("wt", "ko")
    with pytest.raises(InputError, match="obs has no column 'tissue'.*'cond'"):
        design_from_phenotype(expr, None, groupby="tissue")
    with pytest.raises(InputError, match="needs per-sample annotations"):
        design_from_phenotype(expression(["s1", "s2"]), None, groupby="cond")


def test_design_from_h5ad_obs(tmp_path: Path) -> None:
    anndata = pytest.importorskip("anndata")
    obs = pd.DataFrame({"group": ["a", "b", "a", "b"]}, index=["c1", "c2", "c3", "c4"])
    anndata.AnnData(X=np.ones((4, 3), dtype=np.float32), obs=obs).write_h5ad(tmp_path / "x.h5ad")
    expr = read_expression(tmp_path / "x.h5ad")
    design = design_from_phenotype(expr, None, groupby="group", case="b")
    np.testing.assert_array_equal(design.is_case, [False, True, False, True])


def test_real_leukemia_cls(shared_data: Path) -> None:
    expr = read_expression(shared_data / "leukemia" / "Leukemia_hgu95av2.gct")
    design = design_from_phenotype(expr, shared_data / "leukemia" / "Leukemia.cls")
    assert (design.case, design.control) == ("ALL", "AML")
    assert (design.n_case, design.n_control) == (24, 24)
    assert design.keep.all() and design.is_case[:24].all() and not design.is_case[24:].any()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("dup.tsv", "sample\tgroup\tgroup\nS0\tA\tX\nS1\tB\tY\n",
     "dup.tsv: line 1: column 'group' appears twice (columns 2 and 3); name each column once"),
    ("semi.csv", "sample;group\nS0;A\nS1;B\n",
     "semi.csv: line 1: the header is one column ('sample;group'); this sample sheet seems to separate its columns "
     "with semicolons, where its suffix says commas: separate them with tabs (.tsv, .txt) or commas (.csv)"),
    ("spaces.tsv", "\nsample  group\nS0  A\n", "spaces.tsv: line 2: the header is one column ('sample  group'); this "
     "sample sheet seems to separate its columns with spaces, where its suffix says tabs"),
])
def test_sheet_headers_that_would_be_misread(tmp_path: Path, name: str, text: str, message: str) -> None:
    """A second 'group' column was renamed 'group.1' by pandas and the first used,
    silently; a sheet of another separator said only that 'group' was not found."""
    with pytest.raises(InputError) as info:
        read_sample_sheet(write(tmp_path / name, text), column="group")
    assert str(info.value).startswith(f"{tmp_path}/{message}")


def test_sheets_whose_ids_are_not_in_the_first_column_say_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"sample 'A' appears on lines 2 and 3; each sample needs one row \(the "
                                         r"sheet's sample ids are its column 'group'\)"):
        read_sample_sheet(write(tmp_path / "g.tsv", "group\tsample\nA\tS0\nA\tS1\n"), column="sample")
    expr = ExpressionData(values=np.zeros((2, 2)), gene_ids=np.array(["g1", "g2"], dtype=object),
                          sample_ids=np.array(["S0", "S1"], dtype=object), source="m.tsv")
    sheet = write(tmp_path / "i.tsv", "id\tsample\tgroup\nx0\tS0\tA\nx1\tS1\tB\n")
    with pytest.raises(InputError, match=r"have no label .*\(the sheet's sample ids are its column 'id'\)$"):
        design_from_phenotype(expr, str(sheet), groupby="group")


def test_r_style_sheet_whose_one_label_column_has_a_space_is_read(tmp_path: Path) -> None:
    """write.table's header (one name short of the rows) of 'disease state' was taken for
    a one-column header of space-separated names."""
    sheet = read_sample_sheet(write(tmp_path / "r.tsv", "disease state\nS0\tA\nS1\tB\n"), column="disease state")
    assert list(sheet) == ["A", "B"] and list(sheet.index) == ["S0", "S1"]
