"""Calibration of the permutation machinery on simulated data (fixed seeds, CI-sized).

Under no effect, with correlated genes, permutation p-values are uniform; maxT controls
the family-wise error rate; BH controls the FDR; and power rises with the effect size,
so none of this can pass by returning p = 1.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import permenrich

N_GENES = 40
N_CASE = N_CONTROL = 8


def _simulate(rng, effect=0.0, n_effect_genes=0):
    """Genes in correlated modules of 10 (shared latent factor), optional shift in cases."""
    n = N_CASE + N_CONTROL
    factors = rng.normal(size=(N_GENES // 10, n))
    values = 0.7 * np.repeat(factors, 10, axis=0) + rng.normal(size=(N_GENES, n))
    values[:n_effect_genes, :N_CASE] += effect
    genes = [f"g{i}" for i in range(N_GENES)]
    return pd.DataFrame(values, index=genes, columns=[f"s{i}" for i in range(n)])


LABELS = ["case"] * N_CASE + ["ctrl"] * N_CONTROL


def _genes(expr, seed, **kwargs):
    return permenrich.genes(expr, LABELS, case="case", control="ctrl", permutations=199, seed=seed,
                            threads=1, **kwargs).set_index("gene").loc[expr.index]


def test_null_gene_pvalues_uniform_and_maxt_controls_fwer():
    rng = np.random.default_rng(2024)
    first_gene_p, fwer_events = [], 0
    for replicate in range(200):
        result = _genes(_simulate(rng), seed=replicate)
        first_gene_p.append(result.pval.iloc[0])  # one p per independent data set
        fwer_events += bool((result.pval_maxt <= 0.05).any())
    assert sps.kstest(first_gene_p, "uniform").pvalue > 1e-3
    # FWER at 0.05 within binomial error (3 sd) over 200 data sets; not trivially conservative
    assert 0.005 <= fwer_events / 200 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def test_bh_controls_fdr_with_true_effects():
    rng = np.random.default_rng(7)
    fdp = []
    for replicate in range(60):
        result = _genes(_simulate(rng, effect=1.5, n_effect_genes=8), seed=replicate)
        rejected = result.qval_bh.to_numpy() <= 0.1
        false = rejected[8:].sum()
        fdp.append(false / max(1, rejected.sum()))
    assert np.mean(fdp) <= 0.1 + 3 * np.std(fdp) / np.sqrt(len(fdp))


def test_null_gene_set_pvalues_uniform():
    rng = np.random.default_rng(11)
    genes = [f"g{i}" for i in range(N_GENES)]
    sets = {"MODULE": genes[:10], "SPREAD": genes[::4]}
    pvalues = {name: [] for name in sets}
    for replicate in range(150):
        result = permenrich.gsea(_simulate(rng), LABELS, sets, case="case", control="ctrl", permutations=199,
                                 seed=replicate, min_size=5, threads=1).set_index("gene_set")
        for name in sets:
            pvalues[name].append(result.loc[name, "pval"])
    for name, p in pvalues.items():
        assert sps.kstest(p, "uniform").pvalue > 1e-3, name


@pytest.mark.parametrize("mode", ["genes", "gsea"])
def test_power_increases_with_effect_size(mode):
    rng = np.random.default_rng(99)
    genes = [f"g{i}" for i in range(N_GENES)]
    rates = []
    for effect in [0.0, 0.6, 1.2, 2.4]:
        hits = 0
        for replicate in range(30):
            expr = _simulate(rng, effect=effect, n_effect_genes=10)
            if mode == "genes":
                p = _genes(expr, seed=replicate).pval.iloc[0]
            else:
                p = permenrich.gsea(expr, LABELS, {"PLANTED": genes[:10], "OTHER": genes[20:30]}, case="case",
                                    control="ctrl", permutations=199, seed=replicate, min_size=5,
                                    threads=1).set_index("gene_set").loc["PLANTED", "pval"]
            hits += p <= 0.05
        rates.append(hits / 30)
    assert rates == sorted(rates) and rates[-1] >= 0.8 and rates[0] <= 0.2, rates
