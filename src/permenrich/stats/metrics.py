"""GSEA desktop's two-class ranking metrics.

Each metric is defined from the class means and sample standard deviations (ddof = 1,
GSEA's default ``USE_BIASED=false``) of class A (case, the "positive" phenotype) and
class B (control):

========================  ===================================================
``signal_to_noise``       (mu_A - mu_B) / (sigma_A + sigma_B)
``t_test``                (mu_A - mu_B) / sqrt(sigma_A**2 / n_A + sigma_B**2 / n_B)
``ratio_of_classes``      mu_A / mu_B
``diff_of_classes``       mu_A - mu_B
``log2_ratio_of_classes`` log2(mu_A / mu_B)
========================  ===================================================

For ``signal_to_noise`` and ``t_test`` each sigma is floored as GSEA does (its default
``FIX_LOW=true``): sigma >= 0.2 * |mu|, where a mean of exactly 0 counts as 1, so the
floor is then 0.2. (GSEApy 1.3.1 applies the floor to signal-to-noise only, and sets
sigma to 0.2 only when the floored sigma is still 0; the two rules differ only for a
class mean of exactly 0 with 0 < sigma < 0.2.)

The scalar :func:`metric_from_moments` is the one definition used by every compiled
kernel (CPU Numba and CUDA); :func:`metric_reference` is an independent vectorised NumPy
version from the raw class matrices that the tests compare the kernels against.
"""

from __future__ import annotations

import math
from typing import Literal

import numba
import numpy as np

from .._compile import jit_family
from ..errors import OptionError

MetricName = Literal[
    "signal_to_noise", "t_test", "ratio_of_classes", "diff_of_classes", "log2_ratio_of_classes"
]

#: Metric name -> integer code passed to compiled kernels.
METRIC_CODES: dict[str, int] = {
    "signal_to_noise": 0,
    "t_test": 1,
    "ratio_of_classes": 2,
    "diff_of_classes": 3,
    "log2_ratio_of_classes": 4,
}

#: Metrics that divide by a class mean: they need strictly positive expression values.
RATIO_METRICS = frozenset({"ratio_of_classes", "log2_ratio_of_classes"})


def metric_code(name: str) -> int:
    """Integer code of a metric name, or an :class:`OptionError` listing the choices."""
    try:
        return METRIC_CODES[name]
    except KeyError:
        raise OptionError(
            f"unknown metric {name!r}; choose one of {', '.join(METRIC_CODES)}"
        ) from None


def _floored_sd(sd, mean):
    floor = 0.2 * abs(mean) if mean != 0.0 else 0.2
    return sd if sd > floor else floor


def _metric_from_moments(code, mean_a, var_a, n_a, mean_b, var_b, n_b):
    """One metric value from class means, sample variances (ddof=1) and sizes."""
    if code == 3:
        return mean_a - mean_b
    if code == 2:
        return mean_a / mean_b
    if code == 4:
        return math.log2(mean_a / mean_b)
    sd_a = _floored_sd(math.sqrt(var_a if var_a > 0.0 else 0.0), mean_a)
    sd_b = _floored_sd(math.sqrt(var_b if var_b > 0.0 else 0.0), mean_b)
    if code == 0:
        return (mean_a - mean_b) / (sd_a + sd_b)
    return (mean_a - mean_b) / math.sqrt(sd_a * sd_a / n_a + sd_b * sd_b / n_b)


#: Scalar device-neutral functions; GPU kernels compile the same list for CUDA.
SCALAR_FUNCTIONS = (_floored_sd, _metric_from_moments)
_cpu = jit_family(SCALAR_FUNCTIONS, numba.njit(cache=True, error_model="numpy"))
metric_from_moments = _cpu._metric_from_moments


def metric_reference(values: np.ndarray, is_case: np.ndarray, metric: str) -> np.ndarray:
    """Per-gene metric straight from the class sub-matrices (NumPy reference).

    Parameters
    ----------
    values : ndarray, shape (n_genes, n_samples)
    is_case : ndarray of bool, shape (n_samples,)
    metric : one of :data:`METRIC_CODES`

    Returns
    -------
    ndarray of float64, shape (n_genes,)
    """
    metric_code(metric)
    a = np.asarray(values, dtype=np.float64)[:, is_case]
    b = np.asarray(values, dtype=np.float64)[:, ~is_case]
    mean_a, mean_b = a.mean(axis=1), b.mean(axis=1)
    if metric == "diff_of_classes":
        return mean_a - mean_b
    if metric == "ratio_of_classes":
        return mean_a / mean_b
    if metric == "log2_ratio_of_classes":
        return np.log2(mean_a / mean_b)

    def floor(sd: np.ndarray, mean: np.ndarray) -> np.ndarray:
        return np.maximum(sd, np.where(mean == 0, 0.2, 0.2 * np.abs(mean)))

    sd_a = floor(a.std(axis=1, ddof=1), mean_a)
    sd_b = floor(b.std(axis=1, ddof=1), mean_b)
    if metric == "signal_to_noise":
        return (mean_a - mean_b) / (sd_a + sd_b)
    return (mean_a - mean_b) / np.sqrt(sd_a**2 / a.shape[1] + sd_b**2 / b.shape[1])
