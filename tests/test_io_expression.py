"""Expression readers (GCT, tables, h5ad, HDF5, in-memory), duplicate collapsing and CHIP mapping."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from permenrich.errors import InputError, OptionError, cli_option_names
from permenrich.io import (
    ExpressionData,
    apply_chip,
    collapse_duplicates,
    read_chip,
    read_expression,
)
from permenrich.io.chip import read_probe_map


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GCT12 = (
    "#1.2\n"
    "3\t2\n"
    "NAME\tDescription\tS1\tS2\n"
    "g1\tdesc one\t1.5\t2\n"
    "g2\tna\t-3\t4e2\n"
    "g3\t\t5\t6\n"
)


# ----------------------------------------------------------------------------- GCT


def test_gct12_happy_path(tmp_path: Path) -> None:
    expr = read_expression(write(tmp_path / "x.gct", GCT12))
    assert expr.values.dtype == np.float64 and expr.values.flags.c_contiguous
    np.testing.assert_array_equal(expr.values, [[1.5, 2], [-3, 400], [5, 6]])
    assert list(expr.gene_ids) == ["g1", "g2", "g3"]
    assert list(expr.sample_ids) == ["S1", "S2"]
    assert expr.gene_ids.dtype == object and expr.obs is None
    assert expr.source.endswith("x.gct")


def test_gct_crlf_trailing_tabs_and_trailing_blank_lines(tmp_path: Path) -> None:
    text = GCT12.replace("\n", "\t\r\n").replace("#1.2\t", "#1.2").replace("3\t2\t", "3\t2") + "\r\n\r\n"
    expr = read_expression(write(tmp_path / "x.gct", text))
    np.testing.assert_array_equal(expr.values, [[1.5, 2], [-3, 400], [5, 6]])


def test_gct13_skips_metadata(tmp_path: Path) -> None:
    text = (
        "#1.3\n"
        "2\t3\t2\t2\n"
        "id\tsymbol\tchrom\tA\tB\tC\n"
        "treatment\tna\tna\tx\ty\tz\n"
        "dose\tna\tna\t1\t2\t3\n"
        "p1\tTP53\t17\t1\t2\t3\n"
        "p2\tEGFR\t7\t4\tNA\t6\n"
    )
    expr = read_expression(write(tmp_path / "m.gct", text), nan_policy="drop")
    assert list(expr.sample_ids) == ["A", "B", "C"]
    assert list(expr.gene_ids) == ["p1"]
    np.testing.assert_array_equal(expr.values, [[1, 2, 3]])


def test_gct_detected_by_version_line_whatever_the_extension(tmp_path: Path) -> None:
    expr = read_expression(write(tmp_path / "x.txt", GCT12))
    assert expr.values.shape == (3, 2)


def test_gzipped_text(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "x.gct.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(GCT12)
    np.testing.assert_array_equal(read_expression(path).values, [[1.5, 2], [-3, 400], [5, 6]])


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (GCT12.replace("#1.2", "#1.4"), ["line 1", "#1.2"]),
        (GCT12.replace("3\t2\n", "3\n"), ["line 2", "2 non-negative integers"]),
        (GCT12.replace("3\t2\n", "three\t2\n"), ["line 2"]),
        (GCT12.replace("#1.2", "#1.3"), ["line 2", "4 non-negative integers"]),
        (GCT12.replace("\tS2\n", "\tS2\tS3\n"), ["line 3", "3 sample names", "declares 2 samples"]),
        (GCT12.replace("NAME\tDescription", "ID\tDescription"), ["line 3", "NAME"]),
        (GCT12.replace("3\t2\n", "4\t2\n"), ["line 2 declares 4 rows", "3 data rows"]),
        (GCT12.replace("g2\tna\t-3\t4e2", "g2\tna\t-3"), ["line 5", "3 fields", "expected 4"]),
        (GCT12.replace("g2\tna\t-3\t4e2", "g2\tna\t-3\t4e2\t7"), ["line 5", "5 fields", "expected 4"]),
        (GCT12.replace("4e2", "high"), ["line 5", "column 4", "'high'"]),
        (GCT12.replace("g3\t", "\t"), ["line 6", "row name is empty"]),
        (GCT12.replace("S1\tS2", "S1\tS1"), ["sample name 'S1'", "more than once", "samples 1 and 2 of 2"]),
        ("#1.2\n3\t2\n\n", ["line 3", "expected the header", "missing or empty"]),  # was "-1 sample names"
        (GCT12.replace("S1\tS2", "S1\t"), ["line 3", "column 4", "sample name is empty"]),
    ],
)
def test_gct_bad_input(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path / "bad.gct", text)
    with pytest.raises(InputError) as info:
        read_expression(path)
    message = str(info.value)
    assert "bad.gct" in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file_and_unknown_policy(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.gct.*not found"):
        read_expression(tmp_path / "nope.gct")
    with pytest.raises(OptionError, match="nan_policy"):
        read_expression(write(tmp_path / "x.gct", GCT12), nan_policy="zero")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="layer"):
        read_expression(write(tmp_path / "x.gct", GCT12), layer="counts")


# ------------------------------------------------------------------ missing values


NAN_GCT = (
    "#1.2\n4\t3\n"
    "NAME\tDescription\tS1\tS2\tS3\n"
    "full\t\t1\t2\t3\n"
    "allnan\t\tNA\t\tNaN\n"
    "partial\t\t1\tNA\t3\n"
    "withinf\t\t1\tinf\t3\n"
)


def test_partial_nan_error_names_gene_and_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "nan.gct", NAN_GCT)
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        with pytest.raises(InputError) as info:
            read_expression(path)
    message = str(info.value)
    assert "nan.gct" in message and "'partial'" in message and "nan_policy='drop'" in message
    with cli_option_names(), pytest.raises(InputError, match="use --nan-policy drop"):
        read_expression(path)
    assert "2 genes" in message  # partial and withinf
    assert "1 genes with no finite value" in caplog.text


def test_nan_policy_drop_warns_with_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        expr = read_expression(write(tmp_path / "nan.gct", NAN_GCT), nan_policy="drop")
    assert list(expr.gene_ids) == ["full"]
    assert "dropped 1 genes with no finite value" in caplog.text
    assert "dropped 2 genes with some NaN/inf" in caplog.text


def test_no_gene_left(tmp_path: Path) -> None:
    text = "#1.2\n1\t2\nNAME\tDescription\tS1\tS2\ng\t\tNA\tNA\n"
    with pytest.raises(InputError, match="empty.gct.*no gene left"):
        read_expression(write(tmp_path / "empty.gct", text))


# ----------------------------------------------------------------------- tables


def test_tsv_drops_descriptive_columns(tmp_path: Path) -> None:
    text = "Gene\tNAME\tDescription\tA\tB\nMAPK3\t1000_at\tkinase\t1\t2\nTIE1\t1001_at\t\t3\tNA\n"
    expr = read_expression(write(tmp_path / "t.tsv", text), nan_policy="drop")
    assert list(expr.sample_ids) == ["A", "B"]
    assert list(expr.gene_ids) == ["MAPK3"]


@pytest.mark.parametrize("description", ["na", "", "NA"])
def test_gsea_txt_with_descriptions_all_missing(tmp_path: Path, description: str) -> None:
    """GSEA's TXT format (NAME, DESCRIPTION, samples) with every description 'na' or
    empty: the column was taken for a sample of missing values, and the CLS no longer
    matched ('8 labels but 9 samples')."""
    rows = [f"G{i}\t{description}\t{i}.5\t{2 * i}\t7\n" for i in range(200)]
    rows[150] = rows[150].replace("7", '"7"')  # quoted: the row parser, not the plain one
    for text in (f"NAME\tDESCRIPTION\tS1\tS2\tS3\n{''.join(rows)}",
                 f"NAME\tDescription\tS1\tS2\tS3\n{''.join(rows[:3])}"):
        expr = read_expression(write(tmp_path / "gsea.txt", text))
        assert list(expr.sample_ids) == ["S1", "S2", "S3"]
        assert expr.values[1].tolist() == [1.5, 2.0, 7.0]
    # a sample column of missing values is still a sample
    expr = read_expression(write(tmp_path / "t.txt", "gene\tS0\tS1\ng1\tNA\t1\ng2\tNA\t2\n"), nan_policy="defer")
    assert list(expr.sample_ids) == ["S0", "S1"]


def test_a_missing_value_names_its_sample_and_an_overflow_says_so(tmp_path: Path) -> None:
    """The message named the gene only, and 1e400 (read as inf) was 'missing'."""
    with pytest.raises(InputError, match=r"gene 'g2' has 1 missing or non-finite values, e.g. sample 'B': missing "
                                         r"\(1 genes in all have some\)"):
        read_expression(write(tmp_path / "t.txt", "gene\tA\tB\ng1\t1\t2\ng2\t3\tNA\n"))
    with pytest.raises(InputError, match=r"e.g. sample 'A': inf \(a number beyond float64's range, such as 1e400, "
                                         r"reads as infinite\)"):
        read_expression(write(tmp_path / "t.txt", "gene\tA\tB\ng1\t1\t2\ng2\t1e400\t4\n"))


def test_table_without_a_header_row_is_refused(tmp_path: Path) -> None:
    """The first gene's values were taken for sample names: the gene lost, exit 0."""
    with pytest.raises(InputError, match=r"t.txt: line 1: the sample names are all numbers \('7.25', '1.5'\): the "
                                         r"file seems to lack its header row"):
        read_expression(write(tmp_path / "t.txt", "G0\t7.25\t1.5\nG1\t3\t4\n"))
    expr = read_expression(write(tmp_path / "n.txt", "gene\t1\t2\nG1\t3\t4\n"))  # samples named 1 and 2
    assert list(expr.sample_ids) == ["1", "2"]
    # donor.replicate names under a header word: a header
    expr = read_expression(write(tmp_path / "d.txt", "gene\t1.1\t1.2\nG1\t3\t4\n"))
    assert list(expr.sample_ids) == ["1.1", "1.2"]


