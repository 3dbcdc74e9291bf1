"""The command line: a real run writes results.tsv + run.json; every user mistake is one
line on stderr, exit status 2, and nothing half-written."""

import json

import numpy as np
import pandas as pd
import pytest

from permenrich.api import RESULT_COLUMNS
from permenrich.cli import main


def _write_gct(path, values, genes, samples):
    lines = ["#1.2", f"{len(genes)}\t{len(samples)}", "\t".join(["NAME", "Description", *samples])]
    for gene, row in zip(genes, values):
        lines.append("\t".join([gene, "na", *(f"{v:.6g}" for v in row)]))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def small_study(tmp_path):
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(200)]
    samples = [f"S{i}" for i in range(12)]
    values = rng.normal(8, 1, size=(200, 12))
    values[:20, :6] += 1.5  # set UP is shifted in the first class
    _write_gct(tmp_path / "expr.gct", values, genes, samples)
    (tmp_path / "pheno.cls").write_text("12 2 1\n# tumour normal\n" + " ".join(["tumour"] * 6 + ["normal"] * 6) + "\n")
    (tmp_path / "sets.gmt").write_text(
        "UP\tplanted\t" + "\t".join(genes[:20]) + "\n"
        "RANDOM\tnull\t" + "\t".join(genes[100:130]) + "\n")
    return tmp_path


def _run(args, capsys):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_gsea_cli_writes_results_and_provenance(small_study, capsys):
    out = small_study / "out"
    status, stdout, err = _run(["gsea", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
                                "--gene-sets", small_study / "sets.gmt", "--permutations", 200, "--seed", 0,
                                "--out", out, "--quiet"], capsys)
    assert status == 0, err
    table = pd.read_csv(out / "results.tsv", sep="\t")
    assert list(table.columns) == RESULT_COLUMNS
    assert table.gene_set.iloc[0] == "UP" and table.nes.iloc[0] > 0 and table.pval.iloc[0] < 0.05
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["seed"] == 0 and run["parameters"]["case"] == "tumour"
    assert len(run["data"]["expression"]["sha256"]) == 64
    assert sorted(p.name for p in out.iterdir()) == ["results.tsv", "run.json"]


def test_exact_enumeration_is_reported(small_study, capsys):
    status, stdout, err = _run(["gsea", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
                                "--gene-sets", small_study / "sets.gmt", "--permutations", 5000,
                                "--out", small_study / "o", "--quiet"], capsys)
    assert status == 0, err
    assert "924 permutations (exact enumeration of all labellings)" in stdout


def _edit_gct_field(directory, gene, column, value):
    """Replace field ``column`` (0-based, NAME = 0) of ``gene``'s line in expr.gct."""
    path = directory / "expr.gct"
    lines = path.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(gene + "\t"))
    fields = lines[row].split("\t")
    fields[column] = value
    lines[row] = "\t".join(fields)
    path.write_text("\n".join(lines) + "\n")


def _replace(directory, name, old, new):
    path = directory / name
    path.write_text(path.read_text().replace(old, new, 1))


# name -> (how to break the study, extra CLI options, text the error must contain)
BAD_CASES = {
    "gct_non_numeric": (lambda d: _edit_gct_field(d, "G5", 4, "12,5"), {}, "expr.gct"),
    "gct_wrong_row_count": (lambda d: _replace(d, "expr.gct", "200\t12", "201\t12"), {}, "expr.gct"),
    "cls_count_mismatch": (lambda d: (d / "pheno.cls").write_text(
        "11 2 1\n# tumour normal\n" + " ".join(["tumour"] * 6 + ["normal"] * 5) + "\n"), {}, "pheno.cls"),
    "one_class_only": (lambda d: (d / "pheno.cls").write_text(
        "12 1 1\n# tumour\n" + " ".join(["tumour"] * 12) + "\n"), {}, "tumour"),
    "nan_value": (lambda d: _edit_gct_field(d, "G7", 2, "NA"), {}, "G7"),
    "unknown_metric": (lambda d: None, {"--metric": "snr"}, "unknown metric"),
    "no_set_survives": (lambda d: (d / "sets.gmt").write_text("TINY\tx\tG1\tG2\n"), {}, "--min-size"),
    "gmt_short_line": (lambda d: (d / "sets.gmt").write_text("BROKEN\n"), {}, "sets.gmt"),
    "unknown_case": (lambda d: None, {"--case": "healthy"}, "healthy"),
    "output_is_a_file": (lambda d: (d / "out").write_text("not a dir"), {}, "out"),
}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(small_study, capsys, name):
    break_study, options, expected_in_message = BAD_CASES[name]
    break_study(small_study)
    out = small_study / "out"
    args = ["gsea", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
            "--gene-sets", small_study / "sets.gmt", "--permutations", 50, "--out", out, "--quiet"]
    for key, value in options.items():
        args += [key, value]
    status, stdout, err = _run(args, capsys)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("permenrich: error: "), err
    assert expected_in_message in lines[0]
    assert not out.is_dir() or name == "output_is_a_file"


