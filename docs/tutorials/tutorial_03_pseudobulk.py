"""
Single cells: pseudobulk, one cell type against the rest
========================================================

Cells of one donor are not independent replicates: permuting labels across cells makes
p-values far too small (pseudoreplication). With ``pseudobulk="donor"`` the cells of
each donor and cell type are summed into one pseudo-sample, and the donors are what is
permuted. Pseudo-samples of fewer than ``min_cells`` cells (default 10) are dropped, with
a design warning. The data here are a small synthetic AnnData; a real one from scanpy
works the same (counts in a layer: ``layer="counts"``).
"""

import anndata
import numpy as np
import pandas as pd

import permenrich
from permenrich import pl

# %%
# A synthetic AnnData
# -------------------
# Six donors, three cell types, raw counts; each cell type expresses its own program
# of 20 genes more highly. One donor has only four NK cells.

rng = np.random.default_rng(0)
n_genes = 400
genes = [f"G{i:03d}" for i in range(n_genes)]
programs = {"T": genes[0:20], "B": genes[20:40], "NK": genes[40:60]}
rows = []
for donor in [f"donor{i}" for i in range(6)]:
    for cell_type in programs:
        n_cells = 4 if (donor, cell_type) == ("donor5", "NK") else int(rng.integers(25, 40))
        rows += [(donor, cell_type)] * n_cells
obs = pd.DataFrame(rows, columns=["donor", "cell_type"], index=[f"cell{i}" for i in range(len(rows))])
rate = np.full((len(obs), n_genes), 2.0)
for cell_type, members in programs.items():
    rate[np.ix_((obs.cell_type == cell_type).to_numpy(), [genes.index(g) for g in members])] *= 2.5
adata = anndata.AnnData(X=rng.poisson(rate).astype(np.float32), obs=obs, var=pd.DataFrame(index=genes))
adata

# %%
# Gene sets
# ---------
# The three programs and some random sets. A decoupler/OmniPath network (a DataFrame
# with ``source`` and ``target`` columns) is accepted as well.

gene_sets = {f"{name}_PROGRAM": members for name, members in programs.items()}
gene_sets.update({f"RANDOM_{k}": list(rng.choice(genes, size=20, replace=False)) for k in range(10)})

# %%
# Every cell type against the rest
# --------------------------------
# :func:`permenrich.tl.gsea` runs :func:`permenrich.gsea` once per group (``case=group``,
# ``control="rest"``) and stores the results in ``adata.uns["permenrich"]``. The pseudo-
# samples are log-CPM normalised after summing, and labels are permuted within donors
# (``strata="donor"``), since every donor contributes every cell type.

permenrich.tl.gsea(adata, gene_sets, groupby="cell_type", pseudobulk="donor", normalize="log1p_cpm",
                   strata="donor", min_size=10, permutations=200, seed=0)
stored = adata.uns["permenrich"]["permenrich_gsea"]
stored["results"][["group", "gene_set", "nes", "pval", "fdr"]].groupby("group").head(2)

# %%
# The donor x NK pseudo-sample of four cells was dropped, and the run says so:

import json  # noqa: E402

nk_run = json.loads(stored["runs"].loc["NK", "run"])
nk_run["design"]["pseudobulk"]["dropped"], nk_run["design"]["warnings"]

# %%
# A figure of one group's results, straight from the AnnData:

dotplot_figure = pl.dotplot(adata, key="permenrich_gsea", group="T", top=4)

# %%
# The same contrasts with :func:`permenrich.contrasts` read and pseudobulk the matrix once
# for all groups; the table has a leading ``contrast`` column.

table = permenrich.contrasts(adata, one_vs_rest="cell_type", gene_sets=gene_sets, pseudobulk="donor",
                             normalize="log1p_cpm", strata="donor", min_size=10, permutations=200, seed=0)
table[["contrast", "gene_set", "nes", "fdr"]].groupby("contrast").head(1)
