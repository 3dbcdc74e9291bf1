"""
Preranked GSEA from a published table
=====================================

When only a published differential-expression table is at hand (no samples), rank the
genes by a score and run preranked GSEA: the null draws random gene sets of the same
size from the ranked list, as GSEA preranked and fgsea do. This null ignores gene-gene
correlation, so prefer :func:`permenrich.gsea` when the samples are available.
"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import permenrich
from permenrich import pl

# %%
# A published table
# -----------------
# Here a small simulated one, shaped like a DESeq2 supplementary table (gene,
# log2 fold change, Wald statistic, adjusted p-value); the genes of ``UP_PROGRAM`` are
# shifted up and those of ``DOWN_PROGRAM`` down.

rng = np.random.default_rng(7)
genes = [f"GENE{i:04d}" for i in range(2000)]
stat = rng.normal(size=len(genes))
stat[:40] += 2.0
stat[40:70] -= 1.5
published = pd.DataFrame({"gene": genes, "log2FoldChange": stat / 3, "stat": stat,
                          "padj": np.clip(np.exp(-np.abs(stat)), 0, 1)}).sample(frac=1.0, random_state=1)
workdir = Path(tempfile.mkdtemp())
published.to_csv(workdir / "supplementary_table_S2.csv", index=False)

gene_sets = {"UP_PROGRAM": genes[:40], "DOWN_PROGRAM": genes[40:70]}
gene_sets.update({f"RANDOM_{k}": list(rng.choice(genes, size=30, replace=False)) for k in range(20)})

# %%
# Ranking the genes
# -----------------
# A two-column DataFrame (gene, score) or a Series indexed by gene is a ranked list;
# genes are ranked by decreasing score. The Wald statistic keeps the sign and the
# strength of the evidence (a fold change alone ignores the noise).

table = pd.read_csv(workdir / "supplementary_table_S2.csv")
ranking = table.set_index("gene")["stat"]
result = permenrich.prerank(ranking, gene_sets, permutations=1000, seed=0, min_size=10)
result[["gene_set", "size", "nes", "pval", "fdr"]].head(5)

# %%
# The same from an RNK file
# -------------------------
# A tab-separated file of gene and score (GSEA's ``.rnk``) gives the same table.

table[["gene", "stat"]].to_csv(workdir / "ranked.rnk", sep="\t", index=False, header=False)
from_file = permenrich.prerank(workdir / "ranked.rnk", gene_sets, permutations=1000, seed=0, min_size=10)
from_file[["gene_set", "nes", "pval"]].equals(result[["gene_set", "nes", "pval"]])

# %%
# Small p-values: multilevel splitting
# ------------------------------------
# Permutation p-values cannot fall below 1/(permutations + 1). ``p_method="multilevel"``
# (fgseaMultilevel's method) estimates far smaller ones, with their error in
# ``log2err``.

multilevel = permenrich.prerank(ranking, gene_sets, permutations=1000, seed=0, min_size=10,
                                p_method="multilevel")
multilevel[["gene_set", "nes", "pval", "log2err"]].head(3)

# %%
# The enrichment plot of a preranked result:

enrichment_figure = pl.enrichment(result, "UP_PROGRAM")