def test_csv_with_quotes_and_r_style_header(tmp_path: Path) -> None:
    text = '"S1","S2"\n"g1",1,2\n"g,2",3.5,-4\n'
    expr = read_expression(write(tmp_path / "r.csv", text))
    assert list(expr.gene_ids) == ["g1", "g,2"]
    assert list(expr.sample_ids) == ["S1", "S2"]
    np.testing.assert_array_equal(expr.values, [[1, 2], [3.5, -4]])


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("gene\tA\tB\ng1\t1\t2\ng2\t3\tx7\n", ["line 3", "column 3", "'x7'"]),
        ("gene\tA\tB\ng1\t1\t2\n\t3\t4\n", ["line 3", "gene id is empty"]),
        ("gene\tA\tB\ng1\t1\t2\ng2\t3\n", ["line 3", "2 fields", "expected 3"]),
        ("gene\tA\tB\ng1\tx\ty\n", ["no numeric sample column"]),
        ("gene\tA\tA\ng1\t1\t2\n", ["sample name 'A'"]),
        ("gene\tA\tB\n", ["at least one gene row"]),
    ],
)
def test_table_bad_input(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        read_expression(write(tmp_path / "bad.tsv", text))
    message = str(info.value)
    assert "bad.tsv" in message
    for fragment in fragments:
        assert fragment in message


def _same_table(fast: ExpressionData, rows: ExpressionData) -> None:
    """Bit-for-bit: values (NaN payloads included), gene and sample names."""
    assert fast.values.dtype == rows.values.dtype and fast.values.shape == rows.values.shape
    assert fast.values.tobytes() == rows.values.tobytes()
    assert list(fast.gene_ids) == list(rows.gene_ids)
    assert list(fast.sample_ids) == list(rows.sample_ids)


def _random_table(sep: str, formatter: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((40, 5)) * 10.0 ** rng.integers(-30, 30, size=(40, 5))
    values[3, 2], values[7, 4], values[9, 0] = np.inf, -np.inf, 0.0
    lines = [sep.join(["gene", *[f"S{j}" for j in range(5)]])]
    for i, row in enumerate(values):
        lines.append(sep.join([f"g{i}", *[format(float(v), formatter) for v in row]]))
    return "\n".join(lines) + "\n"


PLAIN_TABLES = {
    "lone carriage return": "gene\tA\tB\rg1\t1\t2\n",  # a line end, as in GSEA's readers
    "repr digits": _random_table("\t", "", 1),
    "six digits": _random_table("\t", ".6g", 2),
    "exponents": _random_table("\t", ".3e", 3),
    "csv": _random_table(",", "", 4),
    "crlf": _random_table("\t", "", 5).replace("\n", "\r\n"),
    "no final newline": "gene\tA\tB\ng1\t1\t2\ng2\t3\t4",
    "spaces, signs, nan and inf words": "gene\tA\tB\n g1 \t +1.5 \t.5\ng#2\tnan\tInfinity\ng3\t-inf\t1.\n",
    "R header": "A\tB\ng1\t1\t2\ng2\t3\t4\n",
    "trailing tabs on the header": "gene\tA\tB\t\t\ng1\t1\t2\ng2\t3\t4\n",
    "descriptive columns": "Gene\tNAME\tDescription\tA\tB\nMAPK3\t1000_at\tkinase\t1\t2\nTIE1\t1001_at\tx\t3\t4\n",
}
# Each of these leaves the plain path for the row parser, which reads it.
ROW_PARSED_TABLES = {
    "missing values": "gene\tA\tB\ng1\tNA\t2\ng2\t\t4\n",
    "quotes": '"gene"\t"A"\t"B"\n"g1"\t1\t2\n',
    "blank line": "gene\tA\tB\ng1\t1\t2\n\ng2\t3\t4\n",
    "underscored digits": "gene\tA\tB\ng1\t1_0\t2\ng2\t3\t4\n",
    "non-ASCII digits": "gene\tA\tB\ng1\t\u0661\t2\ng2\t3\t4\n",
    "trailing tab on a row": "gene\tA\tB\ng1\t1\t2\t\ng2\t3\t4\n",
    "four descriptive columns": "g\ta\tb\tc\td\tA\ng1\tx\ty\tz\tw\t1\n",
}


@pytest.mark.parametrize("name", [*PLAIN_TABLES, *ROW_PARSED_TABLES])
def test_plain_table_path_reads_what_the_row_parser_reads(tmp_path: Path, name: str) -> None:
    """Tables read whole through NumPy's C reader give the row parser's result, bit for
    bit; anything that is not plain goes to the row parser (and is still read)."""
    import io

    from permenrich.io.expression import _parse_plain_table, _parse_table, _parse_table_rows

    text = PLAIN_TABLES.get(name, ROW_PARSED_TABLES.get(name))
    sep = "," if name == "csv" else "\t"
    plain = _parse_plain_table(text, "t", sep)
    assert (plain is not None) == (name in PLAIN_TABLES)
    rows = _parse_table_rows(io.StringIO(text, newline=""), "t", sep)
    if plain is not None:
        _same_table(plain, rows)
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode())
    _same_table(_parse_table(path, "t", encoding="utf-8-sig", sep=sep), rows)


GCT13_PLAIN = (
    "#1.3\n2\t3\t2\t1\nid\tsymbol\tchrom\tA\tB\tC\ndose\tna\tna\t1\t2\t3\n"
    "p1\tTP53\t17\t1.25\t-2e-3\t3\np2\tEGFR\t7\t4\tnan\t6e300\n"
)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        (GCT12, True),  # "na" and empty descriptions are not values
        (GCT12.replace("\n", "\r\n") + "\r\n\n", True),  # blank lines are skipped either way
        (GCT13_PLAIN, True),
        (GCT12.replace("\t2\n", "\t2\t\n"), False),  # a stray tab: trimmed by the row parser
        (GCT12.replace("4e2", "NA"), False),
        (GCT12.replace("\n", "\r"), True),  # old Mac line ends: lines as any other
    ],
)
def test_plain_gct_path_reads_what_the_row_parser_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, plain: bool
) -> None:
    from permenrich.io import expression

    path = write(tmp_path / "x.gct", text)
    taken = []
    whole_rows = expression._plain_rows
    monkeypatch.setattr(expression, "_plain_rows", lambda *args: taken.append(whole_rows(*args)) or taken[-1])
    fast = read_expression(path, nan_policy="drop")
    assert any(result is not None for result in taken) == plain
    monkeypatch.setattr(expression, "_plain_rows", lambda *args: None)
    _same_table(fast, read_expression(path, nan_policy="drop"))


