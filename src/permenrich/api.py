"""Public API: ``gsea``, ``prerank``, ``genes`` and ``ora``.

Each mode is a path through one pipeline (:mod:`permenrich._pipeline`)::

    read -> design (labels, permutation plan) -> per-gene statistic -> ranking
         -> set statistic -> null accumulators -> p-values -> results

Backends supply only kernels (a batch of labellings -> gene statistics -> set scores);
planning, batching, accumulation and the result tables exist once, whatever the device.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._pipeline import (
    TIE_RULE,
    load_data,
    ProgressCallback,
    Study,
    check_choice,
    check_run_options,
    choose_batch_size,
    digests,
    file_digest,
    load_gene_sets,
    load_study,
    parse_memory,
    run_two_pass,
    versions,
)
from .backends import get_backend
from .design import PermutationPlan, TwoGroupLabels
from .enrich.linear import SET_STATISTICS, SetStatisticName
from .enrich.running_sum import running_sum
from .errors import InputError
from .genesets import GeneSetIndex
from .io import atomic_write_table, atomic_write_text, check_output_dir, sample_annotation
from .io.rnk import read_rnk
from .nulls import ExceedanceAccumulator, GseaNullAccumulator, bh_adjust
from .stats.metrics import Alternative, MetricName, get_metric
from .stats.ranking import rank_genes

RESULT_COLUMNS = [
    "gene_set", "size", "size_original", "es", "nes", "pval", "fdr", "fwer", "padj_bh",
    "leading_edge", "tags_pct", "list_pct", "signal_pct",
]
GENE_COLUMNS = ["gene", "statistic", "pval_parametric", "pval", "qval_bh", "pval_maxt"]


def _common_setup(metric_name: str, set_statistic: str | None, weight: float | None, permutations: int,
                  seed: int, batch_size: int | None, threads: int | None, memory: str | int,
                  device: str) -> tuple[Any, int, Any]:
    """Validate what every mode shares before reading any file."""
    metric = get_metric(metric_name)
    if set_statistic is not None:
        check_choice("set_statistic", set_statistic, SET_STATISTICS)
    check_run_options(permutations=permutations, seed=seed, batch_size=batch_size, threads=threads, weight=weight)
    budget = parse_memory(memory)
    backend = get_backend(device, threads=threads)
    return metric, budget, backend


def _gsea_table(index: GeneSetIndex, stats: dict[str, np.ndarray], observed: np.ndarray,
                edges: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    table = pd.DataFrame({
        "gene_set": index.names.astype(str),
        "size": index.sizes.astype(int),
        "size_original": index.sizes_original.astype(int),
        "es": observed,
        "nes": stats["nes"],
        "pval": stats["pval"],
        "fdr": stats["fdr"],
        "fwer": stats["fwer"],
        "padj_bh": bh_adjust(stats["pval"]),
        "leading_edge": [e[0] for e in edges],
        "tags_pct": [e[1] for e in edges],
        "list_pct": [e[2] for e in edges],
        "signal_pct": [e[3] for e in edges],
    })
    order = np.lexsort((table.gene_set.to_numpy(), -np.abs(table.nes.to_numpy()), table.pval.to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def _leading_edges(index: GeneSetIndex, gene_ids: np.ndarray, stat: np.ndarray, weight: float,
                   set_statistic: str) -> list[tuple[str, float, float, float]]:
    """GSEA's leading edge per set (running-sum statistic only; empty otherwise)."""
    if set_statistic != "ks":
        return [("", np.nan, np.nan, np.nan)] * index.n_sets
    order = rank_genes(stat)
    position_of_gene = np.empty_like(order)
    position_of_gene[order] = np.arange(order.size)
    ranked_weights = np.abs(stat[order]) ** weight
    edges = []
    for s in range(index.n_sets):
        members = index.members[index.offsets[s]:index.offsets[s + 1]]
        result = running_sum(position_of_gene[members], ranked_weights)
        edges.append((",".join(str(gene_ids[order[p]]) for p in result.leading_edge_positions),
                      100.0 * result.tags_fraction, 100.0 * result.list_fraction, 100.0 * result.signal_fraction))
    return edges


