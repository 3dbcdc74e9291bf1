"""Covariate-adjusted statistics with Freedman–Lane permutations.

With covariates Z (an intercept, numeric columns as they are, categorical columns as
indicators of every level but the first) and a phenotype x (a 0/1 case indicator, or a
continuous phenotype), each gene's statistic is the t-statistic of x in the linear model
``expression ~ Z + x``, fitted by least squares for all genes at once.

The null is Freedman and Lane's (1983): the residuals R = M_Z y of the reduced model
(covariates only) are permuted and added back to its fitted values, and the full model
is refitted. With Q an orthonormal basis of Z's columns and x~ = M_Z x, a permutation P
gives, for every gene,

    a = x~' P R,    b_c = q_c' P R (c = 1..p),
    t = (a / sqrt(x~'x~)) / sqrt((R'R - sum_c b_c^2 - a^2 / x~'x~) / (n - p - 1)),

because M_Z removes the fitted values and x~ is orthogonal to Z. The identity
permutation gives the ordinary least-squares t. So a permutation costs p + 1 dot
products per gene with permuted vectors: the shuffled-phenotype sums of
:mod:`permenrich.stats.correlation` (samples in a fixed order, on the CPU and the GPU),
then the formula above, element by element. Permutations move within strata when there
are strata; paired designs are not supported with covariates.

References
----------
Freedman D, Lane D (1983). A nonstochastic interpretation of reported significance levels.
J Bus Econ Stat 1:292-298. Winkler AM et al. (2014). Permutation inference for the general
linear model. NeuroImage 92:381-397.
"""

from __future__ import annotations

from typing import Any

import math

import numpy as np

from ..errors import InputError
from ..io.expression import MAX_ABS_VALUE

#: A covariate (or the phenotype) whose remaining variation after the other columns is
#: below this fraction of its own is taken as explained by them (collinear).
COLLINEARITY_TOLERANCE = 1e-10


