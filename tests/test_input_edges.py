"""Inputs at the edges, found by a bad-input audit of the command line: each was a silent
wrong answer, a traceback or a hang, and is now read right or refused in one line."""

import json

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.cli import main
from permenrich.errors import InputError, OptionError
from _tables import assert_identical


def _run(args, capsys):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture()
def study(tmp_path):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(200)]
    values = rng.normal(8, 1, size=(200, 12))
    values[:20, :6] += 1.5
    lines = ["#1.2", "200\t12", "\t".join(["NAME", "Description", *[f"S{i}" for i in range(12)]])]
    lines += ["\t".join([g, "na", *(f"{v:.6g}" for v in row)]) for g, row in zip(genes, values)]
    (tmp_path / "expr.gct").write_text("\n".join(lines) + "\n")
    (tmp_path / "pheno.cls").write_text("12 2 1\n# t n\n" + " ".join(["t"] * 6 + ["n"] * 6) + "\n")
    (tmp_path / "sets.gmt").write_text("UP\tplanted\t" + "\t".join(genes[:20]) + "\n"
                                       "RANDOM\tnull\t" + "\t".join(genes[100:130]) + "\n")
    return tmp_path


def _one_line_error(status, err, expected):
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0], err


def test_old_mac_line_ends_are_line_ends(study, capsys):
    """A lone CR ends a line, as in GSEA's readers: a CR-only GMT was one merged set, a
    CR-only RNK one line of 400 fields."""
    gmt, rnk = study / "cr.gmt", study / "cr.rnk"
    gmt.write_bytes((study / "sets.gmt").read_bytes().replace(b"\n", b"\r"))
    rnk.write_bytes("".join(f"G{i}\t{200 - i}\r" for i in range(200)).encode())
    table = permenrich.prerank(rnk, gmt, permutations=20, seed=0, min_size=5, device="cpu")
    expected = permenrich.prerank(rnk, study / "sets.gmt", permutations=20, seed=0, min_size=5, device="cpu")
    assert sorted(table.gene_set) == ["RANDOM", "UP"]
    table.attrs, expected.attrs = {}, {}
    assert_identical(table, expected)


def test_chip_is_known_by_its_header(study, capsys):
    """A CHIP without 'Gene Symbol' mapped probes to the next column (gene titles) as a
    two-column table; a CHIP whose name held 'annot' was read as a GEO .annot file."""
    header = "Probe Set ID\tGene Title\n"
    (study / "titles.chip").write_text(header + "".join(f"G{i}\tgene number {i}\n" for i in range(200)))
    status, _, err = _run(["genes", "--expr", study / "expr.gct", "--cls", study / "pheno.cls", "--chip",
                           study / "titles.chip", "--permutations", 20, "--out", study / "o1", "--quiet"], capsys)
    _one_line_error(status, err, "no gene symbol column")
    chip = study / "hgu95_annot_v2.chip"
    chip.write_text("Probe Set ID\tGene Title\tGene Symbol\n" + "".join(f"G{i}\tgene {i}\tSYM{i}\n" for i in range(200)))
    table = permenrich.genes(study / "expr.gct", study / "pheno.cls", chip=chip, permutations=20, device="cpu")
    assert set(table.gene) == {f"SYM{i}" for i in range(200)}


def test_numeric_cls_names_each_phenotype_once(study):
    cls = study / "age.cls"
    cls.write_text("#numeric\n#age\n" + " ".join(map(str, range(12))) + "\n#age\n" +
                   " ".join(map(str, range(12, 0, -1))) + "\n")
    with pytest.raises(InputError, match=r"line 4: phenotype 'age' is named again \(first on line 2\)"):
        permenrich.gsea(study / "expr.gct", cls, study / "sets.gmt", permutations=20, metric="pearson",
                        device="cpu")


@pytest.mark.parametrize("typo", ["abc", "inf"])
def test_a_typo_does_not_make_a_numeric_covariate_categorical(study, typo):
    ages = [str(20 + i) for i in range(12)]
    ages[3] = typo
    sheet = pd.DataFrame({"sample": [f"S{i}" for i in range(12)], "group": ["t"] * 6 + ["n"] * 6, "age": ages})
    sheet.to_csv(study / "sheet.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=f"covariate 'age' is a number for 11 analysed sample.* but '{typo}' for "
                                         "sample 'S3'"):
        permenrich.gsea(study / "expr.gct", study / "sheet.tsv", study / "sets.gmt", groupby="group", case="t",
                        control="n", covariates=["age"], metric="student_t", permutations=20, device="cpu")


