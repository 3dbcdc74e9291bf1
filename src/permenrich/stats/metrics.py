"""Per-gene statistics: GSEA desktop's ranking metrics, t tests, rank tests, correlation.

Two-group statistics are defined from the class means, sample variances (ddof = 1,
GSEA's default ``USE_BIASED=false``) and sizes of class A (case, the "positive"
phenotype) and class B (control):

=========================  ==============================================================
``signal_to_noise``        (mu_A - mu_B) / (sigma_A + sigma_B)                     [GSEA]
``t_test``                 (mu_A - mu_B) / sqrt(sigma_A^2/n_A + sigma_B^2/n_B)      [GSEA]
``ratio_of_classes``       mu_A / mu_B                                             [GSEA]
``diff_of_classes``        mu_A - mu_B                                             [GSEA]
``log2_ratio_of_classes``  log2(mu_A / mu_B)                                       [GSEA]
``student_t``              (mu_A - mu_B) / (s_p sqrt(1/n_A + 1/n_B)), pooled variance s_p^2
``welch_t``                (mu_A - mu_B) / sqrt(s_A^2/n_A + s_B^2/n_B), no floor
``mann_whitney``           U_A = R_A - n_A (n_A + 1) / 2, R_A the sum of the case class's
                           mid-ranks of the gene across samples (Wilcoxon rank-sum)
=========================  ==============================================================

A gene-set ranking weighs genes by |score|^p, so it needs a score whose no-effect value
is 0: GSEA ranks by U_A - n_A n_B / 2 (:func:`ranking_metric`), the per-gene tests
report U_A itself (SciPy's statistic) and compare it with n_A n_B / 2.

For the GSEA ``signal_to_noise`` and ``t_test`` each sigma is floored as GSEA does (its
default ``FIX_LOW=true``): sigma >= 0.2 * |mu|, where a mean of exactly 0 counts as 1, so
the floor is then 0.2. (GSEApy 1.3.1 applies the floor to signal-to-noise only, and sets
sigma to 0.2 only when the floored sigma is still 0; the two rules differ only for a
class mean of exactly 0 with 0 < sigma < 0.2.)

Continuous-phenotype statistics: ``pearson`` (Pearson's r between the gene and the
phenotype) and ``spearman`` (Pearson's r between their mid-ranks).

The scalar :func:`_metric_from_moments` is the one definition of the two-group statistics
used by every compiled kernel (CPU Numba and CUDA); :func:`metric_reference` is an
independent vectorised NumPy version from the raw class matrices that the tests compare
the kernels against.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._compile import cpu_family, inline
from ..errors import OptionError, option
from ..portable_math import SCALAR_FUNCTIONS as PORTABLE_MATH_FUNCTIONS
from ..portable_math import _log2


def _scipy_stats():  # noqa: ANN202
    """scipy.stats, imported on first use: it costs a third of a second at start-up and
    only some metrics need it (textbook p-values, mid-ranks)."""
    from scipy import stats

    return stats


MetricName = Literal[
    "signal_to_noise", "t_test", "ratio_of_classes", "diff_of_classes", "log2_ratio_of_classes",
    "student_t", "welch_t", "mann_whitney", "pearson", "spearman", "hedges_g",
]
Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True)
class Metric:
    """What the pipeline needs to know about a per-gene statistic.

    Attributes
    ----------
    name, code
        Public name; integer code for compiled kernels (two-group statistics).
    kind
        ``"two_group"`` (from class moments) or ``"correlation"`` (continuous phenotype).
    rank_transform
        Computed on each gene's mid-ranks across samples rather than its values.
    positive_values
        Divides by class means: needs strictly positive expression values.
    gsea_desktop
        One of GSEA desktop's ranking metrics.
    parametric
        ``parametric(values, phenotype, alternative) -> p-values``: the textbook p-value
        (SciPy's distributions), reported beside the permutation p-value; None when there
        is none.
    parametric_from_sums
        ``parametric`` also takes a matrix served in blocks (a streamed one), as it needs
        only the class sums: the t tests. Their statistic and class variances come from
        the same sequential sums as the permutation statistics, so a streamed matrix and
        the same matrix in memory give the same p-values, bit for bit.
    pvalue_of_statistic
        For statistics whose textbook null distribution is a fixed function of the
        statistic for each gene (same df or variance under every relabelling):
        ``pvalue_of_statistic(values, n_case, n_control, alternative)`` returns a
        function mapping a (n_batch, n_genes) array of statistics to p-values, so that a
        rule such as "BH q < 0.05" can be re-applied under each permutation. None for
        statistics whose null changes with the labels (Welch's df, GSEA's floored sd).
    shared_scale
        The statistic has one scale for every gene (t, r, U, signal-to-noise), so near
        ties are judged against the largest; False where each gene has its own (a
        difference or ratio of means), and one gene at 1e15 must not make every other
        gene's null values "tie" with its observed one.
    """

    name: str
    code: int
    kind: Literal["two_group", "correlation"]
    rank_transform: bool = False
    positive_values: bool = False
    gsea_desktop: bool = False
    parametric: Callable[[Any, np.ndarray, str], np.ndarray] | None = None
    parametric_from_sums: bool = False
    pvalue_of_statistic: Callable[..., Callable[[np.ndarray], np.ndarray]] | None = None
    shared_scale: bool = True


def _ttest_p(equal_var: bool) -> Callable[[Any, np.ndarray, str], np.ndarray]:
    """Student's (``equal_var``) or Welch's t test: SciPy's t distribution at the
    statistic and degrees of freedom computed from the class sums
    (:func:`permenrich.backends.cpu.observed_class_moments`); ``values`` is a genes x
    samples array or a matrix served in blocks."""
    def pvalues(values: Any, is_case: np.ndarray, alternative: str) -> np.ndarray:
        from ..backends.cpu import InMemoryMatrix, observed_class_moments

        matrix = values if hasattr(values, "blocks") else InMemoryMatrix(values)
        statistic, var_a, n_a, var_b, n_b = observed_class_moments(matrix, is_case, 5 if equal_var else 6)
        if equal_var:
            return _t_tail(statistic, n_a + n_b - 2, alternative)
        share_a, share_b = np.maximum(var_a, 0.0) / n_a, np.maximum(var_b, 0.0) / n_b
        # Welch-Satterthwaite in the shares' fractions: the textbook form squares the
        # variances (fourth powers of the data), out of float64 range for genes near
        # 1e80 or 1e-80, well inside the accepted values (NaN p where t was exact).
        with np.errstate(divide="ignore", invalid="ignore"):  # both classes constant: NaN, as SciPy
            fraction_a = share_a / (share_a + share_b)
            fraction_b = share_b / (share_a + share_b)
            df = 1.0 / (fraction_a ** 2 / (n_a - 1) + fraction_b ** 2 / (n_b - 1))
        return _t_tail(statistic, df, alternative)
    return pvalues


def _mann_whitney_p(values: np.ndarray, is_case: np.ndarray, alternative: str) -> np.ndarray:
    result = _scipy_stats().mannwhitneyu(values[:, is_case], values[:, ~is_case], axis=1,
                                      alternative=alternative, method="asymptotic")
    return np.asarray(result.pvalue, dtype=np.float64)


def _correlation_p(spearman: bool) -> Callable[[np.ndarray, np.ndarray, str], np.ndarray]:
    def pvalues(values: np.ndarray, phenotype: np.ndarray, alternative: str) -> np.ndarray:
        r = correlation_reference(values, phenotype, spearman=spearman)
        n = values.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = r * np.sqrt((n - 2) / np.maximum(1.0 - r * r, 0.0))
        dist = _scipy_stats().t(n - 2)
        if alternative == "greater":
            return dist.sf(t)
        if alternative == "less":
            return dist.cdf(t)
        return np.minimum(1.0, 2 * dist.sf(np.abs(t)))
    return pvalues


def _t_tail(t: np.ndarray, df: float, alternative: str) -> np.ndarray:
    dist = _scipy_stats().t(df)
    if alternative == "greater":
        return dist.sf(t)
    if alternative == "less":
        return dist.cdf(t)
    return np.minimum(1.0, 2 * dist.sf(np.abs(t)))


def _student_p_of_t(values: np.ndarray, n_case: int, n_control: int, alternative: str) -> Callable:
    return lambda t: _t_tail(t, n_case + n_control - 2, alternative)


def _correlation_p_of_r(values: np.ndarray, n_case: int, n_control: int, alternative: str) -> Callable:
    n = values.shape[1]

    def pvalues(r: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = r * np.sqrt((n - 2) / np.maximum(1.0 - r * r, 0.0))
        return _t_tail(t, n - 2, alternative)
    return pvalues


def _mann_whitney_p_of_u(values: np.ndarray, n_case: int, n_control: int, alternative: str) -> Callable:
    """SciPy's asymptotic Mann–Whitney p-value (tie-corrected, continuity-corrected) as a
    function of U of the case class; ties are a property of each gene, fixed under
    relabelling."""
    n = n_case + n_control
    ranks = mid_ranks(values)
    tie_term = np.array([((c ** 3) - c).sum() for c in
                         (np.unique(row, return_counts=True)[1].astype(np.float64) for row in ranks)])
    mean = n_case * n_control / 2
    sd = np.sqrt(n_case * n_control / 12 * ((n + 1) - tie_term / (n * (n - 1))))

    def pvalues(u: np.ndarray) -> np.ndarray:
        if alternative == "greater":
            z = (u - mean - 0.5) / sd
            return _scipy_stats().norm.sf(z)
        if alternative == "less":
            z = (n_case * n_control - u - mean - 0.5) / sd
            return _scipy_stats().norm.sf(z)
        z = (np.maximum(u, n_case * n_control - u) - mean - 0.5) / sd
        return np.minimum(1.0, 2 * _scipy_stats().norm.sf(z))
    return pvalues


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("signal_to_noise", 0, "two_group", gsea_desktop=True),
    Metric("t_test", 1, "two_group", gsea_desktop=True),
    Metric("ratio_of_classes", 2, "two_group", positive_values=True, gsea_desktop=True, shared_scale=False),
    Metric("diff_of_classes", 3, "two_group", gsea_desktop=True, shared_scale=False),
    Metric("log2_ratio_of_classes", 4, "two_group", positive_values=True, gsea_desktop=True),
    Metric("student_t", 5, "two_group", parametric=_ttest_p(equal_var=True), parametric_from_sums=True,
           pvalue_of_statistic=_student_p_of_t),
    Metric("welch_t", 6, "two_group", parametric=_ttest_p(equal_var=False), parametric_from_sums=True),
    Metric("mann_whitney", 7, "two_group", rank_transform=True, parametric=_mann_whitney_p,
           pvalue_of_statistic=_mann_whitney_p_of_u),
    Metric("pearson", 8, "correlation", parametric=_correlation_p(spearman=False),
           pvalue_of_statistic=_correlation_p_of_r),
    Metric("spearman", 9, "correlation", rank_transform=True, parametric=_correlation_p(spearman=True),
           pvalue_of_statistic=_correlation_p_of_r),
    # The effect size of the meta-analysis methods (permenrich.stats.meta); its variance
    # is a function of g and the class sizes.
    Metric("hedges_g", 10, "two_group"),
]}

#: Metric name -> integer code passed to compiled kernels.
METRIC_CODES: dict[str, int] = {name: m.code for name, m in METRICS.items()}

#: Mann-Whitney's U less its no-effect value n_A n_B / 2: how GSEA ranks by U.
_CENTRED_MANN_WHITNEY = dataclasses.replace(METRICS["mann_whitney"], code=11)


def ranking_metric(metric: Metric) -> Metric:
    """The statistic a gene-set ranking uses for ``metric``: ``metric`` itself, except
    Mann-Whitney's U, which is never negative (its no-effect value is n_A n_B / 2): the
    running sum weighs genes by |U|^p, so the most down-regulated genes would weigh
    least and a set of them could not score below 0 under ``mean``/``maxmean``. The
    ranking uses U - n_A n_B / 2 instead, signed around 0 like the other statistics.
    (GSEA's ``ratio_of_classes`` stays as GSEA desktop ranks by it.)"""
    return _CENTRED_MANN_WHITNEY if metric.name == "mann_whitney" else metric


def get_metric(name: str) -> Metric:
    """The :class:`Metric` record of ``name``, or an :class:`OptionError` listing the choices."""
    try:
        return METRICS[name]
    except KeyError:
        raise OptionError(f"{option('metric', name)} is not a metric; choose one of {', '.join(METRICS)}") from None


def metric_code(name: str) -> int:
    """Integer code of a metric name, or an :class:`OptionError` listing the choices."""
    return get_metric(name).code


@inline
def _floored_sd(sd, mean):
    floor = 0.2 * abs(mean) if mean != 0.0 else 0.2
    return sd if sd > floor else floor


@inline
def _metric_from_moments(code, mean_a, var_a, n_a, mean_b, var_b, n_b, difference):
    """One two-group statistic from class means, sample variances (ddof=1) and sizes
    (Mann-Whitney's U comes from exact rank sums in
    :func:`permenrich.stats.two_group._statistic_from_sums`). ``difference`` is mean_a - mean_b
    taken before a common offset was added back to the means (a gene at 1e10 + 3 vs
    1e10 keeps its 3 to all digits, where the means' difference keeps about six)."""
    if code == 3:
        return difference
    if code == 2:
        return mean_a / mean_b
    if code == 4:
        return _log2(mean_a / mean_b)  # the same bits on CPU and GPU (portable_math)
    var_a = var_a if var_a > 0.0 else 0.0
    var_b = var_b if var_b > 0.0 else 0.0
    if code == 5:
        pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / (n_a + n_b - 2)
        return difference / math.sqrt(pooled * (1.0 / n_a + 1.0 / n_b))
    if code == 6:
        return difference / math.sqrt(var_a / n_a + var_b / n_b)
    if code == 10:  # Hedges' g: the pooled-sd standardized difference, small-sample corrected
        pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / (n_a + n_b - 2)
        return (1.0 - 3.0 / (4.0 * (n_a + n_b) - 9.0)) * difference / math.sqrt(pooled)
    sd_a = _floored_sd(math.sqrt(var_a), mean_a)
    sd_b = _floored_sd(math.sqrt(var_b), mean_b)
    if code == 0:
        return difference / (sd_a + sd_b)
    return difference / math.sqrt(sd_a * sd_a / n_a + sd_b * sd_b / n_b)


#: Scalar device-neutral functions; GPU kernels compile the same list for CUDA.
SCALAR_FUNCTIONS = (*PORTABLE_MATH_FUNCTIONS, _floored_sd, _metric_from_moments)
_cpu = cpu_family(SCALAR_FUNCTIONS)
metric_from_moments = _cpu._metric_from_moments


def mid_ranks(values: np.ndarray) -> np.ndarray:
    """Each gene's mid-ranks (1-based, ties averaged) across samples, float64."""
    return _scipy_stats().rankdata(np.asarray(values, dtype=np.float64), axis=1, method="average")


def metric_reference(values: np.ndarray, is_case: np.ndarray, metric: str) -> np.ndarray:
    """Per-gene two-group statistic straight from the class sub-matrices (NumPy reference).

    Parameters
    ----------
    values : ndarray, shape (n_genes, n_samples)
    is_case : ndarray of bool, shape (n_samples,)
    metric : a two-group name of :data:`METRICS`

    Returns
    -------
    ndarray of float64, shape (n_genes,)
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _metric_reference(np.asarray(values, dtype=np.float64), is_case, metric)


def _metric_reference(values: np.ndarray, is_case: np.ndarray, metric: str) -> np.ndarray:
    if get_metric(metric).rank_transform:
        values = mid_ranks(values)
    a = values[:, is_case]
    b = values[:, ~is_case]
    mean_a, mean_b = a.mean(axis=1), b.mean(axis=1)
    if metric == "diff_of_classes":
        return mean_a - mean_b
    if metric == "ratio_of_classes":
        return mean_a / mean_b
    if metric == "log2_ratio_of_classes":
        return np.log2(mean_a / mean_b)
    if metric == "mann_whitney":
        n_a = a.shape[1]
        return a.sum(axis=1) - n_a * (n_a + 1) / 2
    var_a, var_b = a.var(axis=1, ddof=1), b.var(axis=1, ddof=1)
    n_a, n_b = a.shape[1], b.shape[1]
    if metric == "student_t":
        pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / (n_a + n_b - 2)
        return (mean_a - mean_b) / np.sqrt(pooled * (1 / n_a + 1 / n_b))
    if metric == "welch_t":
        return (mean_a - mean_b) / np.sqrt(var_a / n_a + var_b / n_b)
    if metric == "hedges_g":
        pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / (n_a + n_b - 2)
        return (1 - 3 / (4 * (n_a + n_b) - 9)) * (mean_a - mean_b) / np.sqrt(pooled)

    def floor(sd: np.ndarray, mean: np.ndarray) -> np.ndarray:
        return np.maximum(sd, np.where(mean == 0, 0.2, 0.2 * np.abs(mean)))

    sd_a = floor(np.sqrt(var_a), mean_a)
    sd_b = floor(np.sqrt(var_b), mean_b)
    if metric == "signal_to_noise":
        return (mean_a - mean_b) / (sd_a + sd_b)
    return (mean_a - mean_b) / np.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)


def correlation_reference(values: np.ndarray, phenotype: np.ndarray, *, spearman: bool) -> np.ndarray:
    """Per-gene Pearson (or Spearman) correlation with a numeric phenotype (NumPy
    reference: centred twice, as :func:`permenrich.stats.correlation.centred` says why,
    where ``np.corrcoef`` centres once)."""
    from .correlation import centred

    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(phenotype, dtype=np.float64)
    if spearman:
        x = mid_ranks(x)
        y = _scipy_stats().rankdata(y)
    x, y = centred(x), centred(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip((x @ y) / np.sqrt((x * x).sum(axis=1) * (y @ y)), -1.0, 1.0)