@pytest.mark.parametrize("name", ["x.gct", "x.gct.gz"])
def test_gct_larger_than_the_whole_text_limit_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      name: str) -> None:
    """Past the whole-text limit a GCT goes back to its first data row and streams."""
    import gzip

    from permenrich.io import expression

    path = tmp_path / name
    path.write_bytes(gzip.compress(GCT13_PLAIN.encode()) if name.endswith(".gz") else GCT13_PLAIN.encode())
    whole = read_expression(path, nan_policy="drop")
    monkeypatch.setattr(expression, "_WHOLE_TEXT_CHARS", 10)
    monkeypatch.setattr(expression, "_plain_rows", None)  # must not be reached
    _same_table(read_expression(path, nan_policy="drop"), whole)


def test_table_larger_than_the_whole_text_limit_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from permenrich.io import expression

    text = PLAIN_TABLES["repr digits"]
    path = write(tmp_path / "t.tsv", text)
    whole = expression._parse_table(path, "t", encoding="utf-8-sig", sep="\t")
    monkeypatch.setattr(expression, "_WHOLE_TEXT_CHARS", len(text) // 3)
    monkeypatch.setattr(expression, "_parse_plain_table", None)  # must not be reached
    _same_table(expression._parse_table(path, "t", encoding="utf-8-sig", sep="\t"), whole)


# ----------------------------------------------------------------- in-memory inputs


def test_dataframe_input_not_mutated() -> None:
    df = pd.DataFrame({"S1": [1.0, np.nan], "S2": [3, 4]}, index=["g1", "g2"])
    before = df.copy()
    expr = read_expression(df, nan_policy="drop")
    pd.testing.assert_frame_equal(df, before)
    assert expr.source == "<DataFrame>" and list(expr.gene_ids) == ["g1"]
    expr.values[0, 0] = 99
    assert df.iloc[0, 0] == 1


def test_dataframe_with_text_column_explains_index() -> None:
    df = pd.DataFrame({"gene": ["a", "b"], "S1": [1.0, 2.0]})
    with pytest.raises(InputError, match="'gene' is not numeric.*set_index"):
        read_expression(df)


def _anndata(sparse: bool):
    anndata = pytest.importorskip("anndata")
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    dense = rng.poisson(2.0, size=(5, 7)).astype(np.float32)  # samples x genes
    obs = pd.DataFrame({"group": ["a", "a", "b", "b", "b"]}, index=[f"cell{i}" for i in range(5)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(7)])
    X = sp.csr_matrix(dense) if sparse else dense
    adata = anndata.AnnData(X=X, obs=obs, var=var)
    adata.layers["scaled"] = dense * 2
    return adata, dense


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_h5ad_dense_and_sparse(tmp_path: Path, sparse: bool) -> None:
    adata, dense = _anndata(sparse)
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path)
    expr = read_expression(path)
    np.testing.assert_array_equal(expr.values, dense.T.astype(np.float64))
    assert expr.values.flags.c_contiguous and expr.values.dtype == np.float64
    assert list(expr.gene_ids) == list(adata.var_names)
    assert list(expr.sample_ids) == list(adata.obs_names)
    assert list(expr.obs["group"]) == ["a", "a", "b", "b", "b"]
    scaled = read_expression(path, layer="scaled")
    np.testing.assert_array_equal(scaled.values, 2 * dense.T)
    with pytest.raises(InputError, match="x.h5ad.*layer 'nope' not found.*scaled"):
        read_expression(path, layer="nope")


