"""Settings that must not matter do not: the same seed gives byte-identical result tables
across batch sizes, thread counts, memory budgets (cached or regenerated null, streamed or
in-memory matrix) and CPU vs GPU (simulator). Compared as the text written to
results.tsv, so that not even the last bit may differ."""

import numpy as np
import pandas as pd
import pytest

import permenrich
from permenrich.nulls import ExactColumnSums


def _tsv(table: pd.DataFrame) -> str:
    return table.to_csv(sep="\t", index=False, lineterminator="\n")


def _cohort(seed=0, n_genes=400, n_case=9, n_control=11):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(6.0, 1.0, size=(n_genes, n_case + n_control))  # intensities in the hundreds
    values[:30, :n_case] *= 1.8
    genes = [f"g{i}" for i in range(n_genes)]
    expr = pd.DataFrame(values, index=genes, columns=[f"s{i}" for i in range(n_case + n_control)])
    sizes = [15, 20, 40, 60, 90] if n_genes >= 100 else [5, 8, 12, 20]
    sets = {f"S{j}": list(rng.choice(genes, size=k, replace=False)) for j, k in enumerate(sizes)}
    sets["PLANTED"] = genes[:30]
    sheet = pd.DataFrame({"group": ["A"] * n_case + ["B"] * n_control,
                          "score": rng.normal(size=n_case + n_control),
                          "label": [1.0] * n_case + [0.0] * n_control}, index=expr.columns)
    return expr, sheet, sets


SETTINGS = [dict(batch_size=1000, threads=2), dict(batch_size=7, threads=1), dict(batch_size=64, threads=2),
            dict(batch_size=33, threads=2, memory="1MB")]  # 1MB: the null is regenerated, not cached


@pytest.mark.parametrize("metric,set_statistic,column", [("signal_to_noise", "ks", None), ("pearson", "ks", "score"),
                                                         ("pearson", "ks", "label"), ("welch_t", "maxmean", None),
                                                         ("spearman", "mean", "score")])
def test_gsea_tables_byte_identical_across_settings(metric, set_statistic, column):
    expr, sheet, sets = _cohort()
    kwargs = dict(groupby="group", case="A", control="B", metric=metric, set_statistic=set_statistic,
                  permutations=1000, seed=5, device="cpu")
    if column is not None:  # a 0/1 label correlates through the smaller class's sums
        kwargs = dict(kwargs, groupby=None, case=None, control=None, phenotype_column=column)
    tables = [_tsv(permenrich.gsea(expr, sheet, sets, **kwargs, **setting)) for setting in SETTINGS]
    assert all(t == tables[0] for t in tables[1:])


@pytest.mark.parametrize("metric", ["welch_t", "pearson"])
def test_genes_tables_byte_identical_across_settings(metric):
    expr, sheet, _ = _cohort(n_genes=200)
    kwargs = dict(groupby="group", case="A", control="B", metric=metric, permutations=500, seed=2, device="cpu")
    if metric == "pearson":
        kwargs = dict(kwargs, groupby=None, case=None, control=None, phenotype_column="score")
    tables = [_tsv(permenrich.genes(expr, sheet, **kwargs, **setting)) for setting in SETTINGS]
    assert all(t == tables[0] for t in tables[1:])


def test_gsea_tables_byte_identical_cpu_and_gpu_simulator():
    expr, sheet, sets = _cohort(n_genes=60)
    kwargs = dict(groupby="group", case="A", control="B", permutations=20, seed=1, min_size=5)
    cpu = permenrich.gsea(expr, sheet, sets, device="cpu", **kwargs)
    gpu = permenrich.gsea(expr, sheet, sets, device="gpu", batch_size=6, **kwargs)
    assert gpu.attrs["run"]["backend"]["backend"] == "gpu"
    assert _tsv(cpu) == _tsv(gpu)