def test_series_matrix_without_rows(tmp_path):
    path = tmp_path / "GSE2_series_matrix.txt"
    path.write_text('!Series_title\t"t"\n!Sample_geo_accession\t"GSM1"\t"GSM2"\t"GSM3"\t"GSM4"\n'
                    '!Sample_characteristics_ch1\t"group: A"\t"group: A"\t"group: B"\t"group: B"\n'
                    '!series_matrix_table_begin\n"ID_REF"\t"GSM1"\t"GSM2"\t"GSM3"\t"GSM4"\n'
                    '!series_matrix_table_end\n')
    with pytest.raises(InputError, match="has a header but no data rows"):
        permenrich.genes(path, groupby="group", case="A", control="B", permutations=20, device="cpu")


@pytest.mark.parametrize("args, expected", [
    (["--memory", "1e400"], "beyond any machine"),
    (["--memory", "1e400GB"], "beyond any machine"),
    (["--threads", "100000"], "--threads 100000 is above the limit of 1,024"),
    (["--weight", "1000"], "hit weights |statistic| ** 1000 exceed the float64 range"),
])
def test_option_extremes_are_one_line(study, capsys, args, expected):
    status, _, err = _run(["gsea", "--expr", study / "expr.gct", "--cls", study / "pheno.cls", "--gene-sets",
                           study / "sets.gmt", "--permutations", 20, *args, "--out", study / "out", "--quiet"],
                          capsys)
    _one_line_error(status, err, expected)
    assert not (study / "out").exists()


def test_scheduler_file_missing_or_not_dasks(study, monkeypatch):
    from permenrich import runner

    monkeypatch.setattr(runner, "SCHEDULER_FILE_WAIT_SECONDS", 0.0)  # Dask itself waits for ever
    with pytest.raises(OptionError, match="no such file"):
        runner.client_from(scheduler_file=str(study / "nowhere.json"))
    with pytest.raises(OptionError, match="is a folder, not a file"):
        runner.client_from(scheduler_file=str(study))
    (study / "bad.json").write_text("{bad")
    with pytest.raises(OptionError, match="not a Dask scheduler file"):
        runner.client_from(scheduler_file=str(study / "bad.json"))
    (study / "list.json").write_text(json.dumps(["tcp://x"]))
    with pytest.raises(OptionError, match="not a Dask scheduler file"):
        runner.client_from(scheduler_file=str(study / "list.json"))


def test_report_on_an_edited_folder_is_one_line(study, capsys):
    pytest.importorskip("matplotlib")
    out = study / "run"
    status, _, err = _run(["prerank", "--rnk", _rnk(study), "--gene-sets", study / "sets.gmt", "--min-size", 5,
                           "--permutations", 20, "--out", out, "--quiet"], capsys)
    assert status == 0, err
    (out / "ranking.tsv").write_text("x\ty\n1\t2\n")
    status, _, err = _run(["report", out], capsys)
    _one_line_error(status, err, "no longer hold what permenrich wrote (KeyError")
    assert not (out / "report.html").exists()


def _rnk(study):
    path = study / "list.rnk"
    path.write_text("".join(f"G{i}\t{200 - i}\n" for i in range(200)))
    return path


def test_encodings_and_separators_say_what_is_wrong(study, capsys):
    """UTF-16 (Excel's 'Unicode text'), a gzip file without .gz and a GCT separated by
    spaces gave misleading line errors; each is now named."""
    import gzip

    gmt16 = study / "sets16.gmt"
    gmt16.write_bytes((study / "sets.gmt").read_text().encode("utf-16"))
    gz = study / "packed.gct"
    gz.write_bytes(gzip.compress((study / "expr.gct").read_bytes()))
    spaced = study / "spaced.gct"
    spaced.write_text((study / "expr.gct").read_text().replace("\t", " "))
    base = ["--cls", study / "pheno.cls", "--permutations", 20, "--out", study / "out", "--quiet"]
    for args, expected in (
        (["gsea", "--expr", study / "expr.gct", "--gene-sets", gmt16], "is UTF-16 text"),
        (["genes", "--expr", gz], "is gzip-compressed; name it with a .gz ending"),
        (["genes", "--expr", spaced], "line 3: the header has no tabs"),
    ):
        status, _, err = _run([*args, *base], capsys)
        _one_line_error(status, err, expected)


