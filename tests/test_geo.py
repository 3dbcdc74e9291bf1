"""GEO series matrices and platform tables, written here in GEO's documented format:
values and characteristics read, probes mapped to symbols (``///`` to each gene),
end to end with groupby and covariates from the characteristics, and one-line errors."""

import gzip

import numpy as np
import pytest

import permenrich
import permenrich.cli
from permenrich.errors import InputError
from permenrich.io.chip import read_probe_map
from permenrich.io.geo import read_series_matrix

N = 12


def _series(tmp_path, name="GSE0001_series_matrix.txt", values=None, extra_lines=(), drop_end=False, ragged=False):
    rng = np.random.default_rng(0)
    disease = ["VTE"] * 6 + ["control"] * 6
    age = rng.integers(30, 80, N)
    sex = ["F", "M"] * 6
    if values is None:
        values = rng.normal(8, 1, size=(30, N))
        values[:4, :6] += 1.5
    probes = [f"{i}_at" for i in range(30)]
    quote = lambda items: "\t".join(f'"{x}"' for x in items)  # noqa: E731
    lines = ['!Series_title\t"A simulated VTE series"', '!Series_geo_accession\t"GSE0001"',
             "!Sample_title\t" + quote([f"patient {i}" for i in range(N)]),
             "!Sample_geo_accession\t" + quote([f"GSM{i}" for i in range(N)]),
             "!Sample_platform_id\t" + quote(["GPL0001"] * N),
             "!Sample_characteristics_ch1\t" + quote([f"disease state: {d}" for d in disease]),
             "!Sample_characteristics_ch1\t" + quote([f"age: {a}" for a in age]),
             "!Sample_characteristics_ch1\t" + quote([f"gender: {s}" for s in sex]),
             *extra_lines, "!series_matrix_table_begin", '"ID_REF"\t' + quote([f"GSM{i}" for i in range(N)])]
    for probe, row in zip(probes, values):
        fields = [f'"{probe}"', *(repr(float(v)) for v in row)]
        lines.append("\t".join(fields[:-1] if ragged and probe == "3_at" else fields))
    if not drop_end:
        lines.append("!series_matrix_table_end")
    path = tmp_path / name
    text = "\n".join(lines) + "\n"
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def _platform(tmp_path, kind="soft"):
    symbols = [f"GENE{i // 2}" for i in range(30)]  # two probes per gene
    symbols[5] = "GENE2 /// GENE20"  # a probe of two genes
    symbols[7] = ""  # a probe without a symbol
    rows = [f"{i}_at\t{s}" for i, s in enumerate(symbols)]
    if kind == "tsv":
        path = tmp_path / "GPL0001.tsv"
        path.write_text("ID\tSymbol\n" + "\n".join(rows) + "\n")
        return path
    header = "ID\tGene Symbol" if kind == "soft" else "ID\tGene title\tGene symbol"
    if kind == "annot":
        rows = [f"{i}_at\ttitle {i}\t{s}" for i, s in enumerate(symbols)]
    path = tmp_path / ("GPL0001_family.soft" if kind == "soft" else "GDS0001.annot")
    path.write_text("^PLATFORM = GPL0001\n!Platform_title = simulated\n!platform_table_begin\n" + header + "\n" +
                    "\n".join(rows) + "\n!platform_table_end\n")
    return path


@pytest.mark.parametrize("name", ["GSE0001_series_matrix.txt", "GSE0001_series_matrix.txt.gz"])
def test_series_matrix_values_and_characteristics(tmp_path, name):
    path = _series(tmp_path, name)
    data = read_series_matrix(path)
    assert data.values.shape == (30, N) and list(data.sample_ids[:2]) == ["GSM0", "GSM1"]
    assert {"title", "geo_accession", "platform_id", "disease state", "age", "gender"} <= set(data.obs.columns)
    assert data.obs.loc["GSM0", "disease state"] == "VTE" and data.obs.loc["GSM11", "gender"] == "M"
    same = permenrich.io.read_expression(path)  # detected by content, not by extension
    np.testing.assert_array_equal(same.values, data.values)


@pytest.mark.parametrize("kind", ["soft", "annot", "tsv"])
def test_platform_tables_map_probes_and_split_multi_gene_entries(tmp_path, kind):
    mapping = read_probe_map(_platform(tmp_path, kind))
    assert mapping["0_at"] == ["GENE0"] and mapping["5_at"] == ["GENE2", "GENE20"] and "7_at" not in mapping