def test_nan_policy_drop_and_zero_variance_error(small_study, capsys):
    for column in range(2, 14):
        _edit_gct_field(small_study, "G150", column, "5")
    base = ["gsea", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
            "--gene-sets", small_study / "sets.gmt", "--permutations", 50, "--quiet"]
    status, _, err = _run(base + ["--out", small_study / "a", "--zero-variance", "error"], capsys)
    assert status == 2 and "G150" in err and "zero variance" in err
    status, _, err = _run(base + ["--out", small_study / "b"], capsys)
    assert status == 0, err


def test_prerank_genes_ora_commands(small_study, capsys, tmp_path):
    rnk = tmp_path / "list.rnk"
    rng = np.random.default_rng(1)
    rnk.write_text("".join(f"G{i}\t{s:.4f}\n" for i, s in enumerate(np.sort(rng.normal(size=200))[::-1])))
    status, stdout, err = _run(["prerank", "--rnk", rnk, "--gene-sets", small_study / "sets.gmt",
                                "--permutations", 100, "--out", tmp_path / "p", "--quiet"], capsys)
    assert status == 0, err
    assert list(pd.read_csv(tmp_path / "p" / "results.tsv", sep="\t").columns) == RESULT_COLUMNS
    status, stdout, err = _run(["genes", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
                                "--permutations", 200, "--out", tmp_path / "g", "--quiet"], capsys)
    assert status == 0, err
    table = pd.read_csv(tmp_path / "g" / "results.tsv", sep="\t")
    planted = table.gene.isin([f"G{i}" for i in range(20)])
    assert len(table) == 200 and table.pval[planted].median() < 0.05 and table.pval[~planted].median() > 0.3
    gene_list = tmp_path / "list.txt"
    gene_list.write_text("\n".join(f"G{i}" for i in range(25)) + "\n")
    status, stdout, err = _run(["ora", "--gene-list", gene_list, "--expr", small_study / "expr.gct",
                                "--gene-sets", small_study / "sets.gmt", "--out", tmp_path / "o", "--quiet"], capsys)
    assert status == 0, err
    status, stdout, err = _run(["ora", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
                                "--top", 20, "--gene-sets", small_study / "sets.gmt", "--permutations", 100,
                                "--out", tmp_path / "oe", "--quiet"], capsys)
    assert status == 0, err
    table = pd.read_csv(tmp_path / "oe" / "results.tsv", sep="\t")
    assert table.gene_set.iloc[0] == "UP" and table.pval_perm.iloc[0] < 0.05


@pytest.mark.parametrize("args,expected", [
    (["prerank", "--rnk", "{d}/dup.rnk"], "duplicates"),
    (["genes", "--expr", "{d}/expr.gct", "--cls", "{d}/pheno.cls", "--alternative", "bigger"], "alternative"),
    (["ora", "--gene-list", "{d}/none.txt", "--universe", "{d}/none.txt"], "none.txt"),
    (["gsea", "--expr", "{d}/expr.gct", "--sample-sheet", "{d}/sheet.tsv", "--groupby", "group",
      "--strata", "batch"], "single sample"),
])
def test_more_bad_inputs(small_study, capsys, args, expected):
    (small_study / "dup.rnk").write_text("G1\t1.0\nG2\t0.5\nG1\t0.1\n")
    (small_study / "none.txt").write_text("")
    sheet = pd.DataFrame({"sample": [f"S{i}" for i in range(12)], "group": ["t"] * 6 + ["n"] * 6,
                          "batch": ["b1"] * 11 + ["b2"]})
    sheet.to_csv(small_study / "sheet.tsv", sep="\t", index=False)
    full = [a.format(d=small_study) for a in args]
    if "--gene-sets" not in full and args[0] != "genes":
        full += ["--gene-sets", str(small_study / "sets.gmt")]
    full += ["--out", str(small_study / "out"), "--quiet", "--permutations", "20"]
    status, stdout, err = _run(full, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0], err
    assert not (small_study / "out").exists()
