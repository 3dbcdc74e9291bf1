"""Combining per-gene statistics across studies (meta-analysis).

Every function takes per-study values stacked on the first axis, shape
``(n_studies, ...)``, with NaN where a study does not measure a gene, and combines over
the studies that do. The same functions combine the observed statistics and each
permutation's, so the permutation null of a meta-analysis keeps every study's gene-gene
correlation (permutation k relabels every study at once).

Methods
-------
``stouffer``
    Weighted Stouffer sum ``sum_s w_s T_s / sqrt(sum_s w_s^2)`` of the per-study
    statistics ``T_s`` (weights ``sqrt(n_s)`` by default). With z statistics this is
    Stouffer's z; with t statistics it is its usual approximation. The permutation
    p-value does not rely on the normal approximation: the same sum is recomputed under
    every relabelling.
``fixed``
    Inverse-variance fixed effect on Hedges' g: ``mu = sum w g / sum w`` with
    ``w = 1 / v``, reported as ``z = mu * sqrt(sum w)``. Assumes one true effect shared
    by every study.
``random``
    DerSimonian-Laird random effects: Cochran's ``Q = sum w (g - mu_fixed)^2``,
    ``tau^2 = max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w))``, weights
    ``1 / (v + tau^2)``, ``z = mu / se``; ``I^2 = max(0, (Q - (k - 1)) / Q)``. Assumes
    the studies' true effects are drawn from a normal distribution of variance tau^2.

A gene measured by a single study gets exactly that study's statistic (``stouffer``) or
its ``g / sqrt(v)`` (``fixed``, ``random``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..errors import OptionError

METHODS = ("stouffer", "fixed", "random")


def hedges_g_variance(g: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Sampling variance of Hedges' g for class sizes ``n_a``, ``n_b`` (Hedges & Olkin's
    large-sample formula, as in statsmodels' ``effectsize_smd``):
    ``n / (n_a n_b) + g^2 / (2 (n - 3.94))``, ``n = n_a + n_b``."""
    n = n_a + n_b
    return n / (n_a * n_b) + np.square(g) / (2.0 * (n - 3.94))


@dataclass
class Combined:
    """Combined per-gene statistics, shape (n_batch, n_genes) each (one row per
    permutation, or one row for the observed labels).

    Attributes
    ----------
    statistic : ndarray
        The combined statistic (Stouffer's sum, or the fixed/random-effects z).
    n_studies : ndarray
        Studies that measure each gene, shape (n_genes,).
    effect : ndarray or None
        The pooled effect size (``fixed``, ``random``).
    tau2, q, i2 : ndarray or None
        Between-study variance, Cochran's Q and I^2 (``random``).
    """

    statistic: np.ndarray
    n_studies: np.ndarray
    effect: np.ndarray | None = None
    tau2: np.ndarray | None = None
    q: np.ndarray | None = None
    i2: np.ndarray | None = None

    def row(self, b: int = 0) -> Combined:
        """Row ``b`` (e.g. the observed labels): every field of shape (n_genes,)."""
        pick = {name: None if value is None else value[b]
                for name, value in vars(self).items() if name not in ("n_studies",)}
        return Combined(n_studies=self.n_studies, **pick)


# Accumulator rows of the kernel below; a method allocates only the rows it uses
# (stouffer the first two, fixed three, random all seven).
_ONLY, _SUM_WG, _SUM_W, _SUM_WGG, _SUM_WW, _SUM_W_RANDOM, _SUM_WG_RANDOM = range(7)
_ROWS = {"stouffer": 2, "fixed": 3, "random": 7}


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _add_study(values, rows, method, second_pass, weight, n_a, n_b, tau2, acc):  # pragma: no cover - jitted
    """Add one study's statistics (n_batch, n_genes_s) to the sums over studies ``acc``
    (7, n_batch, n_joined). Studies are added in order, each element on its own: the
    same bits whatever the batch size or thread count."""
    n_batch, n_joined = acc.shape[1], acc.shape[2]
    n = n_a + n_b
    for b in numba.prange(n_batch):
        for j in range(n_joined):
            r = rows[j]
            if r < 0:
                continue
            x = values[b, r]
            acc[_ONLY, b, j] = x
            if method == 0:
                acc[_SUM_WG, b, j] += weight * x
                continue
            v = n / (n_a * n_b) + x * x / (2.0 * (n - 3.94))
            if second_pass:
                w = 1.0 / (v + tau2[b, j])
                acc[_SUM_W_RANDOM, b, j] += w
                acc[_SUM_WG_RANDOM, b, j] += w * x
                continue
            w = 1.0 / v
            acc[_SUM_W, b, j] += w
            acc[_SUM_WG, b, j] += w * x
            if method == 2:
                acc[_SUM_WGG, b, j] += w * x * x
                acc[_SUM_WW, b, j] += w * w