def _finite_number(value: object) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def covariate_matrix(columns: dict[str, np.ndarray], source: str) -> tuple[np.ndarray, list[str]]:
    """The design matrix of the covariates: an intercept, then each column (numeric as is,
    categorical as indicators of every level but the first, in sorted order).

    Parameters
    ----------
    columns : dict of name -> array of the analysed samples' values (strings or numbers)
    source : str
        For messages.

    Returns
    -------
    Z : ndarray, shape (n_samples, 1 + n_terms)
    terms : list of str
        The names of Z's columns after the intercept (``sex[M]`` for an indicator).

    Raises
    ------
    InputError
        A missing value, a covariate constant in the analysed samples, or a covariate
        that the others (with the intercept) explain; each names the column.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    blocks, terms, owners = [np.ones((n, 1))], [], []
    for name, raw in columns.items():
        values = np.asarray(raw, dtype=object)
        missing = [i for i, v in enumerate(values) if v is None or str(v).strip() in ("", "nan", "NaN", "NA")]
        if missing:
            raise InputError(f"{source}: covariate {name!r} is missing for {len(missing)} analysed sample(s) "
                             f"(e.g. sample {missing[0] + 1}); fill it in or leave the covariate out")
        finite = [_finite_number(v) for v in values]
        if any(finite) and not all(finite):
            # one typo ('abc', 'inf') must not turn a numeric covariate into a factor
            bad = finite.index(False)
            raise InputError(f"{source}: covariate {name!r} is a number for {sum(finite)} analysed sample(s) but "
                             f"{str(values[bad]).strip()!r} for sample {bad + 1}; correct that value, or make "
                             "every value text (e.g. 'batch1') for a categorical covariate")
        if all(finite):
            numbers = np.array([float(v) for v in values])
            if np.abs(numbers).max() > MAX_ABS_VALUE:  # its square overflows in the model's algebra
                bad = int(np.argmax(np.abs(numbers)))
                raise InputError(f"{source}: covariate {name!r} is {numbers[bad]:g} for sample {bad + 1}, beyond "
                                 f"±{MAX_ABS_VALUE:g}; check the value (or rescale the covariate)")
            if np.ptp(numbers) == 0:
                raise InputError(f"{source}: covariate {name!r} is constant ({numbers[0]:g}) in the analysed "
                                 "samples; leave it out")
            blocks.append(numbers[:, None])
            terms.append(name)
            owners.append(name)
            continue
        levels = sorted({str(v) for v in values})
        if len(levels) < 2:
            raise InputError(f"{source}: covariate {name!r} has one level ({levels[0]!r}) in the analysed samples; "
                             "leave it out")
        labels = np.array([str(v) for v in values])
        for level in levels[1:]:
            blocks.append((labels == level).astype(np.float64)[:, None])
            terms.append(f"{name}[{level}]")
            owners.append(name)
    design = np.hstack(blocks)
    # Each column must add variation that the ones before it do not explain.
    for j in range(1, design.shape[1]):
        before = design[:, :j]
        fitted = before @ np.linalg.lstsq(before, design[:, j], rcond=None)[0]
        centred = design[:, j] - design[:, j].mean()
        if np.sum((design[:, j] - fitted) ** 2) <= COLLINEARITY_TOLERANCE * max(np.sum(centred ** 2), 1e-300):
            raise InputError(f"{source}: covariate {owners[j - 1]!r} ({terms[j - 1]}) is explained by the other "
                             "covariates (collinear); leave one of them out")
    if design.shape[1] >= n - 1:
        raise InputError(f"{source}: {design.shape[1]} covariate terms (with the intercept) leave no degree of "
                         f"freedom for {n} samples; use fewer covariates")
    return design, terms


class CovariateStatistic:
    """The t of the phenotype in ``expression ~ covariates + phenotype`` for batches of
    Freedman–Lane permutations (see the module docs).

    Parameters
    ----------
    values : ndarray, shape (n_genes, n_samples)
    phenotype : ndarray, shape (n_samples,)
        0/1 case indicator or a continuous phenotype.
    covariates : ndarray, shape (n_samples, p)
        The design of the reduced model, intercept included (:func:`covariate_matrix`).
    source : str
        For messages.

    Attributes
    ----------
    residuals_by_sample : ndarray, shape (n_samples, n_genes)
        Residuals of the reduced model, samples-major.
    vectors : ndarray, shape (p + 1, n_samples)
        x~ then the orthonormal basis vectors of the covariates.
    """

    def __init__(self, values: np.ndarray, phenotype: np.ndarray, covariates: np.ndarray, source: str) -> None:
        y = np.asarray(values, dtype=np.float64)
        x = np.asarray(phenotype, dtype=np.float64)
        basis, _ = np.linalg.qr(np.asarray(covariates, dtype=np.float64))
        residuals = y - (y @ basis) @ basis.T
        x_tilde = x - basis @ (basis.T @ x)
        self.sxx = float(x_tilde @ x_tilde)
        centred = x - x.mean()
        if self.sxx <= COLLINEARITY_TOLERANCE * max(float(centred @ centred), 1e-300):
            raise InputError(f"{source}: the phenotype is explained by the covariates (collinear): no variation is "
                             "left to test; leave the covariate that encodes it out")
        self.residuals_by_sample = np.ascontiguousarray(residuals.T)
        # The intercept's basis vector is constant and the residuals sum to 0 over the
        # samples, so its dot product is 0 under every permutation: left out (exactly).
        self.vectors = np.ascontiguousarray(np.vstack([x_tilde, basis[:, 1:].T]))
        self.sqrt_sxx = float(np.sqrt(self.sxx))
        self.residual_ss = np.einsum("gs,gs->g", residuals, residuals)
        self.reduced_design = np.asarray(covariates, dtype=np.float64)
        self.df = int(y.shape[1] - basis.shape[1] - 1)

    @property
    def n_genes(self) -> int:
        return int(self.residuals_by_sample.shape[1])

    def t_from_dots(self, dots: list[Any], xp: Any) -> Any:
        """The t of each (permutation, gene) from its dot products: ``dots[0]`` with x~,
        ``dots[1:]`` with the covariate basis (summed in that order); the same operations,
        in the same order, as :func:`_freedman_lane_t`, which the CPU kernel fuses."""
        a = dots[0]
        explained = xp.zeros_like(a)
        for b in dots[1:]:
            explained = explained + b * b
        residual = xp.asarray(self.residual_ss)[None, :] - explained - a * a / self.sxx
        residual = xp.maximum(residual, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (a / self.sqrt_sxx) / xp.sqrt(residual / self.df)


def _freedman_lane_t(a, explained, residual_ss, sxx, sqrt_sxx, df):
    """One t from its dot products (``explained`` = sum of the squared covariate dots):
    the scalar form of :meth:`CovariateStatistic.t_from_dots`."""
    residual = residual_ss - explained - a * a / sxx
    residual = residual if residual > 0.0 else 0.0
    return (a / sqrt_sxx) / math.sqrt(residual / df)


def t_pvalues(t: np.ndarray, df: int, alternative: str) -> np.ndarray:
    """Textbook p-values of t-statistics with ``df`` degrees of freedom."""
    from scipy import stats

    distribution = stats.t(df)
    if alternative == "greater":
        return distribution.sf(t)
    if alternative == "less":
        return distribution.cdf(t)
    return np.minimum(1.0, 2 * distribution.sf(np.abs(t)))
