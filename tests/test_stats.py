"""Per-gene metrics and ranking: compiled kernels against NumPy/SciPy references."""

import numpy as np
import pytest
from scipy import stats as sps

from permenrich.backends.cpu import CpuBackend
from permenrich.design import TwoGroupLabels
from permenrich.errors import OptionError
from permenrich.stats.metrics import METRICS, get_metric, metric_code, metric_reference, mid_ranks
from permenrich.stats.ranking import rank_genes, ranking_reference


def _kernel_stat(values, is_case, metric):
    labels = TwoGroupLabels(is_case)
    backend = CpuBackend(threads=1)
    backend.prepare_statistic(values, get_metric(metric), drawn_is_case=labels.drawn_is_case)
    return backend.gene_statistics(labels.observed_drawn_positions())[0]


TWO_GROUP = sorted(name for name, m in METRICS.items() if m.kind == "two_group")


@pytest.mark.parametrize("metric", TWO_GROUP)
@pytest.mark.parametrize("n_case,n_control", [(4, 7), (6, 3), (5, 5)])
def test_kernel_metric_matches_reference(metric, n_case, n_control):
    rng = np.random.default_rng(1)
    # Intensities in the thousands: the regime where naive sums of squares lose precision.
    values = rng.lognormal(7, 1, size=(50, n_case + n_control))
    values[0] = 1000.0  # constant gene: sd floor
    is_case = np.array([True] * n_case + [False] * n_control)
    rng.shuffle(is_case)
    expected = metric_reference(values, is_case, metric)
    np.testing.assert_allclose(_kernel_stat(values, is_case, metric), expected, rtol=1e-10, atol=1e-12)


def test_reference_metrics_against_scipy_and_formulas():
    rng = np.random.default_rng(2)
    values = rng.normal(0.5, 2, size=(30, 12))
    is_case = np.arange(12) < 5
    a, b = values[:, is_case], values[:, ~is_case]
    # Without the sd floor biting, t_test is Welch's t statistic.
    welch = sps.ttest_ind(a, b, axis=1, equal_var=False).statistic
    np.testing.assert_allclose(metric_reference(values, is_case, "t_test"), welch, rtol=1e-12)
    s2n = (a.mean(1) - b.mean(1)) / (a.std(1, ddof=1) + b.std(1, ddof=1))
    np.testing.assert_allclose(metric_reference(values, is_case, "signal_to_noise"), s2n, rtol=1e-12)
    pos = np.abs(values) + 1
    np.testing.assert_allclose(metric_reference(pos, is_case, "log2_ratio_of_classes"),
                               np.log2(pos[:, is_case].mean(1) / pos[:, ~is_case].mean(1)))


