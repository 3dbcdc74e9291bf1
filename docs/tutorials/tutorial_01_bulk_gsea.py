"""
Bulk GSEA with figures
======================

Phenotype-permutation GSEA of a bulk cohort: the case and control labels are permuted,
so the gene-gene correlation of the samples stays in the null. The data are a small
version of the SIMULATED cohort of ``permenrich demo`` (random numbers shaped like a
whole-blood VTE-vs-control study; no patient data), with its curated JAK-STAT gene sets
mixed into simulated background sets. Figures need matplotlib (``pip install
permenrich[plot]``).
"""

import tempfile
from pathlib import Path

import permenrich
from permenrich import pl
from permenrich.demo import demo_gene_sets, make_demo_cohort

# %%
# The data
# --------
# An h5ad file: samples x genes, with the class of each sample in ``obs["group"]``.
# The sizes are kept small so that this page builds in seconds; the demo command uses
# 133 samples and 20,000 genes.

workdir = Path(tempfile.mkdtemp())
cohort = make_demo_cohort(workdir / "cohort.h5ad", n_cases=20, n_controls=20, n_genes=3000)
gene_sets = demo_gene_sets(n_background=40, n_genes=3000)
len(gene_sets)

# %%
# GSEA
# ----
# ``groupby`` names the ``obs`` column and ``case``/``control`` the classes compared.
# Each permutation k is a pure function of ``(seed, k)``: the same call gives the same
# table on any machine, CPU or GPU. 200 permutations keep this page fast; use 1,000 or
# more for real work.

result = permenrich.gsea(cohort, None, gene_sets, groupby="group", case="VTE", control="control",
                         permutations=200, seed=0)
result[["gene_set", "size", "nes", "pval", "fdr"]].head(8)

# %%
# The run's provenance (what ``run.json`` holds once written with
# :func:`permenrich.write_results`) travels with the table:

run = result.attrs["run"]
run["design"]["n_case"], run["design"]["n_control"], run["parameters"]["permutations"]

# %%
# Figures
# -------
# The classic enrichment plot of the top set: running sum, set members along the ranked
# genes, and the ranked statistic.

top_set = result.gene_set.iloc[0]
enrichment_figure = pl.enrichment(result, top_set)

# %%
# The top sets of each sign by NES (dot area: set size; colour: FDR).

dotplot_figure = pl.dotplot(result, top=8)

# %%
# Writing the results
# -------------------
# ``results.tsv`` and ``run.json`` are written together (a folder is replaced as a
# whole, never half-written); ``permenrich report`` / :func:`permenrich.report` turn
# such a folder into an HTML page.

paths = permenrich.write_results(result, workdir / "out")
sorted(path.name for path in (workdir / "out").iterdir())
