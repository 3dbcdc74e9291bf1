"""Per-gene permutation tests with Westfall-Young maxT (:func:`genes`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._pipeline import choose_batch_size
from ..design import TwoGroupLabels
from ..nulls import ExceedanceAccumulator, bh_adjust
from ..stats.metrics import Alternative, MetricName
from ..runner import Job, Prepared, ProgressCallback, run
from ..stats.covariates import t_pvalues
from ._shared import check_observed_statistics, options_of, prepare_study, provenance, reading_record


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
    covariates: Sequence[str] | None = None,
    metric: MetricName = "welch_t",
    alternative: Alternative = "two-sided",
    permutations: int = 10000,
    seed: int = 0,
    collapse: Literal["mean", "max", "median"] = "mean",
    chip: str | os.PathLike | None = None,
    nan_policy: Literal["error", "drop"] = "error",
    zero_variance: Literal["error", "drop"] = "drop",
    normalize: Literal["none", "log1p_cpm", "log2"] = "none",
    pseudobulk: str | None = None,
    pseudobulk_method: Literal["sum", "mean"] = "sum",
    min_cells: int = 10,
    layer: str | None = None,
    use_raw: bool = False,
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu", "gpu", "auto"] = "auto",
    client: Any = None,
    progress: ProgressCallback | bool | None = None,
) -> pd.DataFrame:
    """Per-gene permutation tests with Westfall–Young maxT adjustment.

    Parameters
    ----------
    expr, phenotype, groupby, case, control, phenotype_column, strata, pairs, covariates
        As in :func:`gsea` (with covariates, ``pval_parametric`` is the t test of the
        phenotype's coefficient, n - p - 1 degrees of freedom).
    metric
        Any statistic of :mod:`permenrich.stats.metrics` (default Welch's t).
    alternative
        ``"two-sided"`` (default), ``"greater"`` (case > control, or positive
        correlation) or ``"less"``.
    permutations, seed, collapse, chip, nan_policy, zero_variance, normalize
        As in :func:`gsea`.
    pseudobulk, pseudobulk_method, min_cells, layer, use_raw, batch_size, memory, threads, device, client, progress
        As in :func:`gsea` (``control="rest"``: the case against all other samples).

    Returns
    -------
    pandas.DataFrame
        One row per gene: ``gene``, ``statistic``, ``pval_parametric`` (SciPy's textbook
        p-value where one exists; NaN with ``strata`` or ``pairs``, whose design only the
        permutations respect), ``pval`` (permutation, (b+1)/(m+1)), ``qval_bh``
        (Benjamini–Hochberg of ``pval``), ``pval_maxt`` (Westfall–Young step-down maxT,
        FWER-adjusted); sorted by ``pval`` then decreasing ``|statistic|``.

    Notes
    -----
    Only exceedance counts are kept, never the null matrix: memory does not grow with
    the number of permutations. Two-sided tests compare ``|T - c|`` with c the statistic's
    value under no effect (0; 1 for ratio_of_classes; n_A n_B / 2 for Mann–Whitney U).
    """
    return run(prepare_genes, options_of(locals()), client=client, progress=progress)


def prepare_genes(options: dict) -> Prepared:
    """Read and check the inputs of :func:`genes`, prepare the backend and the observed
    statistics; the runner's :class:`~permenrich.runner.Prepared` (also run on Dask workers)."""
    o = SimpleNamespace(**options)
    started = time.perf_counter()
    study_run = prepare_study(o, started)
    metric_record, budget, backend = study_run.metric, study_run.budget, study_run.backend
    shared_scale = metric_record.shared_scale
    study, plan = study_run.study, study_run.plan
    n_genes, design, centre, read_seconds = study.n_genes, study.design, study_run.centre, study_run.read_seconds
    observed = np.asarray(backend.to_host(backend.gene_statistics(plan.observed())))[0]
    check_observed_statistics(observed, study.gene_ids, o.metric, study.source)
    parametric_phenotype = design.is_case if isinstance(design, TwoGroupLabels) else design.values
    chosen = choose_batch_size(o.batch_size, budget, 8 * n_genes * 4 + 8 * plan.width, plan.n_perm,
                               streamed=not study.in_memory)
    job = Job(n_perm=plan.n_perm, batch_size=chosen, cache=False,
              score=lambda a, b: backend.gene_statistics(backend.labellings(plan, a, b)),
              new_accumulator=lambda: ExceedanceAccumulator(observed, alternative=o.alternative, centre=centre,
                                                            n_perm=plan.n_perm, exact=plan.exact, xp=backend.xp,
                                                            threads=o.threads, shared_scale=shared_scale))

    def finish(accumulator: Any, timings: dict) -> pd.DataFrame:
        result = accumulator.finish()
        # The t tests' textbook p-values come from class sums, streamed or not; the others
        # need the values in memory (a streamed matrix has none of those metrics). SciPy's
        # temporaries are as large as its input, so genes go in slices of ~64 MB.
        parametric = np.full(n_genes, np.nan)
        # With strata or pairs the statistic is the unrestricted one and only its
        # permutations respect the design; its textbook p would not (an unpaired test of
        # paired samples), so none is put beside the permutation p.
        restricted = o.strata is not None or o.pairs is not None
        if restricted:
            pass
        elif study.covariates is not None:
            parametric = t_pvalues(observed, study.covariates.df, o.alternative)
        elif metric_record.parametric_from_sums:
            parametric = metric_record.parametric(study.values, parametric_phenotype, o.alternative)
        elif metric_record.parametric is not None and study.in_memory:
            step = max(1, (64 << 20) // (8 * study.values.shape[1]))
            for start in range(0, n_genes, step):
                parametric[start:start + step] = metric_record.parametric(study.values[start:start + step],
                                                                          parametric_phenotype, o.alternative)
        table = pd.DataFrame({"gene": study.gene_ids.astype(str), "statistic": observed,
                              "pval_parametric": parametric, "pval": result["pval"],
                              "qval_bh": bh_adjust(result["pval"]), "pval_maxt": result["p_maxt"]})
        order = np.lexsort((table.gene.to_numpy(), -np.abs(table.statistic.to_numpy() - centre),
                            table.pval.to_numpy()))
        table = table.iloc[order].reset_index(drop=True)
        timings["read_seconds"] = read_seconds
        if not study.in_memory:
            study.info["streaming"] = study.values.describe()
            study.values.release()  # the file is free for others
        read_parameters, read_data = reading_record(o)
        table.attrs["run"] = provenance(
            "genes",
            {"metric": o.metric, "alternative": o.alternative, "permutations": int(o.permutations),
             "seed": int(o.seed), **read_parameters, "case": study.info.get("case"),
             "control": study.info.get("control"),
             "phenotype": study.info.get("phenotype"), "strata": o.strata, "pairs": o.pairs, "null_centre": centre,
             "memory_bytes": budget, "batch_size": chosen, "device": o.device},
            started,
            design={k: v for k, v in study.info.items() if k not in ("case", "control", "strata", "pairs")},
            permutation_plan=plan.describe(),
            permutation_type="phenotype (sample labels)",
            data={"n_genes": n_genes, **read_data},
            backend=backend.describe(),
            timings=timings,
        )
        return table

    return Prepared(job, finish)