def combine_studies(per_study: list[np.ndarray], positions: np.ndarray, method: str, *,
                    weights: np.ndarray | None = None, class_sizes: np.ndarray | None = None) -> Combined:
    """Combine per-study statistics onto the joined genes.

    Parameters
    ----------
    per_study
        Each study's statistics, shape (n_batch, n_genes_s): the statistic of the
        method (Hedges' g for ``fixed`` and ``random``).
    positions : ndarray of int64, shape (n_studies, n_genes)
        Each joined gene's column in each study, -1 where the study lacks it
        (:func:`join_genes`).
    method : {"stouffer", "fixed", "random"}
    weights : ndarray, shape (n_studies,), optional
        Stouffer weights (required for ``stouffer``).
    class_sizes : ndarray, shape (n_studies, 2), optional
        Each study's (n_case, n_control), for the variance of g (``fixed``, ``random``).
    """
    if method not in METHODS:
        raise OptionError(f"unknown meta-analysis method {method!r}; choose one of {', '.join(METHODS)}")
    present = positions >= 0
    n_studies = present.sum(axis=0)
    single = n_studies == 1
    n_batch = per_study[0].shape[0]
    acc = np.zeros((_ROWS[method], n_batch, positions.shape[1]))
    code = METHODS.index(method)
    sizes = np.zeros((len(per_study), 2)) if class_sizes is None else np.asarray(class_sizes, dtype=np.float64)
    w_stouffer = np.zeros(len(per_study)) if weights is None else np.asarray(weights, dtype=np.float64)
    no_tau2 = np.zeros((1, 1))
    for s, values in enumerate(per_study):
        _add_study(np.ascontiguousarray(values, dtype=np.float64), positions[s], code, False, w_stouffer[s],
                  sizes[s, 0], sizes[s, 1], no_tau2, acc)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "stouffer":
            # The weights do not depend on the labels: one norm per gene.
            norm = np.sqrt(np.square(np.where(present, w_stouffer[:, None], 0.0)).sum(axis=0))
            # One study: its statistic itself (w T / sqrt(w^2) can differ from T in the last bit).
            statistic = np.where(single, acc[_ONLY], acc[_SUM_WG] / norm)
            return Combined(statistic, n_studies)
        sum_w, sum_wg = acc[_SUM_W], acc[_SUM_WG]
        mu_fixed = sum_wg / sum_w
        if method == "fixed":
            return Combined(mu_fixed * np.sqrt(sum_w), n_studies, effect=mu_fixed)
        # Cochran's Q = sum w (g - mu)^2, expanded so that one pass over the studies suffices.
        q = np.maximum(acc[_SUM_WGG] - sum_wg * mu_fixed, 0.0)
        df = n_studies - 1
        c = sum_w - acc[_SUM_WW] / sum_w
        tau2 = np.where(df > 0, np.maximum(0.0, (q - df) / c), 0.0)
        tau2 = np.where(np.isfinite(tau2), tau2, 0.0)  # c = 0: equal variances in every study
        i2 = np.where((df > 0) & (q > 0), np.maximum(0.0, (q - df) / q), 0.0)
    for s, values in enumerate(per_study):
        _add_study(np.ascontiguousarray(values, dtype=np.float64), positions[s], code, True, 0.0,
                  sizes[s, 0], sizes[s, 1], tau2, acc)
    sum_random = acc[_SUM_W_RANDOM]
    mu = acc[_SUM_WG_RANDOM] / sum_random
    return Combined(mu * np.sqrt(sum_random), n_studies, effect=mu, tau2=tau2, q=q, i2=i2)


def join_genes(gene_ids: list[np.ndarray], how: str = "inner") -> tuple[np.ndarray, np.ndarray]:
    """Join the genes of several studies.

    Parameters
    ----------
    gene_ids
        Each study's gene ids.
    how : {"inner", "outer"}
        ``inner``: genes every study measures, in the first study's order. ``outer``:
        every gene, the first study's first, then each new one in order of appearance.

    Returns
    -------
    genes : ndarray of object
    positions : ndarray of int64, shape (n_studies, n_genes)
        Each joined gene's row in each study, -1 where the study lacks it.
    """
    if how not in ("inner", "outer"):
        raise OptionError(f"unknown gene join {how!r}; choose inner (genes in every study) or outer (any study)")
    rows = [{str(g): i for i, g in enumerate(ids)} for ids in gene_ids]
    if how == "inner":
        genes = [str(g) for g in gene_ids[0] if all(str(g) in r for r in rows[1:])]
    else:
        seen: dict[str, None] = {}
        for ids in gene_ids:
            seen.update((str(g), None) for g in ids)
        genes = list(seen)
    positions = np.array([[r.get(g, -1) for g in genes] for r in rows], dtype=np.int64).reshape(len(rows), -1)
    return np.array(genes, dtype=object), positions


def gather(per_study: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """Stack per-study statistics, shape (..., n_genes_s) each, onto the joined genes:
    shape (n_studies, ..., n_joined), NaN where a study lacks the gene."""
    lead = per_study[0].shape[:-1]
    out = np.full((len(per_study),) + lead + (positions.shape[1],), np.nan)
    for s, values in enumerate(per_study):
        found = positions[s] >= 0
        out[s, ..., found] = np.moveaxis(np.asarray(values)[..., positions[s, found]], -1, 0)
    return out


def study_seed(seed: int, study: int) -> int:
    """The seed of study ``study`` (0-based) in a meta-analysis seeded ``seed``: the first
    study uses ``seed`` itself (a one-study meta-analysis is that study's run), the
    others a SplitMix64 mix of (seed, study), so every study has its own stream and
    permutation k of the meta-analysis is a pure function of (seed, k)."""
    if study == 0:
        return int(seed)
    mask = (1 << 64) - 1
    z = (int(seed) + study * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)