def test_sd_floor_rules():
    # mean 10, tiny spread: sd floored at 0.2*|mean| = 2; mean 0 with sd 0: floor 0.2.
    values = np.array([[10.0, 10.0, 10.001, 0.0, 0.0, 0.0],
                       [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    is_case = np.array([True, True, True, False, False, False])
    s2n = metric_reference(values, is_case, "signal_to_noise")
    mean_a = 30.001 / 3
    assert s2n[0] == pytest.approx(mean_a / (0.2 * mean_a + 0.2))
    assert s2n[1] == pytest.approx(-1.0 / (0.2 + 0.2))


def test_unknown_metric():
    with pytest.raises(OptionError, match="metric='snr' is not a metric.*signal_to_noise"):
        metric_code("snr")


@pytest.mark.parametrize("kind", ["normal", "rounded", "ties_and_zeros", "near_ties"])
def test_radix_ranking_matches_lexsort(kind):
    rng = np.random.default_rng(3)
    if kind == "normal":
        x = rng.normal(size=5000)
    elif kind == "rounded":
        x = np.round(rng.normal(size=5000), 1)
    elif kind == "ties_and_zeros":
        x = np.r_[np.zeros(50), -np.zeros(50), rng.integers(-3, 3, 400).astype(float), [np.inf, -np.inf]]
        rng.shuffle(x)
    else:
        x = 1 + rng.normal(size=3000) * 1e-12
    assert np.array_equal(rank_genes(x), ranking_reference(x))


@pytest.mark.parametrize("order", ["random", "reversed", "sorted"])
def test_ranking_long_near_tie_runs_match_lexsort(order):
    """Thousands of statistics equal in their high 33 bits (as in sparse pseudobulk data)
    form one long run for the CPU's fix-up pass: it must still be exact."""
    rng = np.random.default_rng(11)
    x = 1.0 + rng.random(20_000) * 1e-9
    if order != "random":
        x = np.sort(x)[::-1] if order == "sorted" else np.sort(x)
    x[::7] = x[3]  # exact ties inside the near-tie run
    assert np.array_equal(rank_genes(x), ranking_reference(x))


def _by_value(x: np.ndarray) -> np.ndarray:
    from permenrich.stats import ranking

    x = np.ascontiguousarray(x, dtype=np.float64)
    n = x.size
    order = np.empty(n, np.int64)
    ranking.rank_descending_by_value(x, x.view(np.uint64), order, np.empty(n, np.uint64), np.empty(n, np.uint64),
                                     np.empty(n, np.int64), np.zeros((ranking.CPU_PASSES, ranking.RADIX_SIZE), np.int64))
    return order


@pytest.mark.parametrize("kind", ["normal", "large", "rounded", "signed_zeros", "near_ties", "half_zeros", "outlier",
                                  "tiny_spread", "subnormal_spread", "crowded_edge", "long_bucket_run", "two", "one", "all_equal",
                                  "nan", "infinities"])
def test_ranking_by_value_buckets_matches_the_full_radix_sort(kind):
    """The CPU kernels' two-pass ranking on value buckets gives exactly the order of the
    full radix sort (and of lexsort), whether it sorts the buckets (spread statistics,
    near ties within a bucket) or hands over to the three-pass sort (ties, an outlier,
    NaN, infinities, no spread)."""
    from permenrich.stats.ranking import FULL_PASSES

    rng = np.random.default_rng(17)
    x = {
        "normal": lambda: rng.normal(size=9033),
        "large": lambda: rng.standard_t(3, size=20_639),
        "rounded": lambda: np.round(rng.normal(size=5000), 2),
        "signed_zeros": lambda: np.r_[rng.normal(size=3000), np.zeros(40), -np.zeros(40)],
        "near_ties": lambda: np.r_[rng.normal(size=3000), 0.5 + rng.random(300) * 1e-15],
        "half_zeros": lambda: np.r_[np.zeros(4000), rng.normal(size=4000) * 1e-9],
        "outlier": lambda: np.r_[rng.normal(size=5000), 1e12],
        "tiny_spread": lambda: rng.normal(size=2000) * 1e-300,
        "subnormal_spread": lambda: rng.normal(size=500) * 1e-315,
        "crowded_edge": lambda: np.r_[rng.normal(size=4000), np.full(300, 0.25), np.nextafter(np.full(20, 0.25), 1)],
        "long_bucket_run": lambda: np.r_[rng.normal(size=20_000), 0.5 + rng.random(300) * 1e-15, np.full(5, 0.7)],
        "two": lambda: np.array([0.0, -0.0]),
        "one": lambda: np.array([3.0]),
        "all_equal": lambda: np.full(100, 2.5),
        "nan": lambda: np.r_[rng.normal(size=300), np.nan, -np.nan],
        "infinities": lambda: np.r_[rng.normal(size=300), np.inf, -np.inf],
    }[kind]()
    rng.shuffle(x)
    order = _by_value(x)
    assert np.array_equal(order, rank_genes(x, passes=FULL_PASSES))
    if kind != "nan":
        assert np.array_equal(order, ranking_reference(x))


class _WriteBudget(np.ndarray):
    """An array that fails once more than ``budget`` element writes were made to it."""

    budget = 0

    def __setitem__(self, index, value):
        _WriteBudget.budget -= 1
        if _WriteBudget.budget < 0:
            raise AssertionError("ranking made more element writes than O(n log n) allows")
        super().__setitem__(index, value)


def test_ranking_fix_up_is_not_quadratic_on_near_ties():
    """The fix-up of runs of equal high bits is linear (radix passes on the low bits), not
    insertion sort's O(n^2):
    counted in element writes of the plain-Python ranking (no timing)."""
    from permenrich.stats import ranking

    n = 2048
    x = np.sort(1.0 + np.random.default_rng(5).random(n) * 1e-9)  # ascending: the worst case
    keys = np.empty(n, np.uint64).view(_WriteBudget)
    order = np.empty(n, np.int64)
    _WriteBudget.budget = 40 * n * int(np.log2(n))  # insertion sort needs ~n^2/2 = 2.1e6 here
    ranking._rank_descending(x, x.view(np.uint64), ranking.CPU_PASSES, order, keys, np.empty(n, np.uint64),
                             np.empty(n, np.int64), np.zeros((ranking.CPU_PASSES, ranking.RADIX_SIZE), np.int64))
    assert np.array_equal(order, ranking_reference(x))


@pytest.mark.parametrize("metric", [m for m in METRICS.values() if m.kind == "two_group"], ids=lambda m: m.name)
def test_tiled_in_memory_statistics_equal_the_row_by_row_sums(metric):
    """The in-memory kernel adds a tile of genes four drawn samples at a time and finishes
    a tile in SIMD lanes; the streamed kernels add row by row over all genes: the same
    additions in the same order, so exactly the same statistics (several tiles, a
    partial last tile, drawn counts that are not multiples of 4)."""
    from permenrich.backends import cpu

    rng = np.random.default_rng(11)
    n_genes, n_samples = 2 * cpu.STATISTIC_TILE_GENES + 37, 23
    values = rng.gamma(2.0, 50.0, size=(n_genes, n_samples))  # positive: the ratio metrics need it
    if metric.rank_transform:
        values = mid_ranks(values)
    matrix = cpu.InMemoryMatrix(values)
    gene_mean, total_sum, total_sumsq = cpu.class_moment_totals(matrix)
    for n_drawn in (2, 5, 8, 13):
        drawn = np.sort(np.array([rng.choice(n_samples, n_drawn, replace=False) for _ in range(7)]), axis=1)
        tiled = np.empty((7, n_genes))
        cpu.whole_matrix_statistics(matrix.samples_by_gene, drawn, gene_mean, total_sum, total_sumsq, True,
                                    metric.code, 2, tiled)
        sums = np.zeros((7, n_genes))
        sumsqs = np.zeros((7, n_genes))
        cpu.accumulate_block(matrix.samples_by_gene, 0, n_samples, 0, drawn, np.zeros(7, dtype=np.int64), gene_mean,
                             sums, sumsqs, 2)
        row_by_row = np.empty((7, n_genes))
        cpu.finish_statistics(sums, sumsqs, total_sum, total_sumsq, gene_mean, n_samples, n_drawn, True, metric.code,
                              row_by_row)
        assert np.array_equal(tiled, row_by_row, equal_nan=True)
        scalar = np.array([cpu._statistic_from_sums(sums[0, g], sumsqs[0, g], total_sum[g], total_sumsq[g],
                                                    gene_mean[g], n_samples, n_drawn, True, metric.code)
                           for g in range(0, n_genes, 97)])
        assert np.array_equal(row_by_row[0, ::97], scalar, equal_nan=True)


@pytest.mark.parametrize("n_picked", [7, 16])
def test_two_valued_correlation_adds_the_smaller_class_in_order(n_picked):
    """A 0/1 label's correlation from the smaller class's sums: the tiled kernel (8
    shuffles, 2,048 genes, 8 samples per pass, then the rest one by one) adds, for every
    shuffle, the picked samples one by one in order, then step * S + other * total:
    compared exactly with NumPy doing that, and to rounding with the products."""
    from permenrich.backends import cpu
    from permenrich.stats.correlation import CorrelationStatistic

    rng = np.random.default_rng(13)
    n_genes, n_samples, n_shuffles = cpu.TWO_VALUED_TILE_GENES + 333, 37, 11
    label = np.array([1.0] * n_picked + [0.0] * (n_samples - n_picked))
    statistic = CorrelationStatistic(rng.normal(size=(n_genes, n_samples)), rng.permutation(label), spearman=False)
    assert statistic.two_valued and statistic.picked == statistic.phenotype.max()  # the smaller class: the 1s
    shuffles = np.array([rng.permutation(n_samples) for _ in range(n_shuffles)])
    out = np.empty((n_shuffles, n_genes))
    cpu.two_valued_correlation_batch(statistic.genes_by_sample, statistic.phenotype, statistic.picked, statistic.step,
                                     statistic.other, statistic.gene_totals, shuffles, 2, out)
    products = np.empty_like(out)
    cpu.correlation_batch(statistic.genes_by_sample, statistic.phenotype, shuffles, 2, products)
    totals = np.zeros(n_genes)
    for j in range(n_samples):
        totals = totals + statistic.genes_by_sample[j]
    assert np.array_equal(statistic.gene_totals, totals)
    for b in range(n_shuffles):
        picked = np.zeros(n_genes)
        for j in range(n_samples):
            if statistic.phenotype[shuffles[b, j]] == statistic.picked:
                picked = picked + statistic.genes_by_sample[j]
        assert np.array_equal(out[b], statistic.step * picked + statistic.other * totals)
    np.testing.assert_allclose(out, products, rtol=0, atol=1e-14)


def test_correlation_takes_the_two_valued_path_only_for_two_values():
    from scipy import stats

    from permenrich.stats.correlation import CorrelationStatistic

    rng = np.random.default_rng(5)
    values = rng.normal(size=(6, 12))
    balanced = CorrelationStatistic(values, np.array([0.0, 1.0] * 6), spearman=False)
    assert balanced.two_valued and balanced.picked > balanced.other  # a tie: the higher value
    assert not CorrelationStatistic(values, rng.normal(size=12), spearman=False).two_valued
    label = np.array([2.5] * 9 + [-1.0] * 3)
    spearman = CorrelationStatistic(values, label, spearman=True)  # mid-ranks of a label: two values
    assert spearman.two_valued and spearman.picked == spearman.phenotype.min()
    from permenrich.backends.cpu import CpuBackend
    from permenrich.stats.metrics import get_metric

    backend = CpuBackend(threads=1)
    backend.prepare_statistic(values, get_metric("pearson"), phenotype=label)
    observed = backend.gene_statistics(np.arange(12)[None, :])[0]
    expected = [stats.pearsonr(row, label)[0] for row in values]
    np.testing.assert_allclose(observed, expected, rtol=0, atol=1e-13)


def test_tiled_correlation_adds_samples_in_order():
    """The correlation kernel's tiles (8 shuffles, 1,024 genes, 4 samples per pass) must
    not change a single sum: compared exactly with NumPy adding the samples one by one."""
    from permenrich.backends import cpu

    rng = np.random.default_rng(12)
    n_genes, n_samples, n_shuffles = cpu.DOT_TILE_GENES + 333, 18, 11
    genes_by_sample = rng.normal(size=(n_samples, n_genes))
    phenotype = rng.normal(size=n_samples)
    shuffles = np.array([rng.permutation(n_samples) for _ in range(n_shuffles)])
    out = np.empty((n_shuffles, n_genes))
    cpu.correlation_batch(genes_by_sample, phenotype, shuffles, 2, out)
    for b in range(n_shuffles):
        expected = np.zeros(n_genes)
        for j in range(n_samples):
            expected = expected + phenotype[shuffles[b, j]] * genes_by_sample[j]
        assert np.array_equal(out[b], expected)


@pytest.mark.parametrize("metric", ["signal_to_noise", "t_test", "diff_of_classes", "welch_t", "student_t",
                                    "hedges_g"])
def test_a_class_of_exact_zeros_and_a_large_offset_keep_their_digits(metric):
    """Two failures of the class means rebuilt as (mean of gene-centred values) + gene
    mean: a class of exact zeros (log-CPM, counts) came out ~1e-16, so GSEA's sd floor
    took 0.2 x 1e-16 instead of 0.2 (signal-to-noise -5.00 for -4.19, t_test -15.81 for
    -15.53); and a gene at 1e12 + a 3-unit effect kept six digits of the difference.
    Compared with the NumPy reference, which takes the means of the values themselves,
    on CPU and on the GPU (simulator), exactly equal to each other."""
    import pandas as pd

    import permenrich
    from _tables import assert_identical

    rng = np.random.default_rng(7)
    n = 10
    zeros_vs_expressed = np.r_[np.zeros(n), rng.normal(5, 0.7, n)]
    expressed_vs_zeros = zeros_vs_expressed[::-1].copy()
    offset = 1e12 + np.r_[rng.normal(3, 0.5, n), rng.normal(0, 0.5, n)]
    noise = rng.normal(8, 1, size=(5, 2 * n))
    values = np.vstack([zeros_vs_expressed, expressed_vs_zeros, offset, noise])
    is_case = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    expected = metric_reference(values, is_case, metric)
    # The offset gene's reference: NumPy's means of values near 1e12 keep six digits of
    # the difference too, so the moments come from the gene minus 1e12 (exact).
    shifted = (offset - 1e12)[None, :]
    if metric in ("signal_to_noise", "t_test"):  # the sd floors 0.2 |mean| (2e11) dominate
        mean_a, mean_b = 1e12 + shifted[0, is_case].mean(), 1e12 + shifted[0, ~is_case].mean()
        difference = shifted[0, is_case].mean() - shifted[0, ~is_case].mean()
        expected[2] = (difference / (0.2 * mean_a + 0.2 * mean_b) if metric == "signal_to_noise"
                       else difference / np.sqrt((0.2 * mean_a) ** 2 / n + (0.2 * mean_b) ** 2 / n))
    else:
        expected[2] = metric_reference(shifted, is_case, metric)[0]
    backend = CpuBackend(threads=1)
    backend.prepare_statistic(values, get_metric(metric))
    observed = backend.gene_statistics(np.flatnonzero(is_case)[None, :])[0]
    finite = np.isfinite(expected)
    np.testing.assert_allclose(observed[finite], expected[finite], rtol=1e-12, atol=0)
    genes = [f"g{i}" for i in range(values.shape[0])]
    expr = pd.DataFrame(values, index=genes, columns=[f"s{j}" for j in range(2 * n)])
    labels = ["a"] * n + ["b"] * n
    kwargs = dict(case="a", control="b", metric=metric, permutations=20, seed=3)
    cpu = permenrich.genes(expr, labels, device="cpu", **kwargs)
    assert_identical(cpu, permenrich.genes(expr, labels, device="gpu", **kwargs))
    np.testing.assert_allclose(cpu.set_index("gene").statistic.loc[genes].to_numpy()[finite], expected[finite],
                               rtol=1e-12)


def test_mann_whitney_u_is_exact():
    """U was rebuilt from a rounded mean rank (n_A x mean - n_A (n_A + 1)/2), so U equal in
    exact arithmetic could differ in the last bits (2 of 300 small genes; more with more
    samples) and tied genes were ranked by rounding. It is now the case class's sum of
    centred mid-ranks (exact) plus n_A n_B / 2: SciPy's U to the bit, on CPU and GPU."""
    import pandas as pd

    import permenrich
    from _tables import assert_identical

    rng = np.random.default_rng(3)
    for n_a, n_b in ((5, 7), (23, 31)):
        values = rng.integers(0, 6, size=(300, n_a + n_b)).astype(float)
        values = values[values.std(axis=1) > 0]
        expr = pd.DataFrame(values, index=[f"g{i}" for i in range(len(values))])
        kwargs = dict(case="a", control="b", metric="mann_whitney", permutations=10, seed=1)
        labels = ["a"] * n_a + ["b"] * n_b
        cpu = permenrich.genes(expr, labels, device="cpu", **kwargs)
        u = sps.mannwhitneyu(values[:, :n_a], values[:, n_a:], axis=1).statistic
        assert np.array_equal(cpu.set_index("gene").statistic.loc[expr.index].to_numpy(), u)
        assert_identical(cpu, permenrich.genes(expr, labels, device="gpu", **kwargs))


def test_differences_equal_in_exact_arithmetic_are_equal_floats():
    """Integer data, 6 vs 6: genes whose class sums give the same exact difference of
    means, (9, 7) and (6, 4) alike, had statistics some ulps apart (the centred values
    x - mean rounded, then each mean rounded), so GSEA ordered them by rounding, not by
    row, and p, FDR and FWER of an exact design differed from a reference ranking on the
    exact difference (p 0.0128 for 0.0204). Centres on a binary grid make the class sums
    exact and the difference is rounded once: one float per exact value, on every path."""
    from fractions import Fraction

    import pandas as pd

    import permenrich
    from _tables import assert_identical

    rng = np.random.default_rng(3)
    values = rng.integers(0, 4, size=(300, 12)).astype(float)
    values = values[values.std(axis=1) > 0]
    labels = ["a"] * 6 + ["b"] * 6
    expr = pd.DataFrame(values, index=[f"g{i}" for i in range(len(values))])
    kwargs = dict(case="a", control="b", metric="diff_of_classes", permutations=30, seed=2)
    cpu = permenrich.genes(expr, labels, device="cpu", **kwargs)
    statistic = cpu.set_index("gene").statistic.loc[expr.index].to_numpy()
    floats: dict[Fraction, set[float]] = {}
    for row, value in zip(values, statistic):
        exact = Fraction(int(row[:6].sum()), 6) - Fraction(int(row[6:].sum()), 6)
        floats.setdefault(exact, set()).add(float(value))
    assert len(floats) > 5 and all(len(found) == 1 for found in floats.values()), floats
    assert_identical(cpu, permenrich.genes(expr, labels, device="gpu", **kwargs))
