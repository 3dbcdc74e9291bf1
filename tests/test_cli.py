"""The command line: a real run writes results.tsv + run.json; every user mistake is one
line on stderr, exit status 2, and nothing half-written."""

import json
import os

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
    assert sorted(p.name for p in out.iterdir()) == ["ranking.tsv", "results.tsv", "run.json"]
    ranked = pd.read_csv(out / "ranking.tsv", sep="\t")
    assert list(ranked.columns) == ["gene", "statistic"] and ranked.statistic.is_monotonic_decreasing
    assert stdout.rstrip().endswith(f"wrote {out / 'results.tsv'}, {out / 'ranking.tsv'} and {out / 'run.json'}")
    assert "tumour (n = 6) vs normal (n = 6), 200 permutations" in stdout  # which class is the case


def test_demo_names_every_file_it_wrote(small_study, capsys, monkeypatch):
    """The demo's last line listed results.tsv and run.json, not the ranking.tsv beside
    them: it now lists the files as run.json records them (a small GSEA stands in for
    the demo's 20,000-gene run)."""
    import permenrich
    from permenrich import demo

    def small_demo(out, **_):
        table = permenrich.gsea(str(small_study / "expr.gct"), str(small_study / "pheno.cls"),
                                str(small_study / "sets.gmt"), permutations=50, threads=1)
        permenrich.write_results(table, out)
        return table

    monkeypatch.setattr(demo, "run_demo", small_demo)
    monkeypatch.setattr(demo, "format_demo_summary", lambda table: "summary")
    out = small_study / "demo_out"
    status, stdout, err = _run(["demo", "--out", out, "--quiet"], capsys)
    assert status == 0, err
    assert stdout.rstrip().splitlines()[-1] == f"wrote {out / 'results.tsv'}, {out / 'ranking.tsv'} and {out / 'run.json'}"


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
    "unknown_metric": (lambda d: None, {"--metric": "snr"}, "--metric snr is not a metric"),
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
    # a file in another file's place is named by its part in the run, not by a parse error
    (["gsea", "--expr", "{d}/sets.gmt", "--cls", "{d}/pheno.cls"], "sets.gmt: this is a gene-set file, not an "
     "expression matrix (by its .gmt ending); give it as --gene-sets"),
    (["prerank", "--rnk", "{d}/expr.gct"], "this is an expression matrix (GCT), not a ranked list"),
    (["gsea", "--expr", "{d}/pheno.cls", "--cls", "{d}/pheno.cls"], "give it as --cls/--sample-sheet"),
    (["gsea", "--expr", "{d}/expr.gct", "--cls", "{d}/pheno.cls", "--gene-sets", "{d}/expr.gct"],
     "not a gene-set file (by its .gct ending); give it as --expr"),
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
    full += ["--out", str(small_study / "out"), "--quiet"]
    if "--gene-list" not in full:  # list mode permutes nothing, and refuses the option
        full += ["--permutations", "20"]
    status, stdout, err = _run(full, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0], err
    assert not (small_study / "out").exists()


