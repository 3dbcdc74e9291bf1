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

import numpy as np

from ..errors import OptionError

METHODS = ("stouffer", "fixed", "random")


def hedges_g_variance(g: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Sampling variance of Hedges' g for class sizes ``n_a``, ``n_b`` (Hedges & Olkin's
    large-sample formula, as in Borenstein et al. 2009 with the 3.94 refinement):
    ``n / (n_a n_b) + g^2 / (2 (n - 3.94))``, ``n = n_a + n_b``."""
    n = n_a + n_b
    return n / (n_a * n_b) + np.square(g) / (2.0 * (n - 3.94))


@dataclass
class Combined:
    """Combined per-gene statistics.

    Attributes
    ----------
    statistic : ndarray
        The combined statistic (Stouffer's sum, or the fixed/random-effects z).
    effect : ndarray or None
        The pooled effect size (``fixed``, ``random``).
    tau2, q, i2 : ndarray or None
        Between-study variance, Cochran's Q and I^2 (``random``).
    n_studies : ndarray
        Studies that measure each gene.
    """

    statistic: np.ndarray
    n_studies: np.ndarray
    effect: np.ndarray | None = None
    tau2: np.ndarray | None = None
    q: np.ndarray | None = None
    i2: np.ndarray | None = None


def combine(values: np.ndarray, method: str, *, weights: np.ndarray | None = None,
            class_sizes: np.ndarray | None = None) -> Combined:
    """Combine per-study statistics over the first axis.

    Parameters
    ----------
    values : ndarray, shape (n_studies, ...)
        Per-study statistics (Hedges' g for ``fixed`` and ``random``); NaN where a study
        does not measure the gene.
    method : {"stouffer", "fixed", "random"}
    weights : ndarray, shape (n_studies,), optional
        Stouffer weights (required for ``stouffer``).
    class_sizes : ndarray, shape (n_studies, 2), optional
        Each study's (n_case, n_control), for the variance of g (required for ``fixed``
        and ``random``).
    """
    if method not in METHODS:
        raise OptionError(f"unknown meta-analysis method {method!r}; choose one of {', '.join(METHODS)}")
    values = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(values)
    n_studies = present.sum(axis=0)
    shape = (-1,) + (1,) * (values.ndim - 1)
    single = n_studies == 1
    if method == "stouffer":
        w = np.where(present, np.asarray(weights, dtype=np.float64).reshape(shape), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            statistic = np.where(present, w * values, 0.0).sum(axis=0) / np.sqrt(np.square(w).sum(axis=0))
        # One study: its statistic itself (w T / sqrt(w^2) can differ from T in the last bit).
        statistic = np.where(single, np.nansum(values, axis=0), statistic)
        return Combined(statistic, n_studies)
    sizes = np.asarray(class_sizes, dtype=np.float64)
    variance = hedges_g_variance(values, sizes[:, 0].reshape(shape), sizes[:, 1].reshape(shape))
    g = np.where(present, values, 0.0)
    w = np.where(present, 1.0 / variance, 0.0)
    sum_w = w.sum(axis=0)
    mu_fixed = (w * g).sum(axis=0) / sum_w
    if method == "fixed":
        return Combined(mu_fixed * np.sqrt(sum_w), n_studies, effect=mu_fixed)
    q = (w * np.square(g - mu_fixed)).sum(axis=0)
    df = n_studies - 1
    c = sum_w - np.square(w).sum(axis=0) / sum_w
    with np.errstate(invalid="ignore", divide="ignore"):
        tau2 = np.where(df > 0, np.maximum(0.0, (q - df) / c), 0.0)
        i2 = np.where((df > 0) & (q > 0), np.maximum(0.0, (q - df) / q), 0.0)
    tau2 = np.where(np.isfinite(tau2), tau2, 0.0)  # c = 0: identical variances and one study
    w_random = np.where(present, 1.0 / (variance + tau2), 0.0)
    sum_random = w_random.sum(axis=0)
    mu = (w_random * g).sum(axis=0) / sum_random
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