def test_anndata_object_not_mutated() -> None:
    adata, dense = _anndata(sparse=True)
    X_before = adata.X.copy()
    expr = read_expression(adata, layer="scaled")
    expr.obs["new"] = 1
    expr.values[:] = 0
    assert "new" not in adata.obs.columns
    assert (adata.X != X_before).nnz == 0
    np.testing.assert_array_equal(adata.layers["scaled"], dense * 2)
    assert read_expression(adata).source == "<AnnData>"


def test_plain_hdf5_layout(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f["X"] = values
        f["gene_ids"] = np.array([b"g1", b"g2", b"g3", b"g4"])
        f["sample_ids"] = np.array(["a", "b", "c"], dtype=h5py.string_dtype())
        group = f.create_group("nested")
        group["counts"] = values[:, :2]
        group["gene_ids"] = np.array([b"g1", b"g2", b"g3", b"g4"])
        group["sample_ids"] = np.array([b"a", b"b", b"c"])  # 3 names for 2 columns
    expr = read_expression(path)
    np.testing.assert_array_equal(expr.values, values)
    assert list(expr.gene_ids) == ["g1", "g2", "g3", "g4"] and list(expr.sample_ids) == ["a", "b", "c"]
    with pytest.raises(InputError, match="m.h5.*'nested/counts' has shape \\(4, 2\\).*sample_ids 3"):
        read_expression(path, h5_dataset="nested/counts")
    with pytest.raises(InputError, match="m.h5.*dataset 'Y' is missing"):
        read_expression(path, h5_dataset="Y")


def test_hdf5_missing_names_and_corrupt_file(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "nonames.hdf5"
    with h5py.File(path, "w") as f:
        f["X"] = np.zeros((2, 2))
    with pytest.raises(InputError, match="nonames.hdf5.*'gene_ids'"):
        read_expression(path)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(InputError, match="broken.h5.*cannot open as HDF5"):
        read_expression(broken)


def test_10x_h5_layout(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    import scipy.sparse as sp

    dense = np.array([[0, 1, 2], [3, 0, 0]], dtype=np.int32)  # genes x barcodes
    csc = sp.csc_matrix(dense)
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["data"], m["indices"], m["indptr"] = csc.data, csc.indices, csc.indptr
        m["shape"] = np.array(dense.shape)
        m["barcodes"] = np.array([b"AAA-1", b"CCC-1", b"GGG-1"])
        m["features/name"] = np.array([b"CD3E", b"MS4A1"])
        m["features/id"] = np.array([b"ENSG1", b"ENSG2"])
    expr = read_expression(path)
    np.testing.assert_array_equal(expr.values, dense)
    assert list(expr.gene_ids) == ["CD3E", "MS4A1"] and list(expr.sample_ids) == ["AAA-1", "CCC-1", "GGG-1"]


# -------------------------------------------------------------------- collapsing


@pytest.mark.parametrize("method", ["mean", "max", "median"])
def test_collapse_matches_pandas_groupby(method: str, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    gene_ids = np.array(rng.choice([f"G{i}" for i in range(300)], size=2000), dtype=object)
    values = rng.normal(size=(2000, 6))
    expr = ExpressionData(values, gene_ids, np.array([f"s{j}" for j in range(6)], dtype=object), "<test>")
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        out = collapse_duplicates(expr, method=method)  # type: ignore[arg-type]
    reference = getattr(pd.DataFrame(values, index=gene_ids).groupby(level=0, sort=False), method)()
    assert list(out.gene_ids) == list(pd.unique(gene_ids))  # first-occurrence order
    np.testing.assert_allclose(out.values, reference.to_numpy(), rtol=0, atol=1e-12)
    assert out.values.flags.c_contiguous
    assert f"({method}); {len(reference)} genes remain" in caplog.text


def test_collapse_without_duplicates_returns_input() -> None:
    names = np.array(["a", "b"], dtype=object)
    expr = ExpressionData(np.ones((2, 2)), names, names.copy(), "<t>")
    assert collapse_duplicates(expr) is expr
    with pytest.raises(OptionError, match="sum"):
        collapse_duplicates(expr, method="sum")  # type: ignore[arg-type]


def test_read_expression_keeps_duplicates(tmp_path: Path) -> None:
    text = "gene\tA\tB\ng\t1\t2\ng\t3\t4\n"
    expr = read_expression(write(tmp_path / "d.tsv", text))
    assert list(expr.gene_ids) == ["g", "g"]
    np.testing.assert_array_equal(collapse_duplicates(expr, "max").values, [[3, 4]])


# -------------------------------------------------------------------------- CHIP


CHIP = (
    "Probe Set ID\tGene Symbol\tGene Title\n"
    "p1\tTP53\ttumour protein\n"
    "p2\tTP53\t\n"
    "p3\t---\tnothing\n"
    "p4\t\n"
    "p5\tEGFR\treceptor\n"
    "p5\tOTHER\trepeat of p5\n"
)


def test_read_chip_and_apply(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chip = write(tmp_path / "a.chip", CHIP)
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        mapping = read_chip(chip)
    assert mapping == {"p1": "TP53", "p2": "TP53", "p5": "EGFR"}
    assert "dropped 2 probes with no gene symbol" in caplog.text
    assert "1 rows repeat an earlier probe id" in caplog.text

    values = np.array([[1.0, 2], [3, 4], [5, 6], [7, 8], [9, 10]])
    ids = np.array(["p5", "p1", "p3", "unknown", "p2"], dtype=object)
    expr = ExpressionData(values, ids, np.array(["s1", "s2"], dtype=object), "e.gct")
    out = apply_chip(expr, chip, method="max")
    assert list(out.gene_ids) == ["EGFR", "TP53"]
    np.testing.assert_array_equal(out.values, [[1, 2], [9, 10]])
    assert "dropped 2 of 5 probes" in caplog.text


def test_probe_map_of_a_chip_with_a_byte_order_mark_and_multi_gene_probes(tmp_path: Path) -> None:
    """The header is recognised behind a UTF-8 BOM (Excel writes one); 'A /// B' maps a
    probe to each gene, '---' among them dropped."""
    chip = tmp_path / "bom.chip"
    chip.write_bytes(("\ufeffProbe Set ID\tGene Symbol\n"
                      "p1\tTP53\np2\tEGFR /// ERBB2\np3\tMYC /// ---\n").encode("utf-8"))
    assert read_probe_map(chip) == {"p1": ["TP53"], "p2": ["EGFR", "ERBB2"], "p3": ["MYC"]}


def test_chip_columns_in_any_order(tmp_path: Path) -> None:
    """Only the fields up to the later of the two columns are split off: the symbol before
    the probe, titles with tabs' neighbours after them, and short rows all read as a full
    split reads them."""
    chip = write(tmp_path / "o.chip", "Gene Title\tGene Symbol\tProbe Set ID\tExtra\tMore\n"
                 "tumour protein\tTP53 \t p1\tx\ty\n"
                 "kinase\tEGFR\tp2\n"
                 "none\t---\tp3\tz\n"
                 "short\tMYC\n")
    assert read_chip(chip) == {"p1": "TP53", "p2": "EGFR"}


def test_chip_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="h.chip.*line 1.*'Gene Symbol'"):
        read_chip(write(tmp_path / "h.chip", "Probe Set ID\tSymbol\np1\tA\n"))
    chip = write(tmp_path / "a.chip", CHIP)
    expr = ExpressionData(np.ones((1, 2)), np.array(["zz"], dtype=object), np.array(["a", "b"], dtype=object), "e.gct")
    with pytest.raises(InputError) as info:
        apply_chip(expr, chip)
    assert "e.gct" in str(info.value) and "a.chip" in str(info.value)


# ---------------------------------------------------------------------- real data


def test_real_leukemia_gct(shared_data: Path) -> None:
    expr = read_expression(shared_data / "leukemia" / "Leukemia_hgu95av2.gct")
    assert expr.values.shape == (12564, 48)
    assert expr.sample_ids[0] == "ALL_1" and expr.sample_ids[-1] == "AML_24"
    reference = pd.read_csv(shared_data / "leukemia" / "Leukemia_hgu95av2.gct", sep="\t", skiprows=2, index_col=0)
    np.testing.assert_array_equal(expr.values, reference.drop(columns="Description").to_numpy())
    from permenrich.io import expression  # read whole through NumPy's C reader: the row parser's bits

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(expression, "_plain_rows", lambda *args: None)
        _same_table(expr, read_expression(shared_data / "leukemia" / "Leukemia_hgu95av2.gct"))


def test_real_leukemia_chip(shared_data: Path) -> None:
    leukemia = shared_data / "leukemia"
    probes = read_expression(leukemia / "Leukemia_hgu95av2.gct")
    genes = apply_chip(probes, leukemia / "Human_AFFY_HG_U95_MSigDB_7_0_final.chip")
    assert probes.n_genes == 12564
    assert 8000 < genes.n_genes < probes.n_genes
    assert pd.Index(genes.gene_ids).is_unique
    mapk3 = genes.values[list(genes.gene_ids).index("MAPK3")]
    np.testing.assert_array_equal(mapk3, probes.values[list(probes.gene_ids).index("1000_at")])


def test_real_leukemia_symbol_table(shared_data: Path) -> None:
    expr = read_expression(shared_data / "leukemia" / "Leukemia_hgu95av2.trim.txt")
    assert expr.n_samples == 48 and expr.sample_ids[0] == "ALL_1"  # NAME column skipped
    assert expr.gene_ids[0] == "MAPK3"
    assert not pd.Index(expr.gene_ids).is_unique
    # Read whole through NumPy's C reader; the row parser gives the same bits.
    from permenrich.io.expression import _parse_table_rows

    with open(shared_data / "leukemia" / "Leukemia_hgu95av2.trim.txt", encoding="utf-8-sig", newline="") as handle:
        _same_table(expr, _parse_table_rows(handle, "t", "\t"))


# ------------------------------------------------------------------ the value range


@pytest.mark.parametrize("kind", ["gct", "tsv", "dataframe", "anndata", "h5ad_layer", "hdf5"])
def test_values_beyond_max_abs_value_are_refused(tmp_path: Path, kind: str) -> None:
    """1e308 made the moment sums overflow (an inf statistic and a NumPy warning); every
    reader refuses values beyond ±MAX_ABS_VALUE, naming the file (and dataset), gene and sample."""
    from permenrich.io.expression import MAX_ABS_VALUE

    assert MAX_ABS_VALUE == 1e100
    frame = pd.DataFrame({"S1": [1.0, 2.0], "S2": [3.0, -1e308]}, index=["g1", "g2"])
    if kind == "gct":
        source: object = write(tmp_path / "big.gct", "#1.2\n2\t2\nNAME\tDescription\tS1\tS2\n"
                                                     "g1\t\t1\t3\ng2\t\t2\t-1e308\n")
        where = f"{source}"
    elif kind == "tsv":
        source = write(tmp_path / "big.tsv", "gene\tS1\tS2\ng1\t1\t3\ng2\t2\t-1e308\n")
        where = f"{source}"
    elif kind == "dataframe":
        source, where = frame, "<DataFrame>"
    else:
        anndata = pytest.importorskip("anndata")
        adata = anndata.AnnData(X=np.ones((2, 2)), obs=pd.DataFrame(index=["S1", "S2"]),
                                var=pd.DataFrame(index=["g1", "g2"]))
        adata.layers["counts"] = frame.to_numpy().T
        if kind == "anndata":
            adata.X = frame.to_numpy().T
            source, where = adata, "<AnnData>, dataset 'X'"
        elif kind == "h5ad_layer":
            source = tmp_path / "big.h5ad"
            adata.write_h5ad(source)
            where = f"{source}, dataset 'layers/counts'"
        else:
            h5py = pytest.importorskip("h5py")
            source = tmp_path / "big.h5"
            with h5py.File(source, "w") as f:
                f["X"], f["gene_ids"], f["sample_ids"] = frame.to_numpy(), [b"g1", b"g2"], [b"S1", b"S2"]
            where = f"{source}, dataset 'X'"
    with pytest.raises(InputError) as info:
        read_expression(source, layer="counts" if kind == "h5ad_layer" else None)
    assert str(info.value) == (f"{where}: gene 'g2', sample 'S2' has value -1e+308; values beyond ±1e100 overflow "
                               "float64 moment sums; rescale (e.g. log-transform) the data")
    frame.iloc[1, 1] = -1e100  # the bound itself is accepted
    assert read_expression(frame).values[1, 1] == -1e100


def test_empty_x_names_what_exists_not_a_layer_option() -> None:
    """The high-level API and the CLI have no layer option: say how to make a layer X."""
    anndata = pytest.importorskip("anndata")
    adata = anndata.AnnData(obs=pd.DataFrame(index=["c1", "c2"]), var=pd.DataFrame(index=["g1", "g2"]))
    adata.layers["counts"] = np.ones((2, 2))
    with pytest.raises(InputError) as info:
        read_expression(adata)
    message = str(info.value)
    assert "X is empty (layers: 'counts')" in message and "adata.X = adata.layers['counts']" in message
    assert "layer=" not in message