def test_importing_the_cli_is_light():
    """The console script imports permenrich.cli before main() can catch Ctrl-C: it must
    not pull in the numerical stack (seconds of imports) at that point."""
    import subprocess
    import sys

    code = "import permenrich.cli, sys; print('numba' in sys.modules, 'pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_threads_option_sizes_numbas_and_the_blas_pools():
    """--threads N caps every thread pool (Numba's, the BLAS's), keeping what the user
    set; it acts before NumPy loads, so it is checked in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import argparse, os, permenrich.cli as c; c._size_thread_pool(argparse.Namespace(threads=3)); "
            "print(*[os.environ.get(v) for v in c.THREAD_POOL_VARIABLES])")
    environment = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                    "MKL_NUM_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    assert done.stdout.split() == ["3", "3", "3", "3"]
    environment["OPENBLAS_NUM_THREADS"] = "2"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    assert done.stdout.split() == ["3", "2", "3", "3"]


def test_console_entry_exits_with_mains_status_and_freezes_the_heap(monkeypatch):
    """The command exits with main()'s status, having moved every object to the
    collector's permanent generation (the interpreter's teardown then skips its passes
    over them); main() itself, called from Python, leaves the caller's heap alone."""
    import gc

    import permenrich.cli

    monkeypatch.setattr(permenrich.cli, "main", lambda: 3)
    assert gc.get_freeze_count() == 0
    try:
        with pytest.raises(SystemExit) as info:
            permenrich.cli.entry()
        assert info.value.code == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_lazy_package_keeps_every_public_name():
    import permenrich

    for name in permenrich.__all__:
        assert getattr(permenrich, name) is not None, name
    assert permenrich.__version__ == "0.1.0" and permenrich.api.gsea is permenrich.gsea
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        permenrich.nope  # noqa: B018


@pytest.mark.parametrize("where", ["parsing", "command"])
def test_interrupt_anywhere_in_main_is_one_line_exit_130(small_study, capsys, monkeypatch, where):
    import permenrich.api
    from permenrich import cli

    out = small_study / "out"
    args = ["genes", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
            "--permutations", 20, "--out", out, "--quiet"]
    assert _run(args, capsys)[0] == 0  # a previous output, left untouched by the interrupted run
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli if where == "parsing" else permenrich.api,
                        "build_parser" if where == "parsing" else "genes", interrupt)
    status, stdout, err = _run(args, capsys)
    assert status == 130
    expected = "no output was written" if where == "parsing" else f"no output was written; {out} is untouched"
    assert err.splitlines() == [f"permenrich: interrupted; {expected}"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in small_study.iterdir()) == ["expr.gct", "out", "pheno.cls", "sets.gmt"]


def test_out_of_memory_is_one_line(small_study, capsys, monkeypatch):
    """A budget beyond what the machine (or a job's limit) holds ends in numpy's
    MemoryError: one line naming --memory and what was left, status 2, not a traceback."""
    import permenrich.api

    out = small_study / "out"
    args = ["genes", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
            "--permutations", 20, "--memory", "20GB", "--out", out, "--quiet"]

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.45 GiB for an array with shape (20000, 50000)")

    monkeypatch.setattr(permenrich.api, "genes", exhausted)
    status, _, err = _run(args, capsys)
    assert status == 2 and err.splitlines() == [
        "permenrich: error: out of memory (--memory 20GB): this machine or job has less free memory than the run "
        "needs; give a smaller --memory (a matrix over half of it is then streamed from an HDF5/h5ad file) or run "
        "where more memory is free; no output was written"]
    assert not out.exists()


@pytest.mark.parametrize("args,command", [
    ([], ""),
    (["nosuch"], ""),
    (["gsea"], "gsea "),
    (["genes", "--expr", "x.gct", "--cls", "x.cls", "--out", "o", "--permutations", "many"], "genes "),
    (["genes", "--expr", "x.gct", "--cls", "x.cls", "--sample-sheet", "s.tsv", "--out", "o"], "genes "),
    (["prerank", "--rnk", "x.rnk", "--gene-sets", "s.gmt", "--out", "o", "--bogus"], "prerank "),
    (["prerank", "--rnk", "x.rnk", "--gene-set", "s.gmt", "--out", "o"], "prerank "),  # a typo, not a prefix
])
def test_usage_errors_are_one_line(capsys, args, command):
    status, stdout, err = _run(args, capsys)
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("permenrich: error: ") and lines[0].endswith(f"; see 'permenrich {command}--help'")