class _NumpyWithoutIdentity:
    """NumPy under another name: the accumulators take their device (CuPy) path for any
    array module other than numpy itself, and its CUDA kernels run in the simulator."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_exact_sums_independent_of_split_and_order():
    """The null sums behind NES: exact (equal to math.fsum's correctly rounded sum), so any
    split into batches or merged parts gives the same bits; float addition does not."""
    import math

    rng = np.random.default_rng(0)
    values = rng.normal(size=(3000, 4)) * np.array([1.0, 1e-8, 1e8, 1e-300])
    values[::5, 0] = 0.1
    whole = ExactColumnSums(4)
    whole.add(values)
    split = ExactColumnSums(4)
    for start in range(0, 3000, 77):
        split.add(values[start:start + 77])
    left, right = ExactColumnSums(4), ExactColumnSums(4)
    left.add(values[::-1][:1234])
    right.add(values[::-1][1234:])
    right.merge(left)
    expected = np.array([math.fsum(values[:, j]) for j in range(4)])
    for sums in (whole, split, right):
        assert np.array_equal(sums.totals(), expected)
    # The device version (a CUDA kernel, run here in Numba's simulator) gives the CPU
    # kernel's digits, also when batches are split.
    device = ExactColumnSums(4, xp=_NumpyWithoutIdentity())
    device.add(values[:1000])
    device.add(values[1000:])
    assert np.array_equal(device.digits, whole.digits)
    with pytest.raises(ValueError, match="finite"):
        device.add(np.array([[1.0, np.inf, 0.0, 0.0]]))
    naive = [values[i:i + 77].sum(axis=0) for i in range(0, 3000, 77)]
    assert not np.array_equal(np.sum(naive, axis=0), values.sum(axis=0))  # the bug this prevents


@pytest.mark.parametrize("set_statistic", ["mean", "maxmean", "ks"])
def test_prerank_ties_do_not_depend_on_the_scores_scale(set_statistic):
    """Scores with few distinct values make many random sets tie with the real ones in
    exact arithmetic; the ties must be found whatever the scores' unit (1e-6, 1, 1e6),
    so p-values are the same at every scale."""
    rng = np.random.default_rng(8)
    genes = [f"g{i}" for i in range(300)]
    levels = np.array([-0.3, -0.2, -0.1, 0.1, 0.2, 0.3])
    base = levels[rng.integers(0, levels.size, 300)]  # six values: many exact ties
    sets = {f"S{j}": list(rng.choice(genes, size=k, replace=False)) for j, k in enumerate([15, 15, 20, 20, 30])}
    tables = {}
    for scale in (1e-6, 1.0, 1e6):
        scores = pd.Series(base * scale, index=genes)
        tables[scale] = permenrich.prerank(scores, sets, set_statistic=set_statistic, weight=0.0 if
                                           set_statistic == "ks" else 1.0, permutations=400, seed=3,
                                           duplicates="error", device="cpu").set_index("gene_set").sort_index()
        assert tables[scale].attrs["run"]["tie_tolerance"] == pytest.approx(
            1e-12 * (1.0 if set_statistic == "ks" else 0.3 * scale))
    for scale in (1e-6, 1e6):
        pd.testing.assert_series_equal(tables[scale].pval, tables[1.0].pval, check_exact=True)
        np.testing.assert_allclose(tables[scale].nes, tables[1.0].nes, rtol=1e-9)


def test_gsea_null_compiled_passes_equal_the_device_passes():
    """The CPU's one-pass kernels of the GSEA null (counts, exact sums, null NES, FDR and
    FWER tails) give the device path's numbers exactly (its CUDA first-pass kernel, run in
    Numba's simulator, and its array-module second pass): snapping to 0 within the tie
    tolerance, ties with the observed score, sets whose null has one sign only (a NaN
    scale for the other)."""
    from permenrich.nulls import TIE_TOLERANCE, GseaNullAccumulator

    rng = np.random.default_rng(21)
    n_sets = 37
    observed = rng.normal(scale=0.4, size=n_sets)
    observed[4] = 0.0
    observed[7], observed[8] = -0.3, 0.3  # against a null of the other sign only: NES NaN
    batches = [rng.normal(scale=0.4, size=(n, n_sets)) for n in (1, 19, 64)]
    batches[1][:, 7] = np.abs(batches[1][:, 7])  # set 7: a positive null only
    batches[2][:, 7] = np.abs(batches[2][:, 7])
    batches[0][:, 7] = np.abs(batches[0][:, 7])
    for batch in batches:
        batch[:, 8] = -np.abs(batch[:, 8])  # set 8: a negative null only
    batches[2][:5, 3] = TIE_TOLERANCE / 2  # rounding noise around 0: snapped to 0
    batches[2][5:9, 3] = -TIE_TOLERANCE / 2
    batches[1][:, 5] = observed[5]  # ties with the observed score count as exceedances
    n_perm = sum(b.shape[0] for b in batches)
    results = []
    for xp in (np, _NumpyWithoutIdentity()):
        accumulator = GseaNullAccumulator(observed, n_perm, exact=False, xp=xp)
        for batch in batches:
            accumulator.add(0, batch)
        accumulator.begin_pass(1, accumulator.end_pass(0))
        for batch in batches:
            accumulator.add(1, batch)
        results.append((accumulator.finish(), accumulator.state(0), accumulator.state(1)))
    (table, first, second), (reference_table, reference_first, reference_second) = results
    for name in reference_table:
        assert np.asarray(table[name]).tobytes() == np.asarray(reference_table[name]).tobytes(), name
    for part, reference in ((first, reference_first), (second, reference_second)):
        for name in reference:
            assert np.array_equal(np.asarray(part[name]), np.asarray(reference[name])), name
    assert np.isnan(reference_table["nes"][[7, 8]]).all() and reference_second["fwer_neg"].sum() > 0
