"""RNK reader (pre-ranked lists) and the plain gene-list reader."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from permenrich.errors import InputError, OptionError
from permenrich.io.genelist import read_gene_list
from permenrich.io.rnk import RankedList, read_rnk


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- happy paths


def test_read_rnk_plain(tmp_path: Path) -> None:
    ranked = read_rnk(write(tmp_path / "a.rnk", "TP53\t2.5\nMYC\t-1\nEGFR\t1e-3\n"))
    assert isinstance(ranked, RankedList)
    assert ranked.gene_ids.tolist() == ["TP53", "MYC", "EGFR"]
    assert ranked.gene_ids.dtype == object
    assert ranked.scores.dtype == np.float64
    np.testing.assert_array_equal(ranked.scores, [2.5, -1.0, 1e-3])
    assert ranked.source == str(tmp_path / "a.rnk")
    assert ranked.n_genes == 3


@pytest.mark.parametrize("header", ["Name\tRank", "gene\tscore", "GeneID\tlogFC", "gene_symbol\tlogFC"])
def test_header_skipped_with_a_warning(tmp_path: Path, header: str, caplog: pytest.LogCaptureFixture) -> None:
    """A skipped header used to be an INFO line, invisible by default: now a WARNING on
    the package logger naming the file and the line."""
    path = write(tmp_path / "h.rnk", f"# comment\n{header}\nA\t1\nB\t2\n")
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        ranked = read_rnk(path)
    assert ranked.gene_ids.tolist() == ["A", "B"]
    (record,) = [r for r in caplog.records if "header" in r.message]
    assert record.levelno == logging.WARNING and record.name.startswith("permenrich.")
    assert record.getMessage().startswith(f"{path}: line 2 {header!r} taken as a header and skipped")


def test_comments_blank_lines_crlf_trailing_tabs(tmp_path: Path) -> None:
    text = "# made by hand\n\nA\t1.5\r\n# middle comment\nB\t-2\t\t\r\n\n  \nC\t 3 \n"
    ranked = read_rnk(write(tmp_path / "c.rnk", text))
    assert ranked.gene_ids.tolist() == ["A", "B", "C"]
    np.testing.assert_array_equal(ranked.scores, [1.5, -2.0, 3.0])


def test_gz_and_csv(tmp_path: Path) -> None:
    path = tmp_path / "a.rnk.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("A\t1\nB\t2\n")
    assert read_rnk(path).gene_ids.tolist() == ["A", "B"]
    csv = read_rnk(write(tmp_path / "a.csv", '"gene","score"\n"A","1.5"\nB,2\n'))
    assert csv.gene_ids.tolist() == ["A", "B"]
    np.testing.assert_array_equal(csv.scores, [1.5, 2.0])


def test_series_and_dataframe() -> None:
    series = pd.Series([2.0, "NA", "-1"], index=["A", "B", "C"], dtype=object)
    before = series.copy()
    ranked = read_rnk(series)
    assert ranked.gene_ids.tolist() == ["A", "C"]
    np.testing.assert_array_equal(ranked.scores, [2.0, -1.0])
    assert ranked.source == "<Series>"
    pd.testing.assert_series_equal(series, before)  # the caller's object is untouched

    frame = pd.DataFrame({"gene": ["X", "Y"], "t": [1, 3]}, index=[10, 20])
    ranked = read_rnk(frame)
    assert ranked.gene_ids.tolist() == ["X", "Y"]
    np.testing.assert_array_equal(ranked.scores, [1.0, 3.0])
    assert ranked.source == "<DataFrame>"


def test_nan_skipped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "A\t1\nB\tNA\nC\t\nD\tnan\nE\tNaN\nF\t2\n"
    with caplog.at_level(logging.WARNING, logger="permenrich.io.rnk"):
        ranked = read_rnk(write(tmp_path / "n.rnk", text))
    assert ranked.gene_ids.tolist() == ["A", "F"]
    assert any("skipped 4 genes" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("mean", [2.0, 5.0]), ("max", [3.0, 5.0]), ("min", [1.0, 5.0]), ("first", [1.0, 5.0])],
)
def test_duplicates_collapsed(
    tmp_path: Path, method: str, expected: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    text = "A\t1\nB\t5\nA\t3\nA\t2\n"
    with caplog.at_level(logging.WARNING, logger="permenrich.io.rnk"):
        ranked = read_rnk(write(tmp_path / "d.rnk", text), duplicates=method)  # type: ignore[arg-type]
    assert ranked.gene_ids.tolist() == ["A", "B"]
    np.testing.assert_array_equal(ranked.scores, expected)
    assert any("1 gene ids appear more than once (3 lines)" in r.message for r in caplog.records)


def test_large_file(tmp_path: Path) -> None:
    # A speed sanity check without timing: 50 000 lines through the vectorised path.
    rng = np.random.default_rng(0)
    scores = rng.normal(size=50_000)
    path = tmp_path / "big.rnk"
    path.write_text("Name\tRank\n" + "".join(f"G{i}\t{float(s)!r}\n" for i, s in enumerate(scores)))
    ranked = read_rnk(path)
    assert ranked.n_genes == 50_000
    assert ranked.gene_ids[-1] == "G49999"
    np.testing.assert_array_equal(ranked.scores, scores)


def test_real_gsea_rnk(shared_data: Path) -> None:
    path = shared_data / "reference" / "gsea_java_preranked" / "gsea_data.gsea_data.rnk"
    ranked = read_rnk(path)
    assert ranked.n_genes == 694
    assert ranked.gene_ids[:3].tolist() == ["CTLA2B", "SCARA3", "LOC100044683"]
    np.testing.assert_allclose(ranked.scores[:2], [2.5024824, 2.0955777])
    assert ranked.gene_ids[-1] == "RUNX1T1"
    assert np.isfinite(ranked.scores).all()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("A\t1\nB 2\n", ["line 2", "1 field", "spaces"]),
        ("A\t1\n\nB\t2\t3\n", ["line 3", "3 fields", "expected 2"]),
        ("A\t1\nB\n", ["line 2", "1 field"]),
        ("A\t1\nB,2\n", ["line 2", "comma"]),
        ("# c\nA\t1\nB\tabc\n", ["line 3", "column 2", "'abc'"]),
        ("A\t1\nB\t1,5\n", ["line 2", "column 2", "'1,5'", "decimal separator"]),
        ("A\t1\nB\tinf\n", ["line 2, column 2: score of gene 'B' is inf", "cap them"]),
        ("A\t1\nB\t-Infinity\n", ["line 2, column 2", "-inf", "cap them"]),
        ("A\t1\nB\t-1e200\nC\t1e300\n", ["bad.rnk: line 2, column 2: score of gene 'B' is -1e+200; values beyond "
                                        "±1e100 overflow float64 moment sums; rescale (e.g. log-transform) the "
                                        "scores"]),
        ("Name\tRank\nTP53\t2.5\n", ["bad.rnk: only gene 'TP53' has a score; a ranked list needs at least two genes"]),
        ("A\t0\nB\t0\nC\t-0.0\n", ["bad.rnk: every gene has the same score (0); nothing can be ranked"]),
        ("A\t1\n\t2\n", ["line 2", "column 1", "gene id is empty"]),
        ("A\t1\nB\t2\n# x\nA\t3\nB\t4\n", ["'A'", "lines 1 and 4", "2 repeated genes", "duplicates='mean'"]),
        ("# only comments\n\n", ["no genes"]),
        ("", ["no genes"]),
        ("Name\tRank\n", ["header", "line 1"]),
        ("A\tNA\nB\t\n", ["no gene has a score"]),
    ],
)
def test_rnk_bad_input(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        read_rnk(write(tmp_path / "bad.rnk", text))
    message = str(info.value)
    assert "bad.rnk" in message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_nan_policy_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_rnk(write(tmp_path / "n.rnk", "A\t1\n#\nB\tNA\nC\t\n"), nan_policy="error")
    message = str(info.value)
    assert "n.rnk" in message and "line 3" in message and "'B'" in message and "2 in all" in message


def test_bad_objects_and_options(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="entry 2.*'x'"):
        read_rnk(pd.Series(["1", "x"], index=["A", "B"]))
    with pytest.raises(InputError, match="entries 1 and 3"):
        read_rnk(pd.Series([1.0, 2.0, 3.0], index=["A", "B", "A"]))
    with pytest.raises(InputError, match="row 2"):
        read_rnk(pd.DataFrame({"g": ["A", "B"], "s": [1.0, np.inf]}))
    with pytest.raises(InputError, match="3 columns"):
        read_rnk(pd.DataFrame({"g": ["A"], "s": [1.0], "t": [2.0]}))
    with pytest.raises(InputError, match="gene id is empty"):
        read_rnk(pd.Series([1.0, 2.0], index=["A", None]))
    with pytest.raises(InputError, match="got list"):
        read_rnk([("A", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not found"):
        read_rnk(tmp_path / "missing.rnk")
    path = write(tmp_path / "ok.rnk", "A\t1\n")
    with pytest.raises(OptionError, match="duplicates"):
        read_rnk(path, duplicates="median")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="nan_policy"):
        read_rnk(path, nan_policy="drop")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- gene lists


def test_gene_list_one_per_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "# my list\nGENE\nTP53\n\nMYC\nTP53\n  EGFR  \n"
    with caplog.at_level(logging.INFO, logger="permenrich.io.genelist"):
        genes = read_gene_list(write(tmp_path / "l.txt", text))
    assert genes == ["TP53", "MYC", "EGFR"]
    assert any("1 repeated" in r.message for r in caplog.records)


def test_gene_list_tokens_and_tables(tmp_path: Path) -> None:
    assert read_gene_list(write(tmp_path / "t.txt", "TP53 MYC,EGFR; KRAS\nBRCA1\n")) == [
        "TP53", "MYC", "EGFR", "KRAS", "BRCA1",
    ]
    assert read_gene_list(write(tmp_path / "t.tsv", "symbol\tlogFC\nTP53\t1\nMYC\t2\n")) == ["TP53", "MYC"]
    assert read_gene_list(write(tmp_path / "t.csv", 'gene_id,p\n"7157",0.1\n4609,0.2\n')) == ["7157", "4609"]
    # a single tab-separated line is a list of tokens, not a one-row table
    assert read_gene_list(write(tmp_path / "one.txt", "A\tB\tC\n")) == ["A", "B", "C"]
    path = tmp_path / "l.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("Genes\nA\nB\n")
    assert read_gene_list(path) == ["A", "B"]


def test_gene_list_objects() -> None:
    assert read_gene_list(["A", " B ", "A", ""]) == ["A", "B"]
    assert read_gene_list(pd.Series(["X", "Y"])) == ["X", "Y"]
    assert read_gene_list(np.array([7157, 4609])) == ["7157", "4609"]
    assert read_gene_list({"b", "a"}) == ["a", "b"]
    with pytest.raises(InputError, match="entry 2 of the universe is None"):
        read_gene_list(["A", None], what="universe")  # type: ignore[list-item]


@pytest.mark.parametrize("text", ["", "# nothing\n\n", "gene\n"])
def test_gene_list_empty(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError) as info:
        read_gene_list(write(tmp_path / "u.txt", text), what="universe")
    message = str(info.value)
    assert "u.txt" in message and "universe" in message


def test_gene_list_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="universe file not found"):
        read_gene_list(tmp_path / "nope.txt", what="universe")
    with pytest.raises(InputError, match="universe must be"):
        read_gene_list(3, what="universe")  # type: ignore[arg-type]


def test_one_gene_rnk_error_names_the_rnk_not_the_gmt(tmp_path: Path) -> None:
    """A one-gene RNK used to fail later as 'gene set ... contains every analysed gene',
    pointing at the gene sets; the RNK reader now refuses it."""
    import permenrich

    rnk = write(tmp_path / "one.rnk", "TP53\t2.5\n")
    gmt = write(tmp_path / "sets.gmt", "S\tdesc\tTP53\tMYC\n")
    with pytest.raises(InputError) as info:
        permenrich.prerank(rnk, gmt, min_size=1, permutations=10, device="cpu")
    assert str(info.value).startswith(f"{rnk}: only gene 'TP53' has a score") and "sets.gmt" not in str(info.value)