def test_weight_help_and_bad_weights(small_study, capsys, tmp_path):
    for command in ("gsea", "prerank"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "any finite number >= 0 (GSEA's choices are 0 = classic KS, 1 = default, 1.5, 2)" in " ".join(
            capsys.readouterr().out.split())
    rnk = tmp_path / "list.rnk"
    rnk.write_text("".join(f"G{i}\t{200 - i}\n" for i in range(200)))
    for weight in ("-1", "nan"):
        for args in (["gsea", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls"],
                     ["prerank", "--rnk", rnk]):
            status, stdout, err = _run([*args, "--gene-sets", small_study / "sets.gmt", "--weight", weight,
                                        "--out", tmp_path / "out", "--quiet"], capsys)
            lines = err.splitlines()
            assert status == 2 and len(lines) == 1 and "weight must be a finite number >= 0" in lines[0], err
    assert not (tmp_path / "out").exists()


def test_ora_without_list_or_expression_says_what_to_give(small_study, capsys):
    status, stdout, err = _run(["ora", "--gene-sets", small_study / "sets.gmt", "--out", small_study / "out"], capsys)
    assert status == 2 and err.splitlines() == [
        "permenrich: error: give --gene-list FILE (list mode), or --expr FILE with a phenotype and --top N or "
        "--fdr Q (expression mode)"]


@pytest.mark.parametrize("value", ["soon", "-1", "inf"])
def test_bad_progress_delay_is_one_line(small_study, capsys, monkeypatch, value):
    monkeypatch.setenv("PERMENRICH_PROGRESS_DELAY", value)
    status, stdout, err = _run(["genes", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
                                "--out", small_study / "out"], capsys)
    assert status == 2 and err.splitlines() == [
        f"permenrich: error: PERMENRICH_PROGRESS_DELAY must be a number of seconds >= 0, got {value!r}; "
        "unset it for the default (2)"]


def test_progress_delay_zero_prints_after_the_first_batch(small_study, capsys, monkeypatch):
    monkeypatch.setenv("PERMENRICH_PROGRESS_DELAY", "0")
    status, stdout, err = _run(["genes", "--expr", small_study / "expr.gct", "--cls", small_study / "pheno.cls",
                                "--permutations", 300, "--batch-size", 100, "--out", small_study / "out"], capsys)
    assert status == 0, err
    progress = [line for line in err.splitlines() if line.startswith("permutations ")]
    assert progress[0].startswith("permutations 100/300 (33%) "), err


@pytest.mark.parametrize("flags, out, permutations", [
    ([], "demo_out", 10000), (["--cohort"], "demo_cohort_out", 2000), (["--meta"], "demo_meta_out", 2000),
    (["--meta", "--permutations", "10000"], "demo_meta_out", 10000),  # was silently 2,000
    (["--cohort", "--out", "mine", "--permutations", "500"], "mine", 500)])
def test_each_demo_has_its_own_folder_and_permutations_as_given(flags, out, permutations):
    from permenrich.cli import _demo_defaults, build_parser

    args = build_parser().parse_args(["demo", *flags])
    _demo_defaults(args)
    assert (args.out, args.permutations) == (out, permutations)


def test_python_dash_m_runs_the_command():
    """'python -m permenrich' said 'No module named permenrich.__main__'."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "permenrich", "gsea", "--permutations", "-3"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("permenrich: error: ")
    assert "Traceback" not in done.stderr


def test_an_error_spanning_lines_is_printed_on_one(tmp_path, monkeypatch, capsys):
    """h5py's messages span lines: the CLI's one-line promise held only for our own text."""
    import permenrich.cli
    from permenrich.errors import InputError

    def fails(args):
        raise InputError("cells.h5ad: cannot read (Unable to open file\n  (file read failed)\r\n)")

    monkeypatch.setitem(permenrich.cli._COMMANDS, "gsea", fails)
    status = main(["gsea", "--expr", "cells.h5ad", "--gene-sets", "s.gmt", "--out",
                                  str(tmp_path / "o")])
    assert status == 2
    assert capsys.readouterr().err == ("permenrich: error: cells.h5ad: cannot read (Unable to open file (file read "
                                       "failed) )\n")