def test_end_to_end_groupby_and_covariates_from_characteristics(tmp_path):
    series, platform = _series(tmp_path), _platform(tmp_path)
    table = permenrich.genes(series, None, groupby="disease state", case="VTE", control="control", chip=platform,
                             metric="student_t", covariates=["age", "gender"], permutations=300, device="cpu")
    genes = set(table.gene)
    assert "GENE20" in genes and "GENE2" in genes  # 5_at counts for both
    assert len(genes) == 16  # GENE0..14 (probe 7_at has none) + GENE20
    assert table.attrs["run"]["design"]["covariates"] == ["age", "gender[M]"]
    # the planted probes 0-3 (GENE0, GENE1) come first
    assert set(table.gene[:2]) == {"GENE0", "GENE1"}


def test_cli_groupby_on_a_series_matrix_and_log2(tmp_path, capsys):
    series = _series(tmp_path, values=2.0 ** np.random.default_rng(1).normal(8, 1, size=(30, N)))
    platform = _platform(tmp_path)
    sets = tmp_path / "sets.gmt"
    sets.write_text("S\tna\t" + "\t".join(f"GENE{i}" for i in range(10)) + "\n")
    out = tmp_path / "out"
    status = permenrich.cli.main(["gsea", "--expr", str(series), "--groupby", "disease state", "--case", "VTE",
                                  "--control", "control", "--chip", str(platform), "--gene-sets", str(sets),
                                  "--min-size", "5", "--normalize", "log2", "--permutations", "50", "--device", "cpu",
                                  "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    # asked to take the log, the run does not also warn that the series looks unlogged
    assert "series looks unlogged" not in capsys.readouterr().err
    assert (out / "results.tsv").is_file()
    status = permenrich.cli.main(["genes", "--expr", str(series), "--groupby", "disease state", "--case", "VTE",
                                  "--control", "control", "--permutations", "20", "--device", "cpu",
                                  "--out", str(tmp_path / "unlogged")])
    assert status == 0 and "series looks unlogged" in capsys.readouterr().err


def test_characteristics_without_a_key_are_skipped_with_a_warning(tmp_path, caplog):
    """Older series describe samples without 'key:' ('bone marrow'): the matrix is still
    read (a sample sheet can carry the phenotype), the entries named in a warning."""
    series = _series(tmp_path, extra_lines=['!Sample_characteristics_ch1\t' + "\t".join(['"tissue blood"'] * N)])
    data = read_series_matrix(series)
    assert data.values.shape == (30, N) and "tissue blood" not in data.obs.columns
    assert "line 9: 12 sample characteristic(s) are not 'key: value' (e.g. 'tissue blood')" in caplog.text


@pytest.mark.parametrize("break_it, message", [
    (dict(drop_end=True), "no '!series_matrix_table_begin' ... '!series_matrix_table_end' table"),
    (dict(ragged=True), "fields, expected 13 (ID_REF and one value per sample); the table is ragged"),
    (dict(extra_lines=['!Sample_characteristics_ch1\t' + "\t".join(['"age: 1"'] * N)]),
     "characteristic 'age' is given twice"),
])
def test_malformed_series_are_one_line(tmp_path, break_it, message):
    with pytest.raises(InputError, match=__import__("re").escape(message)):
        read_series_matrix(_series(tmp_path, **break_it))


def test_a_truncated_platform_table_is_refused(tmp_path):
    """A SOFT file cut short (no '!platform_table_end') was read up to the cut: the probes
    after it were 'absent from the platform', one warning among others."""
    from permenrich.io.geo import read_platform_table

    path = _platform(tmp_path)
    text = path.read_text()
    path.write_text(text[:text.index("10_at") + 3])
    with pytest.raises(InputError, match=r"GPL0001_family.soft: line 3: '!platform_table_begin' has no "
                                         r"'!platform_table_end' line after it; the file looks truncated"):
        read_platform_table(path)


def test_platform_without_symbols_or_matching_probes(tmp_path):
    path = tmp_path / "GPL9.soft"
    path.write_text("^PLATFORM = GPL9\n!platform_table_begin\nID\tSPOT_ID\n1_at\tx\n!platform_table_end\n")
    with pytest.raises(InputError, match="no gene symbol column"):
        read_probe_map(path)
    other = tmp_path / "other.tsv"
    other.write_text("ID\tSymbol\nX1\tA\nX2\tB\n")
    with pytest.raises(InputError, match="none of the 30 row ids"):
        permenrich.genes(_series(tmp_path), None, groupby="disease state", case="VTE", control="control",
                         chip=other, permutations=20, device="cpu")


def test_log2_refuses_non_positive_values(tmp_path):
    values = np.abs(np.random.default_rng(2).normal(100, 10, size=(30, N)))
    values[4, 2] = 0.0
    series = _series(tmp_path, values=values)
    with pytest.raises(InputError, match=r"gene '4_at', sample 'GSM2' has value 0; log2 needs positive values"):
        permenrich.genes(series, None, groupby="disease state", case="VTE", control="control", normalize="log2",
                         permutations=20, device="cpu")


def test_annotations_follow_the_table_columns_by_accession(tmp_path, caplog):
    """The !Sample_ lines' annotations were attached to the table's columns by position: a
    table listing its GSM columns in another order (an edited or merged file) gave each
    sample another sample's disease state. Matched by GSM id now; ids that differ are refused."""
    path = _series(tmp_path)
    text = path.read_text()
    header = '"ID_REF"\t' + "\t".join(f'"GSM{i}"' for i in range(N))
    order = [1, 0, *range(2, N)]
    lines = text.split("\n")
    at = lines.index(header)
    swapped = ['"ID_REF"\t' + "\t".join(f'"GSM{i}"' for i in order)]
    for line in lines[at + 1:]:
        fields = line.split("\t")
        swapped.append(line if len(fields) != N + 1 else "\t".join([fields[0], *(fields[1 + i] for i in order)]))
    reordered = tmp_path / "reordered_series_matrix.txt"
    reordered.write_text("\n".join(lines[:at] + swapped))
    with caplog.at_level("WARNING"):
        data, original = read_series_matrix(reordered), read_series_matrix(path)
    assert any("matched to the columns by GSM id" in r.getMessage() for r in caplog.records)
    assert list(data.sample_ids[:2]) == ["GSM1", "GSM0"]
    assert data.obs.loc["GSM1"].equals(original.obs.loc["GSM1"])
    assert (data.obs.geo_accession == data.obs.index).all()
    np.testing.assert_array_equal(data.values[:, 0], original.values[:, 1])
    twice = tmp_path / "twice_series_matrix.txt"  # GSM1's age given twice: named as GSM1, not by table position
    twice.write_text(reordered.read_text().replace(
        "!series_matrix_table_begin", "!Sample_characteristics_ch1\t" + "\t".join(
            f'"age: {99 if i == 1 else "x"}"' for i in range(N)) + "\n!series_matrix_table_begin"))
    with pytest.raises(InputError, match=r"sample GSM0: characteristic 'age' is given twice"):
        read_series_matrix(twice)
    renamed = tmp_path / "renamed_series_matrix.txt"
    renamed.write_text(text.replace(header, header.replace('"GSM3"', '"GSM99"')))
    with pytest.raises(InputError, match=r"line 10: the table's samples differ from !Sample_geo_accession \(line 4\), "
                                         r"e.g. 'GSM99' is in one only"):
        read_series_matrix(renamed)


def test_characteristic_keys_differing_in_capitals_are_one_column(tmp_path, caplog):
    """'Age' for some samples and 'age' for others made two half-empty columns."""
    weights = [f"{'Weight' if i % 3 == 0 else 'weight'}: {40 + i}" for i in range(N)]
    path = _series(tmp_path, extra_lines=["!Sample_characteristics_ch1\t" + "\t".join(f'"{w}"' for w in weights)])
    with caplog.at_level("WARNING"):
        obs = read_series_matrix(path).obs
    assert "weight" not in obs.columns and list(obs["Weight"]) == [str(40 + i) for i in range(N)]
    assert any("spelled with other capitals" in r.getMessage() for r in caplog.records)


def test_probe_tables_are_read_by_their_header_or_refused(tmp_path):
    """'probe_id, gene_title, gene_symbol' was not known as a header: the titles (column 2)
    became gene ids and the run failed later at the gene sets, naming no chip; a
    comma-separated table said only that no probe had a symbol."""
    from permenrich.io.chip import read_probe_map

    headed = tmp_path / "p3col.tsv"
    headed.write_text("probe_id\tgene_title\tgene_symbol\nP0_at\ttitle of G0\tG0\nP1_at\ttitle of G1\tG1 /// G9\n")
    assert read_probe_map(headed) == {"P0_at": ["G0"], "P1_at": ["G1", "G9"]}
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("P0_at\ttitle of G0\tG0\n")
    with pytest.raises(InputError, match="unknown.tsv: line 1: no gene symbol column"):
        read_probe_map(unknown)
    commas = tmp_path / "commas.tsv"
    commas.write_text("Probe Set ID,Gene Symbol\nP0_at,G0\n")
    with pytest.raises(InputError, match="no probe of the platform table has a gene symbol; its columns seem to be "
                                         "separated by commas"):
        read_probe_map(commas)


def test_a_bad_value_after_a_blank_line_names_its_own_line(tmp_path):
    """The line of a bad value assumed a table without blank lines: one off after one."""
    path = _series(tmp_path)
    lines = path.read_text().split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith('"0_at"'))
    lines.insert(first + 1, "")
    lines[first + 3] = lines[first + 3].replace("\t", "\tx", 1)  # probe 2_at's first value
    path.write_text("\n".join(lines))
    with pytest.raises(InputError, match=rf"line {first + 4}, column 2: expected a number, found 'x"):
        read_series_matrix(path)