def _gsea_null(score_batch: Callable[[int, int], Any], observed: np.ndarray, *, n_perm: int, exact: bool,
               xp: Any, n_sets: int, batch_size: int | None, budget: int, extra_bytes: int,
               progress: ProgressCallback | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Two-pass GSEA null over the permutations of ``score_batch``."""
    chosen = choose_batch_size(batch_size, budget, 8 * n_sets * 6 + extra_bytes, n_perm)
    cache = n_perm * n_sets * 8 <= budget // 2
    accumulator = GseaNullAccumulator(observed, n_perm, exact, xp=xp)
    timings = run_two_pass(score_batch, accumulator.add_first_pass, accumulator.add_second_pass,
                           accumulator.finish_first_pass, n_perm=n_perm, batch_size=chosen, cache=cache,
                           progress=progress)
    info = {"batch_size": chosen,
            "null_storage": "cached in memory" if cache else "recomputed from (seed, k) in a second pass",
            "timings": timings}
    return accumulator.finish(), info


def _provenance(command: str, parameters: dict, started: float, **sections: Any) -> dict:
    run = {"command": command, "parameters": parameters, **sections, "tie_rule": TIE_RULE,
           "versions": versions()}
    timings = run.setdefault("timings", {})
    timings["total_seconds"] = time.perf_counter() - started
    scored = timings.get("permutations_scored", 0)
    if scored:
        run["per_permutation_ms"] = 1000 * (timings["first_pass_seconds"] + timings["second_pass_seconds"]) / scored
    return run


def gsea(
    expr: Any,
    phenotype: Any = None,
    gene_sets: Any = None,
    *,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    phenotype_column: str | None = None,
    strata: str | None = None,
    pairs: str | None = None,
    metric: MetricName = "signal_to_noise",
    set_statistic: SetStatisticName = "ks",
    weight: float = 1.0,
    permutations: int = 1000,
    seed: int = 0,
    min_size: int = 15,
    max_size: int = 500,
    collapse: Literal["mean", "max", "median"] = "mean",
    chip: str | os.PathLike | None = None,
    nan_policy: Literal["error", "drop"] = "error",
    zero_variance: Literal["error", "drop"] = "drop",
    normalize: Literal["none", "log1p_cpm"] = "none",
    pseudobulk: str | None = None,
    pseudobulk_method: Literal["sum", "mean"] = "sum",
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu", "gpu", "auto"] = "auto",
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Phenotype-permutation GSEA.

    Parameters
    ----------
    expr
        Expression data: a path (GCT, TSV/CSV/TXT, h5ad, HDF5), a DataFrame (genes x
        samples) or an AnnData (samples x genes).
    phenotype
        A CLS file (categorical, or ``#numeric`` for a correlation metric), a sample sheet
        (TSV/CSV with sample ids and the ``groupby``/``strata``/``pairs`` columns), a
        sequence of labels (one per sample), or None with ``groupby`` naming an ``obs``
        column of an h5ad/AnnData.
    gene_sets
        GMT/GMX path(s), or a mapping of set name to gene list.
    groupby, case, control
        Group column and the two classes compared (case is the "positive" class A; with
        exactly two classes the defaults follow the CLS order).
    phenotype_column
        Numeric phenotype column for ``metric="pearson"``/``"spearman"``.
    strata, pairs
        Column naming each sample's stratum (labels permuted within strata) or pair (one
        case and one control; labels swapped within pairs). See :mod:`permenrich.design`.
    metric
        Per-gene statistic, see :mod:`permenrich.stats.metrics`.
    set_statistic
        ``"ks"`` (GSEA's weighted running sum, default), ``"mean"`` or ``"maxmean"``.
    weight
        Exponent p of the weighted running sum (0 = classic KS, 1 = GSEA default).
    permutations
        Number of sample-label permutations; when the number of distinct labellings is
        at most this, all are enumerated exactly instead (``run["exact_enumeration"]``).
    seed
        Permutation k is a pure function of (seed, k).
    min_size, max_size
        Sets whose size after dropping absent genes falls outside are excluded.
    collapse
        How duplicated gene ids (or probes mapped by ``chip``) are merged.
    chip
        GSEA CHIP file mapping probe ids to gene symbols.
    nan_policy
        ``"error"`` (default) stops on the first gene with a missing/non-finite value;
        ``"drop"`` removes such genes with a warning.
    zero_variance
        Genes constant across the analysed samples: ``"drop"`` (default, with a
        warning) or ``"error"``.
    normalize
        ``"log1p_cpm"``: log(1 + counts per million) of count data, applied after
        pseudobulking (or per block when streaming); default ``"none"``.
    pseudobulk, pseudobulk_method
        Sum (``"sum"``, for counts) or average (``"mean"``) the cells of each value of
        this obs column (and of ``groupby``/``strata``/``pairs``) before testing, reading
        the matrix in blocks. Permuting cells across donors treats cells as independent
        replicates (pseudoreplication): p-values come out far too small. Test donors (or
        samples) instead; cell-level permutation is acceptable only when cells are the
        experimental units (e.g. a perturbation screen where each cell is independently
        assigned).
    batch_size
        Permutations per batch; default chosen from ``memory``.
    memory
        Memory budget (e.g. ``"1GB"``) for permutation batches, the cached null and the
        matrix: an HDF5/h5ad/10x matrix whose dense float64 size exceeds half of it is
        streamed from disk once per batch instead of being read into memory
        (two-group moment statistics only); run.json says which.
    threads
        CPU threads (default: all cores).
    device
        ``"cpu"``, ``"gpu"`` (CUDA; see :mod:`permenrich.backends.gpu`) or ``"auto"``
        (default: the GPU when Numba sees a CUDA device, else the CPU).
    progress
        ``progress(done, total)`` called after each batch.

    Returns
    -------
    pandas.DataFrame
        One row per set with the columns of :data:`RESULT_COLUMNS`, sorted by ``pval``
        then decreasing ``|nes|``; ``attrs["run"]`` holds the run's provenance.

    Raises
    ------
    PermenrichError
        For bad input or options, with a one-line message.

    Notes
    -----
    See :mod:`permenrich.enrich.running_sum` (ES, leading edge) and
    :mod:`permenrich.nulls` (NES, p, FDR, FWER). The leading-edge columns are filled for
    the running-sum statistic only.
    """
    started = time.perf_counter()
    metric_record, budget, backend = _common_setup(metric, set_statistic, weight, permutations, seed,
                                                   batch_size, threads, memory, device)
    study = load_study(expr, phenotype, metric=metric_record, groupby=groupby, case=case, control=control,
                       phenotype_column=phenotype_column, strata=strata, pairs=pairs, chip=chip,
                       collapse=collapse, nan_policy=nan_policy, zero_variance=zero_variance,
                       normalize=normalize, budget=budget, pseudobulk=pseudobulk,
                       pseudobulk_method=pseudobulk_method)
    n_sets_read, index = load_gene_sets(gene_sets, study.gene_ids, min_size=min_size, max_size=max_size)
    plan = PermutationPlan(study.design, int(permutations), int(seed))
    read_seconds = time.perf_counter() - started

    n_genes = study.n_genes
    gene_set_offsets, gene_set_ids = index.gene_to_sets(n_genes)
    backend.prepare_statistic(study.values, metric_record, phenotype=getattr(study.design, "values", None),
                              drawn_is_case=getattr(study.design, "drawn_is_case", True))
    backend.prepare_sets(set_statistic, index.members, index.offsets, gene_set_offsets, gene_set_ids,
                         float(weight), n_genes)
    observed, observed_stat = backend.score(plan.observed(), keep_stat=True)
    observed = np.asarray(backend.to_host(observed))[0]
    observed_stat = np.asarray(backend.to_host(observed_stat))[0]

    stats, null_info = _gsea_null(lambda a, b: backend.score(backend.labellings(plan, a, b))[0], observed,
                                  n_perm=plan.n_perm, exact=plan.exact, xp=backend.xp, n_sets=index.n_sets,
                                  batch_size=batch_size, budget=budget, extra_bytes=8 * plan.width,
                                  progress=progress)
    table = _gsea_table(index, stats, observed,
                        _leading_edges(index, study.gene_ids, observed_stat, float(weight), set_statistic))
    null_info["timings"]["read_seconds"] = read_seconds
    if not study.in_memory:
        study.info["streaming"] = study.values.describe()
    table.attrs["run"] = _provenance(
        "gsea",
        {"metric": metric, "set_statistic": set_statistic, "weight": float(weight),
         "permutations": int(permutations), "seed": int(seed), "min_size": min_size, "max_size": max_size,
         "collapse": collapse, "nan_policy": nan_policy, "zero_variance": zero_variance,
         "case": study.info.get("case"), "control": study.info.get("control"),
         "phenotype": study.info.get("phenotype"), "strata": strata, "pairs": pairs,
         "memory_bytes": budget, "batch_size": null_info["batch_size"], "device": device},
        started,
        design={k: v for k, v in study.info.items() if k not in ("case", "control", "strata", "pairs")},
        permutation_plan=plan.describe(),
        permutation_type="phenotype (sample labels)",
        null_storage=null_info["null_storage"],
        data={"n_genes": n_genes, "n_gene_sets_read": n_sets_read, "n_gene_sets_used": index.n_sets,
              "expression": file_digest(expr) or {"object": type(expr).__name__},
              "phenotype": file_digest(phenotype) if phenotype is not None else None,
              "gene_sets": digests(gene_sets), "chip": file_digest(chip) if chip is not None else None},
        backend=backend.describe(),
        timings=null_info["timings"],
    )
    return table


def prerank(
    rnk: Any,
    gene_sets: Any,
    *,
    set_statistic: SetStatisticName = "ks",
    weight: float = 1.0,
    permutations: int = 1000,
    seed: int = 0,
    min_size: int = 15,
    max_size: int = 500,
    duplicates: Literal["error", "mean", "max", "min", "first"] = "error",
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu", "gpu", "auto"] = "auto",
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Preranked GSEA with the gene-set (gene-label) permutation null.

    Parameters
    ----------
    rnk
        A ranked list: RNK file (gene, score), a Series (gene -> score) or a two-column
        DataFrame, e.g. a published differential-expression table or GWAS gene z-scores.
    gene_sets
        GMT/GMX path(s), or a mapping of set name to gene list.
    set_statistic, weight, permutations, seed, min_size, max_size
        As in :func:`gsea`.
    duplicates
        Duplicated genes in the list: ``"error"`` (default) or how to merge them.
    batch_size, memory, threads, device, progress
        As in :func:`gsea`.

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`RESULT_COLUMNS`, as in :func:`gsea`.

    Notes
    -----
    Genes are ranked by decreasing score (ties: file order). The null of a set of k genes
    is the statistic of random sets of k genes drawn from the ranked list, as GSEA
    preranked does; sets of equal size share their random draws within a permutation
    (permutation k's set of size n is a pure function of (seed, k, n)). This null
    ignores gene-gene correlation: prefer :func:`gsea` when the samples are at hand.
    """
    started = time.perf_counter()
    _, budget, backend = _common_setup("signal_to_noise", set_statistic, weight, permutations, seed,
                                       batch_size, threads, memory, device)
    ranked = read_rnk(rnk, duplicates=duplicates)
    order = rank_genes(ranked.scores)
    gene_ids = np.asarray(ranked.gene_ids, dtype=object)[order]
    ranked_stat = np.asarray(ranked.scores, dtype=np.float64)[order]
    n_sets_read, index = load_gene_sets(gene_sets, gene_ids, min_size=min_size, max_size=max_size)
    n_genes = gene_ids.size
    read_seconds = time.perf_counter() - started

    # Observed: the same kernel as the null, on the sets' own ranked positions.
    gene_set_offsets, gene_set_ids = index.gene_to_sets(n_genes)
    backend.prepare_sets(set_statistic, index.members, index.offsets, gene_set_offsets, gene_set_ids,
                         float(weight), n_genes)
    observed = np.asarray(backend.to_host(backend.set_scores(backend.xp.asarray(ranked_stat[None, :]))))[0]
    sizes, size_slot = np.unique(index.sizes, return_inverse=True)
    n_perm = int(permutations)

    def score_batch(start: int, stop: int) -> Any:
        null_by_size = backend.random_set_null(int(seed), start, stop, ranked_stat, float(weight), set_statistic,
                                               sizes)
        return null_by_size[:, backend.xp.asarray(size_slot)]

    stats, null_info = _gsea_null(score_batch, observed, n_perm=n_perm, exact=False, xp=backend.xp,
                                  n_sets=index.n_sets, batch_size=batch_size, budget=budget, extra_bytes=0,
                                  progress=progress)
    table = _gsea_table(index, stats, observed,
                        _leading_edges(index, gene_ids, ranked_stat, float(weight), set_statistic))
    null_info["timings"]["read_seconds"] = read_seconds
    table.attrs["run"] = _provenance(
        "prerank",
        {"set_statistic": set_statistic, "weight": float(weight), "permutations": n_perm, "seed": int(seed),
         "min_size": min_size, "max_size": max_size, "duplicates": duplicates, "memory_bytes": budget,
         "batch_size": null_info["batch_size"], "device": device},
        started,
        permutation_plan={"seed": int(seed), "permutations": n_perm, "exact_enumeration": False,
                          "generator": "Philox4x32-10, counter=(k_lo, k_hi, block, 0x47530000 | set size), "
                                       "key=seed; partial Fisher-Yates over ranked positions"},
        permutation_type="gene set (gene labels)",
        null_storage=null_info["null_storage"],
        data={"n_genes": n_genes, "n_gene_sets_read": n_sets_read, "n_gene_sets_used": index.n_sets,
              "ranked_list": file_digest(rnk) or {"object": type(rnk).__name__},
              "gene_sets": digests(gene_sets)},
        backend=backend.describe(),
        timings=null_info["timings"],
    )
    return table


def genes(
    expr: Any,
    phenotype: Any = None,
    *,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    phenotype_column: str | None = None,
    strata: str | None = None,
    pairs: str | None = None,
    metric: MetricName = "welch_t",
    alternative: Alternative = "two-sided",
    permutations: int = 10000,
    seed: int = 0,
    collapse: Literal["mean", "max", "median"] = "mean",
    chip: str | os.PathLike | None = None,
    nan_policy: Literal["error", "drop"] = "error",
    zero_variance: Literal["error", "drop"] = "drop",
    normalize: Literal["none", "log1p_cpm"] = "none",
    pseudobulk: str | None = None,
    pseudobulk_method: Literal["sum", "mean"] = "sum",
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu", "gpu", "auto"] = "auto",
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Per-gene permutation tests with Westfall–Young maxT adjustment.

    Parameters
    ----------
    expr, phenotype, groupby, case, control, phenotype_column, strata, pairs
        As in :func:`gsea`.
    metric
        Any statistic of :mod:`permenrich.stats.metrics` (default Welch's t).
    alternative
        ``"two-sided"`` (default), ``"greater"`` (case > control, or positive
        correlation) or ``"less"``.
    permutations, seed, collapse, chip, nan_policy, zero_variance, normalize, pseudobulk,
    pseudobulk_method, batch_size, memory, threads, device, progress
        As in :func:`gsea`.

    Returns
    -------
    pandas.DataFrame
        One row per gene: ``gene``, ``statistic``, ``pval_parametric`` (SciPy's textbook
        p-value where one exists), ``pval`` (permutation, (b+1)/(m+1)), ``qval_bh``
        (Benjamini–Hochberg of ``pval``), ``pval_maxt`` (Westfall–Young step-down maxT,
        FWER-adjusted); sorted by ``pval`` then decreasing |statistic|.

    Notes
    -----
    Only exceedance counts are kept, never the null matrix: memory does not grow with
    the number of permutations. Two-sided tests compare |T - c| with c the statistic's
    value under no effect (0; 1 for ratio_of_classes; n_A n_B / 2 for Mann–Whitney U).
    """
    started = time.perf_counter()
    check_choice("alternative", alternative, ("two-sided", "greater", "less"))
    metric_record, budget, backend = _common_setup(metric, None, None, permutations, seed, batch_size,
                                                   threads, memory, device)
    study = load_study(expr, phenotype, metric=metric_record, groupby=groupby, case=case, control=control,
                       phenotype_column=phenotype_column, strata=strata, pairs=pairs, chip=chip,
                       collapse=collapse, nan_policy=nan_policy, zero_variance=zero_variance,
                       normalize=normalize, budget=budget, pseudobulk=pseudobulk,
                       pseudobulk_method=pseudobulk_method)
    plan = PermutationPlan(study.design, int(permutations), int(seed))
    n_genes = study.n_genes
    read_seconds = time.perf_counter() - started

    design = study.design
    backend.prepare_statistic(study.values, metric_record, phenotype=getattr(design, "values", None),
                              drawn_is_case=getattr(design, "drawn_is_case", True))
    observed = np.asarray(backend.to_host(backend.gene_statistics(plan.observed())))[0]
    if isinstance(design, TwoGroupLabels):
        centre = {"mann_whitney": design.n_case * design.n_control / 2, "ratio_of_classes": 1.0}.get(metric, 0.0)
        parametric_phenotype = design.is_case
    else:
        centre = 0.0
        parametric_phenotype = design.values
    accumulator = ExceedanceAccumulator(observed, alternative=alternative, centre=centre, n_perm=plan.n_perm,
                                        exact=plan.exact, xp=backend.xp)
    chosen = choose_batch_size(batch_size, budget, 8 * n_genes * 4 + 8 * plan.width, plan.n_perm)
    timings = run_two_pass(lambda a, b: backend.gene_statistics(backend.labellings(plan, a, b)), accumulator.add,
                           None, None, n_perm=plan.n_perm, batch_size=chosen, cache=False, progress=progress)
    result = accumulator.finish()
    # Textbook p-values need the values in memory (not for a streamed matrix); SciPy's
    # temporaries are as large as its input, so genes go in slices of ~64 MB.
    parametric = np.full(n_genes, np.nan)
    if metric_record.parametric is not None and study.in_memory:
        step = max(1, (64 << 20) // (8 * study.values.shape[1]))
        for start in range(0, n_genes, step):
            parametric[start:start + step] = metric_record.parametric(study.values[start:start + step],
                                                                      parametric_phenotype, alternative)
    table = pd.DataFrame({"gene": study.gene_ids.astype(str), "statistic": observed,
                          "pval_parametric": parametric, "pval": result["pval"],
                          "qval_bh": bh_adjust(result["pval"]), "pval_maxt": result["p_maxt"]})
    order = np.lexsort((table.gene.to_numpy(), -np.abs(table.statistic.to_numpy() - centre), table.pval.to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    timings["read_seconds"] = read_seconds
    if not study.in_memory:
        study.info["streaming"] = study.values.describe()
    table.attrs["run"] = _provenance(
        "genes",
        {"metric": metric, "alternative": alternative, "permutations": int(permutations), "seed": int(seed),
         "collapse": collapse, "nan_policy": nan_policy, "zero_variance": zero_variance,
         "case": study.info.get("case"), "control": study.info.get("control"),
         "phenotype": study.info.get("phenotype"), "strata": strata, "pairs": pairs, "null_centre": centre,
         "memory_bytes": budget, "batch_size": chosen, "device": device},
        started,
        design={k: v for k, v in study.info.items() if k not in ("case", "control", "strata", "pairs")},
        permutation_plan=plan.describe(),
        permutation_type="phenotype (sample labels)",
        data={"n_genes": n_genes, "expression": file_digest(expr) or {"object": type(expr).__name__},
              "phenotype": file_digest(phenotype) if phenotype is not None else None},
        backend=backend.describe(),
        timings=timings,
    )
    return table


ORA_COLUMNS = ["gene_set", "size", "size_original", "list_size", "overlap", "expected", "odds_ratio",
               "pval_hypergeom", "padj_bh_hypergeom", "pval_perm", "padj_bh_perm", "pval_perm_maxt",
               "overlap_genes"]


def _select_genes(stats: np.ndarray, *, top: int | None, fdr: float | None, direction: str, centre: float,
                  pvalue_of_statistic: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """The "altered" genes of each row of ``stats`` (n_batch, n_genes) -> bool matrix.

    ``top``: the ``top`` most extreme genes in ``direction`` (ties by gene index);
    ``fdr``: genes whose BH q-value of the statistic's textbook p-value is < ``fdr``.
    """
    stats = np.atleast_2d(stats)
    n_batch, n_genes = stats.shape
    selected = np.zeros((n_batch, n_genes), dtype=bool)
    if top is not None:
        signed = {"up": stats - centre, "down": centre - stats, "both": np.abs(stats - centre)}[direction]
        signed = np.where(np.isnan(signed), -np.inf, signed)
        # stable argsort of the negated extremeness: ties keep gene-index order
        chosen = np.argsort(-signed, axis=1, kind="stable")[:, :top]
        np.put_along_axis(selected, chosen, True, axis=1)
        return selected
    pvalues = pvalue_of_statistic(stats)  # built for the direction's alternative
    for row in range(n_batch):
        selected[row] = bh_adjust(pvalues[row]) < fdr
    return selected


def ora(
    gene_list: Any = None,
    gene_sets: Any = None,
    *,
    universe: Any = None,
    expr: Any = None,
    phenotype: Any = None,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    phenotype_column: str | None = None,
    strata: str | None = None,
    pairs: str | None = None,
    metric: MetricName = "student_t",
    top: int | None = None,
    fdr: float | None = None,
    direction: Literal["up", "down", "both"] = "both",
    permutations: int = 1000,
    seed: int = 0,
    min_size: int = 15,
    max_size: int = 500,
    collapse: Literal["mean", "max", "median"] = "mean",
    chip: str | os.PathLike | None = None,
    nan_policy: Literal["error", "drop"] = "error",
    zero_variance: Literal["error", "drop"] = "drop",
    normalize: Literal["none", "log1p_cpm"] = "none",
    pseudobulk: str | None = None,
    pseudobulk_method: Literal["sum", "mean"] = "sum",
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu", "gpu", "auto"] = "auto",
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Over-representation analysis, from a gene list or from expression data.

    Parameters
    ----------
    gene_list
        List mode: the genes of interest (file with one gene per line, or a sequence).
    gene_sets
        GMT/GMX path(s), or a mapping of set name to gene list.
    universe
        The background genes (file or sequence). Default in list mode: the genes of
        ``expr`` if given, else an error; in expression mode: the expression genes.
    expr, phenotype, groupby, case, control, phenotype_column, strata, pairs, metric
        Expression mode (no ``gene_list``): the altered genes are derived from a per-gene
        statistic, as in :func:`genes`.
    top, fdr, direction
        Expression mode selection rule (exactly one of ``top``/``fdr``): the ``top`` most
        extreme genes, or those with Benjamini–Hochberg q < ``fdr`` from the statistic's
        textbook p-value (metrics whose null is a fixed function of the statistic:
        student_t, mann_whitney, pearson, spearman); ``direction`` up (case > control or
        positive correlation), down or both.
    permutations, seed, collapse, chip, nan_policy, zero_variance, normalize, pseudobulk,
    pseudobulk_method, batch_size, memory, threads, device, progress
        As in :func:`gsea` (expression mode).

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`ORA_COLUMNS`: ``pval_hypergeom`` is the one-sided hypergeometric
        (Fisher) p-value — the exact gene-resampling null (random sets of equal size);
        in expression mode ``pval_perm`` is the sample-label permutation p-value,
        re-deriving the altered list under each permutation so that gene-gene
        correlation is respected, and ``pval_perm_maxt`` its Westfall–Young maxT
        adjustment over sets. Sorted by the permutation p-value when there is one, else
        by the hypergeometric one.
    """
    from .enrich.overlap import OverlapCounter, leading_overlap_genes, overlap_statistics
    from .io import read_gene_list

    started = time.perf_counter()
    expression_mode = gene_list is None
    if expression_mode and expr is None:
        raise InputError("give a gene list (list mode) or expression data and a phenotype (expression mode)")
    if not expression_mode and expr is not None and phenotype is not None:
        raise InputError("give either a gene list or expression data with a phenotype, not both")
    check_choice("direction", direction, ("up", "down", "both"))
    timings: dict[str, float] = {}
    run: dict[str, Any] = {}
    if expression_mode:
        if (top is None) == (fdr is None):
            raise InputError("expression mode needs exactly one selection rule: top=N (--top) or fdr=q (--fdr)")
        if top is not None and (isinstance(top, bool) or int(top) < 1):
            raise InputError(f"top must be a positive integer, got {top!r}")
        if fdr is not None and not 0 < float(fdr) < 1:
            raise InputError(f"fdr must lie in (0, 1), got {fdr!r}")
        metric_record, budget, backend = _common_setup(metric, None, None, permutations, seed, batch_size,
                                                       threads, memory, device)
        if fdr is not None and metric_record.pvalue_of_statistic is None:
            raise InputError(f"--fdr needs a statistic whose p-value can be recomputed under every permutation "
                             f"(student_t, mann_whitney, pearson, spearman); {metric} cannot: use --top N")
        study = load_study(expr, phenotype, metric=metric_record, groupby=groupby, case=case, control=control,
                           phenotype_column=phenotype_column, strata=strata, pairs=pairs, chip=chip,
                           collapse=collapse, nan_policy=nan_policy, zero_variance=zero_variance,
                       normalize=normalize, budget=budget, pseudobulk=pseudobulk,
                       pseudobulk_method=pseudobulk_method)
        gene_ids = study.gene_ids
        if universe is not None and not study.in_memory:
            raise InputError("--universe cannot restrict a streamed matrix; raise --memory or use --pseudobulk")
        if universe is not None:
            keep_genes = np.isin(gene_ids, read_gene_list(universe, what="universe"))
            if not keep_genes.any():
                raise InputError("the universe shares no gene with the expression data; check the gene id type")
            study = Study(study.values[keep_genes], gene_ids[keep_genes], study.design, study.source, study.info)
            gene_ids = study.gene_ids
        if top is not None and int(top) >= gene_ids.size:
            raise InputError(f"top={top} selects every one of the {gene_ids.size} genes; choose a smaller N")
        design = study.design
        plan = PermutationPlan(design, int(permutations), int(seed))
        backend.prepare_statistic(study.values, metric_record, phenotype=getattr(design, "values", None),
                                  drawn_is_case=getattr(design, "drawn_is_case", True))
        n_case = getattr(design, "n_case", 0)
        n_control = getattr(design, "n_control", 0)
        if isinstance(design, TwoGroupLabels):
            centre = {"mann_whitney": n_case * n_control / 2, "ratio_of_classes": 1.0}.get(metric, 0.0)
        else:
            centre = 0.0
        alternative = {"up": "greater", "down": "less", "both": "two-sided"}[direction]
        p_of_stat = (metric_record.pvalue_of_statistic(study.values if study.in_memory else None, n_case,
                                                       n_control, alternative)
                     if fdr is not None else None)

        def select(stats: np.ndarray) -> np.ndarray:
            return _select_genes(np.asarray(backend.to_host(stats)), top=None if top is None else int(top),
                                 fdr=fdr, direction=direction, centre=centre, pvalue_of_statistic=p_of_stat)

        selected = select(backend.gene_statistics(plan.observed()))[0]
        if not selected.any():
            raise InputError(f"no gene passes the selection rule (fdr < {fdr}); loosen --fdr or use --top N")
    else:
        budget = parse_memory(memory)
        genes_of_interest = read_gene_list(gene_list, what="gene list")
        if universe is not None:
            gene_ids = np.asarray(read_gene_list(universe, what="universe"), dtype=object)
        elif expr is not None:
            from .io import read_expression
            gene_ids = np.asarray(read_expression(expr, nan_policy="drop").gene_ids, dtype=object)
        else:
            raise InputError("list mode needs a universe (--universe FILE, or the expression data's genes "
                             "with --expr): the background decides the p-values")
        gene_ids = np.asarray(list(dict.fromkeys(gene_ids)), dtype=object)
        selected = np.isin(gene_ids, genes_of_interest)
        outside = len(set(genes_of_interest) - set(gene_ids))
        if not selected.any():
            raise InputError(f"none of the {len(genes_of_interest)} listed genes is in the universe of "
                             f"{gene_ids.size} genes; check the gene id type (symbols vs probe or Ensembl ids)")
        if outside:
            import logging
            logging.getLogger("permenrich").warning(
                "%d of %d listed genes are not in the universe and are ignored", outside, len(genes_of_interest))
        plan = None
    n_sets_read, index = load_gene_sets(gene_sets, gene_ids, min_size=min_size, max_size=max_size)
    observed = overlap_statistics(selected, index.members, index.offsets, gene_ids.size)
    table = pd.DataFrame({
        "gene_set": index.names.astype(str), "size": index.sizes.astype(int),
        "size_original": index.sizes_original.astype(int), "list_size": observed["list_size"],
        "overlap": observed["overlap"], "expected": observed["expected"], "odds_ratio": observed["odds_ratio"],
        "pval_hypergeom": observed["pval"], "padj_bh_hypergeom": bh_adjust(observed["pval"]),
        "pval_perm": np.nan, "padj_bh_perm": np.nan, "pval_perm_maxt": np.nan,
        "overlap_genes": leading_overlap_genes(selected, index.members, index.offsets, gene_ids),
    })
    if expression_mode:
        counter = OverlapCounter(index.members, index.offsets, gene_ids.size)
        accumulator = ExceedanceAccumulator(observed["overlap"].astype(np.float64), alternative="greater",
                                            centre=0.0, n_perm=plan.n_perm, exact=plan.exact)
        list_sizes: list[int] = []

        def score_batch(start: int, stop: int) -> np.ndarray:
            chosen = select(backend.gene_statistics(backend.labellings(plan, start, stop)))
            list_sizes.extend(chosen.sum(axis=1).tolist())
            return counter.counts(chosen).astype(np.float64)

        chosen_batch = choose_batch_size(batch_size, budget, 8 * gene_ids.size * 6, plan.n_perm)
        timings = run_two_pass(score_batch, accumulator.add, None, None, n_perm=plan.n_perm,
                               batch_size=chosen_batch, cache=False, progress=progress)
        result = accumulator.finish()
        table["pval_perm"] = result["pval"]
        table["padj_bh_perm"] = bh_adjust(result["pval"])
        table["pval_perm_maxt"] = result["p_maxt"]
        run.update(permutation_plan=plan.describe(), permutation_type="phenotype (sample labels)",
                   design={k: v for k, v in study.info.items() if k not in ("strata", "pairs")},
                   null_list_size={"mean": float(np.mean(list_sizes)), "min": int(np.min(list_sizes)),
                                   "max": int(np.max(list_sizes))},
                   backend=backend.describe())
        sort_key = table.pval_perm.to_numpy()
    else:
        sort_key = table.pval_hypergeom.to_numpy()
    order = np.lexsort((table.gene_set.to_numpy(), table.pval_hypergeom.to_numpy(), sort_key))
    table = table.iloc[order].reset_index(drop=True)
    table.attrs["run"] = _provenance(
        "ora",
        {"mode": "expression" if expression_mode else "list", "metric": metric if expression_mode else None,
         "top": top, "fdr": fdr, "direction": direction, "permutations": int(permutations), "seed": int(seed),
         "min_size": min_size, "max_size": max_size, "strata": strata, "pairs": pairs, "memory_bytes": budget,
         "device": device},
        started,
        data={"n_universe": int(gene_ids.size), "n_selected": int(selected.sum()), "n_gene_sets_read": n_sets_read,
              "n_gene_sets_used": index.n_sets, "gene_list": file_digest(gene_list) if gene_list is not None else None,
              "universe": file_digest(universe) if universe is not None else None,
              "expression": file_digest(expr) if expr is not None else None, "gene_sets": digests(gene_sets)},
        timings=timings,
        **run,
    )
    return table


def read_contrasts(spec: Any, *, one_vs_rest: str | None = None, levels: list[str] | None = None) -> pd.DataFrame:
    """Contrasts as a table with columns ``name, groupby, case, control``.

    ``spec``: a TSV/CSV file or a DataFrame with those columns (``control`` may be
    ``rest``: every other level), or None with ``one_vs_rest`` naming a column whose
    ``levels`` each become one contrast against the rest.
    """
    if spec is None:
        if one_vs_rest is None:
            raise InputError("give contrasts (a table of name, groupby, case, control) or a one-vs-rest column")
        return pd.DataFrame({"name": [f"{level}_vs_rest" for level in levels], "groupby": one_vs_rest,
                             "case": levels, "control": "rest"})
    if isinstance(spec, pd.DataFrame):
        table, where = spec.copy(), "<contrasts>"
    else:
        where = str(spec)
        if not Path(spec).is_file():
            raise InputError(f"{where}: contrasts file not found")
        table = pd.read_csv(spec, sep="," if where.lower().endswith(".csv") else "\t", dtype=str,
                            keep_default_na=False, comment="#")
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("name", "groupby", "case", "control") if c not in table.columns]
    if missing:
        raise InputError(f"{where}: contrasts need the columns name, groupby, case, control; missing {missing[0]!r}")
    if table.empty:
        raise InputError(f"{where}: no contrast listed")
    if table.name.duplicated().any():
        raise InputError(f"{where}: contrast name {table.name[table.name.duplicated()].iloc[0]!r} is used twice")
    bad = table.name.str.contains(r"[^A-Za-z0-9_.-]", regex=True)
    if bad.any():
        raise InputError(f"{where}: contrast name {table.name[bad].iloc[0]!r} may hold only letters, digits, "
                         "'_', '.' and '-' (it names an output file)")
    return table[["name", "groupby", "case", "control"]].reset_index(drop=True)


def contrasts(
    expr: Any,
    spec: Any = None,
    gene_sets: Any = None,
    *,
    mode: Literal["gsea", "genes"] = "gsea",
    one_vs_rest: str | None = None,
    phenotype: Any = None,
    chip: str | os.PathLike | None = None,
    collapse: Literal["mean", "max", "median"] = "mean",
    nan_policy: Literal["error", "drop"] = "error",
    normalize: Literal["none", "log1p_cpm"] = "none",
    pseudobulk: str | None = None,
    pseudobulk_method: Literal["sum", "mean"] = "sum",
    memory: str | int = "1GB",
    **options: Any,
) -> pd.DataFrame:
    """Many contrasts over one data set: read (and pseudobulk) the matrix once, then run
    ``mode`` (:func:`gsea` or :func:`genes`) for each contrast.

    Parameters
    ----------
    expr
        Expression data, as in :func:`gsea`.
    spec
        Contrast table (file or DataFrame: ``name, groupby, case, control``; ``control``
        may be ``rest``), or None with ``one_vs_rest``.
    gene_sets
        For ``mode="gsea"``.
    one_vs_rest
        A group column: every level against all other samples.
    phenotype
        A sample sheet holding the group columns (default: the h5ad's obs).
    chip, collapse, nan_policy, normalize, pseudobulk, pseudobulk_method, memory
        As in :func:`gsea`; applied once for all contrasts.
    **options
        Passed to the mode's function for every contrast (metric, permutations, seed, ...).

    Returns
    -------
    pandas.DataFrame
        The mode's results of all contrasts, with a leading ``contrast`` column;
        ``attrs["run"]["contrasts"]`` holds each contrast's run provenance and
        ``attrs["per_contrast"]`` each contrast's own table.
    """
    started = time.perf_counter()
    check_choice("mode", mode, ("gsea", "genes"))
    budget = parse_memory(memory)
    if spec is None and one_vs_rest is None:
        raise InputError("give contrasts (a table of name, groupby, case, control) or a one-vs-rest column")
    if spec is not None:
        table = read_contrasts(spec)
        columns = list(dict.fromkeys(table["groupby"]))
    else:
        table, columns = None, [one_vs_rest]
    keys = tuple(dict.fromkeys([*columns, *(c for c in (options.get("strata"), options.get("pairs")) if c)]))
    loaded = load_data(expr, chip=chip, collapse=collapse, nan_policy=nan_policy, normalize=normalize,
                       budget=budget, pseudobulk=pseudobulk, pseudobulk_keys=keys,
                       pseudobulk_method=pseudobulk_method)
    annotations = {column: sample_annotation(loaded.data, phenotype, column, what="group") for column in columns}
    if table is None:
        levels = sorted({v for v in annotations[one_vs_rest] if v != ""})
        table = read_contrasts(None, one_vs_rest=one_vs_rest, levels=levels)
    parts, runs, per_contrast = [], {}, {}
    for contrast in table.itertuples(index=False):
        labels = annotations.get(contrast.groupby)
        if labels is None:
            raise InputError(f"contrast {contrast.name!r}: group column {contrast.groupby!r} is not available")
        if contrast.case not in set(labels):
            raise InputError(f"contrast {contrast.name!r}: level {contrast.case!r} of {contrast.groupby!r} has no "
                             "samples; check the contrast table")
        if contrast.control == "rest":
            contrast_labels = np.where(labels == contrast.case, contrast.case,
                                       np.where(labels == "", "", "rest")).astype(object)
        else:
            if contrast.control not in set(labels):
                raise InputError(f"contrast {contrast.name!r}: level {contrast.control!r} of {contrast.groupby!r} "
                                 "has no samples; check the contrast table")
            contrast_labels = labels
        kwargs = dict(options, case=contrast.case, control=contrast.control, memory=memory)
        if mode == "gsea":
            result = gsea(loaded, list(contrast_labels), gene_sets, **kwargs)
        else:
            result = genes(loaded, list(contrast_labels), **kwargs)
        per_contrast[contrast.name] = result
        runs[contrast.name] = result.attrs["run"]
        part = result.copy()
        part.insert(0, "contrast", contrast.name)
        parts.append(part)
    if loaded.source is not None:
        loaded.source.close()
    combined = pd.concat(parts, ignore_index=True)
    combined.attrs["run"] = _provenance(f"{mode} (contrasts)", {"mode": mode, "contrasts": table.to_dict("records"),
                                                               "memory_bytes": budget}, started,
                                        data={"expression": file_digest(expr) or {"object": type(expr).__name__},
                                              **loaded.info}, contrasts=runs)
    combined.attrs["per_contrast"] = per_contrast
    return combined


def write_results(table: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.tsv`` and ``run.json`` into ``out_dir`` atomically.

    Returns
    -------
    dict with the paths written.
    """
    out = check_output_dir(out_dir)
    results_path = out / "results.tsv"
    run_path = out / "run.json"
    written = {}
    # Per-contrast tables first: results.tsv and run.json, written last, mark a complete run.
    for name, part in table.attrs.get("per_contrast", {}).items():
        written[name] = out / f"{name}.tsv"
        atomic_write_table(part, written[name])
    atomic_write_table(table, results_path)
    atomic_write_text(run_path, json.dumps(table.attrs.get("run", {}), indent=2, default=str) + "\n")
    return {"results": results_path, "run": run_path, **written}


__all__ = ["GENE_COLUMNS", "ORA_COLUMNS", "RESULT_COLUMNS", "contrasts", "genes", "gsea", "ora", "prerank",
           "read_contrasts", "write_results"]
