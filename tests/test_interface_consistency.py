"""The interfaces agree with each other and with what they record (interface audit):
options that a run would ignore or override are refused, before any file is read; the
Python API checks what the command line checks; run.json records how the data were read."""

import re

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.cli import main
from permenrich.errors import OptionError


def _expr(n_genes=40, n_samples=12, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(8, 1, size=(n_genes, n_samples))
    values[:8, : n_samples // 2] += 1.5
    return pd.DataFrame(values, index=[f"G{i}" for i in range(n_genes)],
                        columns=[f"S{j}" for j in range(n_samples)])


LABELS = ["t"] * 6 + ["n"] * 6


@pytest.mark.parametrize("options, message", [
    (dict(threads=1.5), "threads= must be a positive integer, got 1.5"),  # ran, and run.json said 1.5
    (dict(threads="2"), "threads= must be a positive integer, got '2'"),  # a TypeError
    (dict(batch_size=2.7), "batch_size= must be a positive integer, got 2.7"),  # cut to 2
    (dict(batch_size="x"), "batch_size= must be a positive integer, got 'x'"),  # a ValueError
    (dict(covariates=[]), "covariates= names no column"),  # an unadjusted run
    (dict(metric="foo"), "metric='foo' is not a metric; choose one of"),  # named no option
    (dict(pseudobulk_method="mean"), "pseudobulk_method='mean' says how cells are combined"),  # ignored
])
def test_the_api_refuses_what_the_command_line_refuses(options, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        permenrich.genes(_expr(), LABELS, case="t", control="n", permutations=10, **options)


def test_meta_refuses_set_options_of_other_modes():
    """meta in genes mode ran with set_statistic, weight, min_size or max_size and ignored them."""
    studies = [{"name": f"s{k}", "expr": _expr(seed=k), "phenotype": LABELS, "case": "t", "control": "n"}
               for k in range(2)]
    for options, message in ((dict(set_statistic="maxmean"), "set_statistic= applies to mode='gsea', not to "
                                                              "mode='genes'"),
                             (dict(weight=2.0), "weight= applies to mode='gsea'"),
                             (dict(min_size=3), "min_size= applies to mode='gsea' or mode='ora'"),
                             (dict(mode="ora", top=5, gene_sets={"A": ["G1", "G2"]}, set_statistic="mean"),
                              "set_statistic= applies to mode='gsea', not to mode='ora'")):
        with pytest.raises(OptionError, match=re.escape(message)):
            permenrich.meta(studies, permutations=10, **options)


def test_contrasts_refuse_what_each_contrast_would_override_before_reading(tmp_path):
    """case=, control= and groupby= were silently replaced by the contrast table's, gene
    sets were ignored in genes mode, and a misspelt option was a TypeError after the
    matrix had been read: each is now refused first (the matrix here does not exist)."""
    missing = str(tmp_path / "not_there.gct")
    spec = pd.DataFrame({"name": ["tn"], "groupby": ["group"], "case": ["t"], "control": ["n"]})
    for options, message in ((dict(case="t"), "the contrasts name the groups of every contrast; drop case="),
                             (dict(groupby="batch"), "drop groupby="),
                             (dict(mode="genes", gene_sets={"A": ["G1"]}), "mode='genes' tests genes: drop "
                                                                           "gene_sets="),
                             (dict(mode="genes", permutation=5), "permutation= is not an option of genes()"),
                             (dict(gene_sets={"A": ["G1"]}, set_statistc="mean"), "set_statistc= is not an "
                                                                                  "option of gsea()")):
        with pytest.raises(OptionError, match=re.escape(message)):
            permenrich.contrasts(missing, spec, **options)


def test_run_json_records_how_the_data_were_read(tmp_path, capsys):
    """genes recorded no chip, ora's expression mode neither the chip nor the phenotype
    file nor collapse/nan_policy, and the contrasts recorded genes()'s defaults (collapse
    mean, nan_policy error) whatever they had been given; multilevel recorded a sample
    size of 100 where it used 101."""
    expr = _expr()
    probes = expr.copy()
    probes.index = [f"p{i}" for i in range(40)]
    probes.to_csv(tmp_path / "probes.tsv", sep="\t", index_label="probe")
    (tmp_path / "probes.chip.tsv").write_text("".join(f"p{i}\tG{i // 2}\n" for i in range(40)))
    sheet = pd.DataFrame({"group": LABELS}, index=expr.columns)
    sheet.to_csv(tmp_path / "sheet.tsv", sep="\t", index_label="sample")
    chip, table, sheet_path = (str(tmp_path / name) for name in ("probes.chip.tsv", "probes.tsv", "sheet.tsv"))
    genes = permenrich.genes(table, sheet_path, groupby="group", case="t", control="n", chip=chip,
                             collapse="max", permutations=10)
    run = genes.attrs["run"]
    assert run["data"]["chip"]["sha256"] and run["data"]["phenotype"]["sha256"]
    assert run["parameters"]["collapse"] == "max" and run["parameters"]["groupby"] == "group"
    ora = permenrich.ora(None, {"A": [f"G{i}" for i in range(5)], "B": [f"G{i}" for i in range(5, 12)]},
                         expr=table, phenotype=sheet_path, groupby="group", case="t", control="n", chip=chip,
                         collapse="max", top=4, permutations=10, min_size=2)
    run = ora.attrs["run"]
    assert run["data"]["chip"]["sha256"] == genes.attrs["run"]["data"]["chip"]["sha256"]
    assert run["data"]["phenotype"]["sha256"] and run["parameters"]["collapse"] == "max"
    assert run["parameters"]["nan_policy"] == "error"
    spec = pd.DataFrame({"name": ["tn"], "groupby": ["group"], "case": ["t"], "control": ["n"]})
    screen = permenrich.contrasts(table, spec, mode="genes", phenotype=sheet_path, chip=chip, collapse="max",
                                  nan_policy="drop", permutations=10)
    run = screen.attrs["run"]
    assert run["parameters"]["collapse"] == "max" and run["parameters"]["nan_policy"] == "drop"
    assert run["data"]["chip"]["sha256"] and run["data"]["phenotype"]["sha256"]
    each = run["contrasts"]["tn"]
    assert each["parameters"]["collapse"] == "max" and each["parameters"]["nan_policy"] == "drop"
    assert each["data"]["phenotype"]["sha256"] == run["data"]["phenotype"]["sha256"]
    assert each["data"]["expression"] == run["data"]["expression"] and each["data"]["chip"] == run["data"]["chip"]
    scores = pd.Series(np.random.default_rng(3).normal(size=40), index=expr.index)
    pre = permenrich.prerank(scores, {"A": list(expr.index[:10])}, p_method="multilevel", sample_size=100,
                             permutations=20, min_size=5)
    assert pre.attrs["run"]["parameters"]["sample_size"] == 101
    with pytest.raises(SystemExit):
        main(["meta", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "never enumerated" in help_text and "all labellings are enumerated" not in help_text
    assert "GMT/GMX files (--mode gsea or ora)" in help_text


def test_the_meta_manifest_takes_every_key_a_study_mapping_takes(tmp_path):
    """The manifest refused pseudobulk, min_cells, phenotype_column (which a study's
    mapping took), and neither took layer or use_raw: an h5ad's count layer could not be
    meta-analysed."""
    from permenrich.errors import InputError
    from permenrich.modes.meta import MANIFEST_COLUMNS, STUDY_KEYS, read_manifest

    assert set(MANIFEST_COLUMNS) - {"study"} == set(STUDY_KEYS) - {"name"}
    manifest = tmp_path / "studies.tsv"
    manifest.write_text("study\texpr\tpseudobulk\tpseudobulk_method\tmin_cells\tlayer\tuse_raw\tphenotype_column\n"
                        "a\ta.h5ad\tdonor\tmean\t5\tcounts\tfalse\t\n"
                        "b\tb.h5ad\t\t\t\t\tTrue\tage\n")
    first, second = read_manifest(manifest)
    assert first == {"name": "a", "expr": str(tmp_path / "a.h5ad"), "pseudobulk": "donor", "pseudobulk_method": "mean",
                     "min_cells": 5, "layer": "counts", "use_raw": False}
    assert second["use_raw"] is True and second["phenotype_column"] == "age"
    for column, value, message in (("min_cells", "five", "column 'min_cells' must be a whole number"),
                                   ("use_raw", "maybe", "column 'use_raw' must be true or false")):
        manifest.write_text(f"study\texpr\t{column}\na\ta.h5ad\t{value}\n")
        with pytest.raises(InputError, match=re.escape(f"studies.tsv: line 2: {message}")):
            read_manifest(manifest)


def test_permutations_may_be_written_as_a_float_literal():
    """The README writes limits as 1e10; --permutations 1e5 was an 'invalid int value'."""
    from permenrich.cli import UsageError, build_parser

    parser = build_parser()
    args = parser.parse_args(["genes", "--expr", "x.gct", "--cls", "x.cls", "--out", "o", "--permutations", "1e5"])
    assert args.permutations == 100000 and isinstance(args.permutations, int)
    for bad in ("1.5e0", "lots", "inf"):
        with pytest.raises(UsageError, match="is not a whole number"):
            parser.parse_args(["genes", "--expr", "x.gct", "--cls", "x.cls", "--out", "o", "--permutations", bad])