def test_sheet_samples_missing_from_the_matrix_are_reported(study, caplog):
    """A sample column the table reader took for text (decimal commas) left the analysis
    with no word; sheet samples absent from the matrix, and samples without a label, are
    now warned about."""
    text = (study / "expr.gct").read_text().splitlines()
    rows = ["\t".join(["gene", *[f"S{i}" for i in range(12)]])]
    rows += ["\t".join([line.split("\t")[0], line.split("\t")[2].replace(".", ","), *line.split("\t")[3:]])
             for line in text[3:]]
    (study / "comma.tsv").write_text("\n".join(rows) + "\n")
    groups = ["t"] * 6 + ["n"] * 5 + [""]
    pd.DataFrame({"sample": [f"S{i}" for i in range(12)], "group": groups}).to_csv(study / "sheet.tsv", sep="\t",
                                                                                  index=False)
    with caplog.at_level("WARNING"):
        table = permenrich.genes(study / "comma.tsv", study / "sheet.tsv", groupby="group", case="t",
                                 control="n", permutations=20, device="cpu")
    assert table.attrs["run"]["design"]["n_case"] == 5  # S0 was read as a text column
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "1 of its 12 samples are not sample columns of" in messages and "'S0'" in messages
    assert "1 of 11 samples have no group label (empty or NA)" in messages


def test_options_that_would_be_ignored_are_refused(study, capsys):
    """--phenotype-column with a two-group metric, and --covariates naming no column, ran
    an analysis that silently left them out."""
    base = ["gsea", "--expr", study / "expr.gct", "--cls", study / "pheno.cls", "--gene-sets", study / "sets.gmt",
            "--permutations", 20, "--out", study / "out", "--quiet"]
    status, _, err = _run([*base, "--phenotype-column", "age"], capsys)
    _one_line_error(status, err, "--phenotype-column is the numeric phenotype of the correlation metrics")
    status, _, err = _run([*base, "--covariates", ",", "--metric", "student_t"], capsys)
    _one_line_error(status, err, "',' names no column")
    # a correlation has no groups: --groupby (or --case/--control) would be ignored
    sheet = pd.DataFrame({"sample": [f"S{i}" for i in range(12)], "group": ["t"] * 6 + ["n"] * 6,
                          "age": [str(20 + i) for i in range(12)]})
    sheet.to_csv(study / "ages.tsv", sep="\t", index=False)
    status, _, err = _run(["gsea", "--expr", study / "expr.gct", "--sample-sheet", study / "ages.tsv", "--groupby",
                           "group", "--phenotype-column", "age", "--metric", "pearson", "--gene-sets",
                           study / "sets.gmt", "--permutations", 20, "--out", study / "out", "--quiet"], capsys)
    _one_line_error(status, err, "--groupby chooses the groups of a two-group metric; pearson correlates")
    assert not (study / "out").exists()


