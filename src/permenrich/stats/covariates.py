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

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, option
from ..io.expression import MAX_ABS_VALUE, _preview
from ..io.phenotype import is_missing, spelling_key

logger = logging.getLogger(__name__)

#: A covariate (or the phenotype) whose remaining variation after the other columns is
#: below this fraction of its own is taken as explained by them (collinear).
COLLINEARITY_TOLERANCE = 1e-10


def _finite_number(value: object) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


#: ``C(name)``: the column ``name`` fitted as categories even when its values are numbers
#: (batches coded 1, 2, 3), as in R's and statsmodels' formulas.
_CATEGORICAL = re.compile(r"^C\((.+)\)$")
#: A number followed by a unit, as GEO characteristics often write ages ("45 yrs").
_NUMBER_WITH_UNIT = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%|[^\W\d_][^\d]*)$")
#: Numbers coded as consecutive integers from 0 or 1 with at most this many values look
#: like category codes (batch 1, 2, 3): the fit of a slope is said, and C(name) offered.
_MAX_CODES = 12


def covariate_column(name: str) -> tuple[str, bool]:
    """The annotation column a covariate names, and whether it is forced categorical:
    ``C(batch)`` is the column ``batch`` as categories."""
    match = _CATEGORICAL.match(name.strip())
    return (match.group(1).strip(), True) if match else (name.strip(), False)


def _unit_numbers(name: str, values: Sequence[str], source: str) -> np.ndarray | None:
    """The numbers of a column whose every value is a number followed by one unit ("45
    yrs"; a plural "s" and the case aside), else None."""
    matches = [_NUMBER_WITH_UNIT.match(v) for v in values]
    if not all(matches):
        return None
    units = {m.group(2).strip().rstrip(".").lower().removesuffix("s") for m in matches}
    if len(units) > 1:  # ordinals ('1st', '2nd') or mixed units: categories, whose levels are checked
        if len(units) < len(set(values)):  # fewer units than values: numbers in units, not ordinals
            logger.warning("%s: covariate %r is a number in different units (%s): fitted as categories, one per "
                           "value; convert every value to one unit to fit it as a number", source, name,
                           _preview(sorted({m.group(2).strip() for m in matches}), 4))
        return None
    logger.warning("%s: covariate %r: every value carries the unit %r (e.g. %r); fitted as the number", source,
                   name, matches[0].group(2).strip(), values[0])
    return np.array([float(m.group(1)) for m in matches])


def _level_order(levels: set[str]) -> list[str]:
    """Levels in numeric order when every level is a number (C(batch): 1, 2, 10), else
    sorted as text; the first is the baseline."""
    if all(_finite_number(level) for level in levels):
        return sorted(levels, key=lambda level: (float(level), level))
    return sorted(levels)


def _check_levels(name: str, labels: np.ndarray, levels: list[str], source: str) -> None:
    """Warn about levels that are likely mistakes: spellings that differ only in case or
    spacing, and levels of one sample (fitted exactly, so that sample adds nothing)."""
    by_spelling: dict[str, list[str]] = {}
    for level in levels:
        by_spelling.setdefault(spelling_key(level), []).append(level)
    variants = [group for group in by_spelling.values() if len(group) > 1]
    if variants:
        logger.warning("%s: covariate %r has levels that differ only in case or spacing (%s); each is its own "
                       "category: correct the spelling if they are the same", source, name,
                       "; ".join(" and ".join(repr(level) for level in group) for group in variants[:3]))
    single = [level for level in levels if int((labels == level).sum()) == 1]
    if single:
        logger.warning("%s: covariate %r has %d level(s) of one sample (%s): such a sample is fitted exactly and "
                       "adds nothing to the test; correct their spelling, merge rare levels or leave the covariate out",
                       source, name, len(single), _preview(single, 4))


def covariate_matrix(columns: dict[str, np.ndarray], source: str,
                     sample_ids: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The design matrix of the covariates: an intercept, then each column (numeric as is,
    categorical as indicators of every level but the first, in sorted order).

    Parameters
    ----------
    columns : dict of name -> array of the analysed samples' values (strings or numbers)
        A name ``C(column)`` fits that column as categories even if its values are
        numbers. Numbers that all carry one unit ("45 yrs") are fitted as numbers.
    source : str
        For messages.
    sample_ids : sequence of str, optional
        The analysed samples' ids, named in messages (else their positions).

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

    def sample(i: int) -> str:
        return repr(str(sample_ids[i])) if sample_ids is not None else str(i + 1)

    blocks, terms, owners = [np.ones((n, 1))], [], []
    for given, raw in columns.items():
        name, categorical = covariate_column(given)
        values = np.asarray(raw, dtype=object)
        missing = [i for i, v in enumerate(values) if v is None or is_missing(str(v))]
        if missing:
            raise InputError(f"{source}: covariate {name!r} is missing for {len(missing)} analysed sample(s) "
                             f"(e.g. sample {sample(missing[0])}); fill it in, leave the covariate out, or leave "
                             f"such samples out ({option('nan_policy', 'drop')})")
        texts = [str(v).strip() for v in values]
        finite = [_finite_number(v) for v in texts]
        numbers = None
        if not categorical and all(finite):
            numbers = np.array([float(v) for v in texts])
        elif not categorical and not any(finite):
            numbers = _unit_numbers(name, texts, source)
        elif not categorical:
            # one typo ('abc', 'inf') must not turn a numeric covariate into a factor
            bad = finite.index(False)
            raise InputError(f"{source}: covariate {name!r} is a number for {sum(finite)} analysed sample(s) but "
                             f"{texts[bad]!r} for sample {sample(bad)}; correct that value, or make every value "
                             "text (e.g. 'batch1') for a categorical covariate")
        if numbers is not None:
            if np.abs(numbers).max() > MAX_ABS_VALUE:  # its square overflows in the model's algebra
                bad = int(np.argmax(np.abs(numbers)))
                raise InputError(f"{source}: covariate {name!r} is {numbers[bad]:g} for sample {sample(bad)}, "
                                 f"beyond ±{MAX_ABS_VALUE:g}; check the value (or rescale the covariate)")
            if np.ptp(numbers) == 0:
                raise InputError(f"{source}: covariate {name!r} is constant ({numbers[0]:g}) in the analysed "
                                 "samples; leave it out")
            distinct = np.unique(numbers)
            if (3 <= distinct.size <= _MAX_CODES and distinct[0] in (0.0, 1.0)
                    and np.array_equal(distinct, distinct[0] + np.arange(distinct.size))):
                logger.warning("%s: covariate %r takes the values %s: fitted as a number (one slope); if they "
                               "code categories (batches), write C(%s)", source, name,
                               ", ".join(f"{v:g}" for v in distinct), name)
            blocks.append(numbers[:, None])
            terms.append(name)
            owners.append(name)
            continue
        labels = np.array(texts)
        levels = _level_order(set(texts))
        if len(levels) < 2:
            raise InputError(f"{source}: covariate {name!r} has one level ({levels[0]!r}) in the analysed samples; "
                             "leave it out")
        _check_levels(name, labels, levels, source)
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