def test_gene_set_file_twice_and_a_huge_covariate(study):
    with pytest.raises(InputError, match="sets.gmt: the gene-set file is given more than once"):
        permenrich.prerank(_rnk(study), [study / "sets.gmt", str(study / "sets.gmt")], permutations=20,
                           min_size=5, device="cpu")
    sheet = pd.DataFrame({"sample": [f"S{i}" for i in range(12)], "group": ["t"] * 6 + ["n"] * 6,
                          "age": [str(20 + i) for i in range(11)] + ["1e300"]})
    sheet.to_csv(study / "sheet.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"covariate 'age' is 1e\+300 for sample 'S11', beyond"):
        permenrich.gsea(study / "expr.gct", study / "sheet.tsv", study / "sets.gmt", groupby="group", case="t",
                        control="n", covariates=["age"], metric="student_t", permutations=20, device="cpu")


def test_manifest_row_longer_than_its_header(tmp_path):
    """One cell too many in a manifest's only row shifted every cell under the wrong
    column (pandas took the first as an index)."""
    from permenrich.io.manifest import read_manifest_rows

    path = tmp_path / "studies.tsv"
    path.write_text("name\texpr\tphenotype\nA\ta.gct\ta.cls\textra\n")
    with pytest.raises(InputError, match="studies.tsv: a row has more cells than the header"):
        read_manifest_rows(path, columns=("name", "expr", "phenotype"), required=("expr",), what="meta manifest",
                           entry="study")


def test_list_mode_universe_from_expression_uses_the_chip(study):
    """ORA of a gene list against the genes of a probe-level matrix: --chip maps the
    probes, as for every expression analysis (it was ignored, and no listed gene was
    in the universe)."""
    text = (study / "expr.gct").read_text()
    for i in range(200):
        text = text.replace(f"\nG{i}\t", f"\nP{i}\t")
    (study / "probes.gct").write_text(text)
    (study / "probes.chip").write_text("Probe Set ID\tGene Symbol\n" + "".join(f"P{i}\tG{i}\n" for i in range(200)))
    (study / "list.txt").write_text("\n".join(f"G{i}" for i in range(15)) + "\n")
    table = permenrich.ora(study / "list.txt", study / "sets.gmt", expr=study / "probes.gct",
                           chip=study / "probes.chip", min_size=5, device="cpu")
    assert table.set_index("gene_set").loc["UP", "overlap"] == 15
    assert table.attrs["run"]["data"]["n_universe"] == 200


def test_more_options_that_would_be_ignored_are_refused(study, capsys):
    """Second input audit: each of these ran (exit 0) with an option silently ignored."""
    sheet = study / "sheet.tsv"
    sheet.write_text("sample\tgroup\tstratum\n" + "".join(
        f"S{i}\t{'t' if i < 6 else 'n'}\t{'A' if i < 6 else 'B'}\n" for i in range(12)))
    base = ["--expr", study / "expr.gct", "--gene-sets", study / "sets.gmt", "--min-size", 5, "--permutations", 20]
    cases = [
        # strata that separate the classes: no label can move (it wrote p = 1 everywhere)
        (["gsea", *base, "--sample-sheet", sheet, "--groupby", "group", "--strata", "stratum"],
         "sheet.tsv: every stratum of --strata stratum holds one class only, so no label can move"),
        (["gsea", *base, "--cls", study / "pheno.cls", "--groupby", "nothing"],
         "pheno.cls: --groupby nothing names a column of a sample sheet or of the data's obs, and a CLS file holds "
         "only the labels"),
        (["ora", "--gene-sets", study / "sets.gmt", "--gene-list", study / "list.txt", "--expr", study / "expr.gct",
          "--top", 20, "--min-size", 5, "--permutations", 20],
         "--top belongs to expression mode"),
        (["ora", "--gene-sets", study / "sets.gmt", "--gene-list", study / "list.txt", "--expr", study / "expr.gct",
          "--cls", study / "pheno.cls", "--min-size", 5],
         "give either --gene-list or --expr with a phenotype, not both"),
        (["ora", "--gene-sets", study / "sets.gmt", "--gene-list", study / "list.txt", "--cls", study / "pheno.cls",
          "--min-size", 5], "give either --gene-list or --expr with a phenotype, not both"),
        (["gsea", *base, "--sample-sheet", sheet, "--contrasts", study / "contrasts.tsv", "--case", "t"],
         "--contrasts names the groups of every contrast; drop --case"),
        (["prerank", "--rnk", study / "ranks.rnk", "--gene-sets", study / "sets.gmt", "--min-size", 5,
          "--eps", 1e-10], "--eps sets the multilevel p-values; give --p-method multilevel too"),
        (["gsea", *base, "--cls", study / "pheno.cls", "--set-statistic", "maxmean", "--weight", 2],
         "--weight weighs the running sum (set statistic ks)"),
        # recorded in run.json, changing nothing
        (["gsea", *base, "--cls", study / "pheno.cls", "--min-cells", 50],
         "--min-cells 50 drops small pseudo-samples, and this run makes none: give --pseudobulk"),
    ]
    (study / "list.txt").write_text("\n".join(f"G{i}" for i in range(30)) + "\n")
    (study / "contrasts.tsv").write_text("name\tgroupby\tcase\tcontrol\ntn\tgroup\tt\tn\n")
    (study / "ranks.rnk").write_text("".join(f"G{i}\t{200 - i}\n" for i in range(200)))
    for index, (args, expected) in enumerate(cases):
        status, _, err = _run([*args, "--out", study / f"out{index}"], capsys)
        _one_line_error(status, err, expected)
        assert not (study / f"out{index}").exists()


def test_readers_skip_gct_comments_and_refuse_utf16_alike(study, capsys):
    """A '#' line inside GCT data is skipped, as GSEA does (it was counted as a row); a
    UTF-16 GCT or sample sheet gets the same line as every other reader, and a Latin-1
    sample sheet is read as Latin-1 GCT and CLS files are."""
    text = (study / "expr.gct").read_text().splitlines()
    (study / "commented.gct").write_text("\n".join(text[:5] + ["# a comment in the data"] + text[5:]) + "\n")
    read = permenrich.io.read_expression(study / "commented.gct")
    same = permenrich.io.read_expression(study / "expr.gct")
    assert np.array_equal(read.values, same.values) and list(read.gene_ids) == list(same.gene_ids)
    (study / "utf16.gct").write_bytes("\n".join(text).encode("utf-16"))
    with pytest.raises(InputError, match="utf16.gct: the file is UTF-16 text"):
        permenrich.io.read_expression(study / "utf16.gct")
    latin = study / "latin.tsv"
    latin.write_bytes("sample\tgroup\n".encode() + "".join(
        f"S{i}\t{'caf' + chr(233) if i < 6 else 'n'}\n" for i in range(12)).encode("latin-1"))
    table = permenrich.genes(study / "expr.gct", latin, groupby="group", permutations=20, device="cpu")
    assert table.attrs["run"]["parameters"]["case"] == "caf\u00e9"
    latin.write_bytes(latin.read_text(encoding="latin-1").encode("utf-16"))
    with pytest.raises(InputError, match="latin.tsv: the file is UTF-16 text"):
        permenrich.genes(study / "expr.gct", latin, groupby="group", permutations=20, device="cpu")


def test_numeric_cls_with_several_phenotypes_says_which_and_same_study_twice_in_meta(study, caplog):
    import logging

    (study / "numeric.cls").write_text("#numeric\n#age\n" + " ".join(str(30 + i) for i in range(12)) +
                                       "\n#bmi\n" + " ".join(str(20 + i % 5) for i in range(12)) + "\n")
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        permenrich.genes(study / "expr.gct", study / "numeric.cls", metric="pearson", permutations=20,
                         device="cpu")
    assert "numeric.cls: holds 2 phenotypes ('age', 'bmi'); correlating with the first, 'age'" in caplog.text
    caplog.clear()
    twice = [{"name": name, "expr": study / "expr.gct", "phenotype": study / "pheno.cls"} for name in ("a", "b")]
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        permenrich.meta(twice, permutations=20, threads=1)
    assert "studies 'a' and 'b' read the same expression data" in caplog.text
    with pytest.raises(OptionError, match="gene_sets= are tested with mode='gsea' or mode='ora'"):
        permenrich.meta(twice, study / "sets.gmt", permutations=20)
    with pytest.raises(OptionError, match="top= chooses the genes of mode='ora'"):
        permenrich.meta(twice, top=10, permutations=20)


def test_a_budget_too_small_for_the_run_is_said(tmp_path, caplog):
    """Memory audit: a text matrix over half of --memory was read whole, and batches of 64
    permutations exceeded a budget too small for them, both without a word."""
    import logging

    rng = np.random.default_rng(3)
    lines = ["#1.2", "2000\t40", "\t".join(["NAME", "Description", *[f"S{i}" for i in range(40)]])]
    lines += ["\t".join([f"G{g}", "na", *(f"{v:.4f}" for v in rng.normal(size=40))]) for g in range(2000)]
    (tmp_path / "big.gct").write_text("\n".join(lines) + "\n")
    (tmp_path / "pheno.cls").write_text("40 2 1\n# t n\n" + " ".join(["t"] * 20 + ["n"] * 20) + "\n")
    with caplog.at_level(logging.WARNING, logger="permenrich"):
        table = permenrich.genes(tmp_path / "big.gct", tmp_path / "pheno.cls", permutations=100, memory="1MB",
                                 device="cpu")
    warnings = table.attrs["run"]["warnings"]
    assert any("big.gct: read whole (640 kB as float64), over half of memory=: a text matrix cannot be streamed"
               in w for w in warnings), warnings
    assert any(w.startswith("a quarter of memory= holds the buffers of 3 permutations (64.2 kB each); batches take "
                            "64, 4.11 MB, above the budget") for w in warnings), warnings
