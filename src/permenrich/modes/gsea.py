"""Phenotype-permutation GSEA (:func:`gsea`) and preranked GSEA (:func:`prerank`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd

from .._pipeline import (
    digests,
    file_digest,
    load_gene_sets,
)
from ..backends.cpu import sorted_positions_scores
from ..enrich.linear import SetStatisticName
from ..enrich.multilevel import DEFAULT_EPS, DEFAULT_SAMPLE_SIZE
from ..enrich.running_sum import scaled_for_weights
from ..errors import OptionError, option
from ..io.rnk import read_rnk
from ..runner import Prepared, ProgressCallback, run
from ..stats.metrics import MetricName
from ..stats.ranking import rank_genes
from ._shared import (
    check_observed_statistics,
    common_setup,
    gsea_job,
    options_of,
    p_floor_warning,
    prepare_study,
    gsea_table,
    leading_edges,
    provenance,
    reading_record,
    score_scale,
)

logger = logging.getLogger("permenrich")


def _dropped() -> None:
    """What a pickled :class:`StudyReference` becomes: nothing (see its docstring)."""
    return None


@dataclass(frozen=True, eq=False)
class StudyReference:
    """What a :func:`gsea` run permuted, kept by reference (no copy) in its
    :class:`Ranking` so that figures can recompute one set's null
    (:func:`permenrich.pl.null_distribution`) or draw its expression
    (:func:`permenrich.pl.leading_edge_heatmap`).

    ``study`` is the run's :class:`~permenrich._pipeline.Study` (matrix in memory, or
    streamed from its file; gene ids, design, covariates), ``plan`` its permutation plan,
    ``metric`` its per-gene statistic, ``set_members`` the sets' members as indices into
    ``study.gene_ids`` in the run's order (set ``s`` is
    ``set_members[offsets[s]:offsets[s + 1]]`` with the :class:`Ranking`'s offsets), and
    ``backend`` the kind of backend it ran on (``"cpu"``/``"gpu"``).

    Pickling drops it (it unpickles as None): a pickled result stays as small as its
    table instead of carrying the expression matrix.
    """

    study: Any
    plan: Any
    metric: str
    set_members: np.ndarray
    backend: str

    def __reduce__(self) -> tuple:
        return (_dropped, ())


@dataclass(frozen=True, eq=False)
class Ranking:
    """The observed ranked list and the reported sets' members of a GSEA result, kept in
    ``attrs["ranking"]`` for figures (:func:`permenrich.pl.enrichment`).

    ``gene_ids`` and ``statistic`` (shape ``(n_genes,)``) are in ranked order (decreasing
    statistic, position 0 = top); set ``s`` holds the ranked positions
    ``member_positions[offsets[s]:offsets[s + 1]]``, ascending. ``weight`` and
    ``set_statistic`` are the run's. ``study``: for :func:`gsea` results, what the run
    permuted (:class:`StudyReference`); None otherwise and after pickling.
    """

    gene_ids: np.ndarray
    statistic: np.ndarray
    set_names: np.ndarray
    member_positions: np.ndarray
    offsets: np.ndarray
    weight: float
    set_statistic: str
    study: StudyReference | None = None

    def __deepcopy__(self, memo: dict) -> Ranking:
        # pandas deep-copies attrs on every operation on the table; this record is
        # read-only, so copies share it (cheap for large runs, and equal by identity when
        # pandas.concat compares attrs).
        return self

    def frame(self) -> pd.DataFrame:
        """The ranked list as a DataFrame with columns ``gene`` and ``statistic``."""
        return pd.DataFrame({"gene": self.gene_ids, "statistic": self.statistic})

    def members(self, set_name: str) -> np.ndarray:
        """Ranked positions (ascending) of the members of ``set_name``; KeyError if absent."""
        found = np.flatnonzero(self.set_names == set_name)
        if found.size == 0:
            raise KeyError(set_name)
        s = int(found[0])
        return self.member_positions[self.offsets[s]:self.offsets[s + 1]]


def _ranking(index: Any, gene_ids: np.ndarray, stat: np.ndarray, weight: float, set_statistic: str,
             ranked: bool = False, study: StudyReference | None = None) -> Ranking:
    """:class:`Ranking` of the observed statistic ``stat`` (one per ``gene_ids``; already
    in ranked order when ``ranked``, whose tie order is then kept) and the sets of
    ``index`` (members as indices into ``gene_ids``)."""
    order = np.arange(stat.size) if ranked else rank_genes(stat)
    position_of_gene = np.empty_like(order)
    position_of_gene[order] = np.arange(order.size)
    positions = position_of_gene[index.members]
    for s in range(index.n_sets):  # sorted within each set
        positions[index.offsets[s]:index.offsets[s + 1]].sort()
    arrays = (np.asarray(gene_ids, dtype=object)[order], np.asarray(stat, dtype=np.float64)[order],
              np.asarray(index.names, dtype=object), positions, np.asarray(index.offsets, dtype=np.int64))
    for array in arrays:
        array.flags.writeable = False
    return Ranking(*arrays, weight=float(weight), set_statistic=str(set_statistic), study=study)


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
    covariates: Sequence[str] | None = None,
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
    """Phenotype-permutation GSEA.

    Parameters
    ----------
    expr
        Expression data: a path (GCT, TSV/CSV/TXT, h5ad, HDF5, a GEO series matrix
        ``..._series_matrix.txt(.gz)`` whose characteristics become sample annotations),
        a DataFrame (genes x samples) or an AnnData (samples x genes).
    phenotype
        A CLS file (categorical, or ``#numeric`` for a correlation metric), a sample sheet
        (TSV/CSV with sample ids and the ``groupby``/``strata``/``pairs`` columns), a
        sequence of labels (one per sample), or None with ``groupby`` naming an ``obs``
        column of an h5ad/AnnData.
    gene_sets
        GMT/GMX path(s), or a mapping of set name to gene list.
    groupby, case, control
        Group column and the two classes compared (case is the "positive" class A; with
        exactly two classes the defaults follow the CLS order). ``control="rest"``
        compares ``case`` with all other labelled samples (one-vs-rest).
    phenotype_column
        Numeric phenotype column for ``metric="pearson"``/``"spearman"``.
    strata, pairs
        Column naming each sample's stratum (labels permuted within strata) or pair (one
        case and one control; labels swapped within pairs). See :mod:`permenrich.design`.
    covariates
        Columns (of the sample sheet or obs) to adjust for, e.g. ``["age", "sex"]``: the
        statistic becomes the t of the phenotype in ``expression ~ covariates +
        phenotype`` (``metric="student_t"`` for two groups, ``"pearson"`` for a continuous
        phenotype) and the null is Freedman–Lane's: residuals of ``expression ~
        covariates`` are permuted (within strata). See
        :mod:`permenrich.stats.covariates`.
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
        Probe id to gene symbol mapping: a GSEA CHIP file, a GEO platform table (GPL
        SOFT family or ``.annot``) or a two-column TSV; a probe annotated ``A /// B``
        counts for each gene.
    nan_policy
        ``"error"`` (default) stops on the first gene with a missing/non-finite value;
        ``"drop"`` removes such genes with a warning. Only the analysed samples count: a
        value missing in a sample that the design leaves out changes nothing.
    zero_variance
        Genes constant across the analysed samples: ``"drop"`` (default, with a
        warning) or ``"error"``.
    normalize
        ``"log1p_cpm"``: log(1 + counts per million) of count data, applied after
        pseudobulking (or per block when streaming); ``"log2"``: log2 of a matrix on a
        linear scale (e.g. an unlogged GEO series; positive values, in memory); default
        ``"none"``.
    pseudobulk, pseudobulk_method
        Sum (``"sum"``, for counts) or average (``"mean"``) the cells of each value of
        this obs column (and of ``groupby``/``strata``/``pairs``) before testing, reading
        the matrix in blocks. Permuting cells across donors treats cells as independent
        replicates (pseudoreplication): p-values come out far too small. Test donors (or
        samples) instead; cell-level permutation is acceptable only when cells are the
        experimental units (e.g. a perturbation screen where each cell is independently
        assigned). Cell-level runs of annotated cells whose obs has a donor- or
        sample-like column (``donor``, ``sample``, ``patient``, ``individual``,
        ``subject``, ``*_id``) with fewer levels than cells log a warning.
    min_cells
        With ``pseudobulk``: pseudo-samples (e.g. donor x group) of fewer cells than this
        are dropped before the test, with a design warning naming them (default 10;
        0 keeps all). An error when that leaves a compared class empty.
    layer, use_raw
        h5ad/AnnData only: analyse ``layers[layer]`` (e.g. ``"counts"``) or ``raw.X``
        (with ``raw.var_names``) instead of ``X``; not both. Streamed and in-memory
        reads choose the same matrix. ``normalize="log1p_cpm"`` on values that look
        log-transformed (non-integer, all below 50) logs a warning naming this option.
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
    client
        A ``dask.distributed.Client``: the permutations run as ranges on its workers, each
        of which reads the inputs once (see :mod:`permenrich.runner`); the results are
        byte-identical to a run here. None (default): run in this process.
    progress
        ``progress(done, total)`` called after each batch (each range with ``client``);
        ``True``: a tqdm progress bar (a widget in Jupyter).

    Returns
    -------
    pandas.DataFrame
        One row per set with the columns of :data:`RESULT_COLUMNS`, sorted by ``fdr``
        then decreasing ``|nes|``; ``attrs["run"]`` holds the run's provenance.
        ``n_null_same_sign`` is the number of null scores of the observed score's sign
        behind ``pval``: the smallest p it allows is 1/(n_null_same_sign + 1).
        Design warnings (log1p_cpm on non-counts, pseudoreplication, a smallest
        attainable p-value above 0.01) are logged on the ``permenrich`` logger and kept
        in ``attrs["run"]["design"]["warnings"]``.

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
    return run(prepare_gsea, options_of(locals()), client=client, progress=progress)


def prepare_gsea(options: dict) -> Prepared:
    """Read and check the inputs of :func:`gsea`, prepare the backend and the observed
    scores; the runner's :class:`~permenrich.runner.Prepared` (also run on Dask workers)."""
    o = SimpleNamespace(**options)
    started = time.perf_counter()
    study_run = prepare_study(o, started, ranking=True)
    budget, backend, study, plan = study_run.budget, study_run.backend, study_run.study, study_run.plan
    index = load_gene_sets(o.gene_sets, study.gene_ids, min_size=o.min_size, max_size=o.max_size)
    read_seconds = time.perf_counter() - started

    n_genes = study.n_genes
    backend.prepare_sets(o.set_statistic, index.members, index.offsets, float(o.weight), n_genes)
    observed_stat_xp = backend.gene_statistics(plan.observed())
    observed_stat = np.asarray(backend.to_host(observed_stat_xp))[0]
    check_observed_statistics(observed_stat, study.gene_ids, o.metric, study.source, o.set_statistic)
    observed = np.asarray(backend.to_host(backend.set_scores(observed_stat_xp)))[0]

    # A streamed batch holds its class sums and statistics for all genes at once (one read
    # of the file per batch); in memory they are made in slices of a few hundred rows.
    per_gene_bytes = 0 if study.in_memory else 24 * n_genes
    job, null_info = gsea_job(lambda a, b: backend.score(backend.labellings(plan, a, b))[0], observed,
                              n_perm=plan.n_perm, exact=plan.exact, xp=backend.xp, n_sets=index.n_sets,
                              batch_size=o.batch_size, budget=budget, extra_bytes=8 * plan.width + per_gene_bytes,
                              scale=score_scale(o.set_statistic, observed_stat), streamed=not study.in_memory,
                              resident_bytes=study_run.resident_bytes, set_names=index.names)

    def finish(accumulator: Any, timings: dict) -> pd.DataFrame:
        table = gsea_table(index, accumulator.finish(), observed,
                           leading_edges(index, study.gene_ids, observed_stat, float(o.weight), o.set_statistic))
        timings["read_seconds"] = read_seconds
        if not study.in_memory:
            study.info["streaming"] = study.values.describe()
            study.values.release()  # the file is free for others; a figure that reads it again reopens it
        read_parameters, read_data = reading_record(o)
        table.attrs["run"] = provenance(
            "gsea",
            {"metric": o.metric, "set_statistic": o.set_statistic, "weight": float(o.weight),
             "permutations": int(o.permutations), "seed": int(o.seed), "min_size": o.min_size,
             "max_size": o.max_size, **read_parameters, "case": study.info.get("case"),
             "control": study.info.get("control"),
             "phenotype": study.info.get("phenotype"), "strata": o.strata, "pairs": o.pairs,
             "memory_bytes": budget, "batch_size": null_info["batch_size"], "device": o.device},
            started,
            design={k: v for k, v in study.info.items() if k not in ("case", "control", "strata", "pairs")},
            permutation_plan=plan.describe(),
            permutation_type="phenotype (sample labels)",
            null_storage=null_info["null_storage"],
            memory_plan=null_info["memory_plan"],
            tie_tolerance=null_info["tie_tolerance"],
            data={"n_genes": n_genes, **index.census(), **read_data, "gene_sets": digests(o.gene_sets)},
            backend=backend.describe(),
            timings=timings,
        )
        table.attrs["ranking"] = _ranking(index, study.gene_ids, observed_stat, float(o.weight), o.set_statistic,
                                          study=StudyReference(study, plan, o.metric, index.members, backend.name))
        return table

    return Prepared(job, finish)


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
    p_method: Literal["permutation", "multilevel"] = "permutation",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    eps: float = DEFAULT_EPS,
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu", "gpu", "auto"] = "auto",
    client: Any = None,
    progress: ProgressCallback | bool | None = None,
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
    p_method
        ``"permutation"`` (default): nominal p from the permutations, never below
        1/(permutations + 1). ``"multilevel"``: adaptive multilevel splitting
        (:mod:`permenrich.enrich.multilevel`, fgseaMultilevel's method), p-values far
        below that with a stated error (column ``log2err``); running-sum statistic only.
        NES, FDR and FWER still come from the permutations.
    sample_size
        Multilevel: random sets per level (default 101, as fgsea); an even number is
        raised by one (the ruler's median needs an odd sample), and run.json records
        the number used.
    eps
        Multilevel: the smallest p-value estimated (default 1e-50; smaller ones are
        reported as ``eps``); 0 for no bound.
    batch_size, memory, threads, device, client, progress
        As in :func:`gsea`.

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`RESULT_COLUMNS`, as in :func:`gsea`.

    Notes
    -----
    Genes are ranked by decreasing score (ties: file order). The null of a set of k genes
    is the statistic of random sets of k genes drawn from the ranked list, as GSEA
    preranked does, computed cumulatively as fgsea does: each permutation draws one
    random sequence of distinct genes as long as the largest set, and the random set of
    size n is its first n genes (a uniform random n-subset), so every size is scored from
    one draw (permutation k is a pure function of (seed, k)). This null ignores gene-gene
    correlation: prefer :func:`gsea` when the samples are at hand. Because one draw
    scores every size, the sets' null scores are nested, where GSEA draws each set's
    random sets on their own; ``fwer`` is therefore computed as for independent draws,
    from each set's own null (see :mod:`permenrich.nulls`), not from each permutation's
    largest score, which would be anti-conservative.
    """
    return run(prepare_prerank, options_of(locals()), client=client, progress=progress)


def prepare_prerank(options: dict) -> Prepared:
    """Read and check the inputs of :func:`prerank` and score the observed sets; the
    runner's :class:`~permenrich.runner.Prepared` (also run on Dask workers)."""
    o = SimpleNamespace(**options)
    started = time.perf_counter()
    if o.p_method == "multilevel" and o.set_statistic != "ks":
        raise OptionError(f"{option('p_method', 'multilevel')} applies to the running-sum statistic; "
                          f"use {option('set_statistic', 'ks')} or {option('p_method', 'permutation')}")
    budget, backend = common_setup(o.memory, o.device, o.threads)
    ranked = read_rnk(o.rnk, duplicates=o.duplicates)
    order = rank_genes(ranked.scores)
    gene_ids = np.asarray(ranked.gene_ids, dtype=object)[order]
    ranked_stat = np.asarray(ranked.scores, dtype=np.float64)[order]
    index = load_gene_sets(o.gene_sets, gene_ids, min_size=o.min_size, max_size=o.max_size)
    n_genes = gene_ids.size
    read_seconds = time.perf_counter() - started

    # Observed: the null's own function (closed form from sorted ranked positions) on the
    # sets' positions, so that a random set equal to a real one gets the same bits.
    # Hit weights |s| ** p inside float64 (p-values as small as 1e-160 with p = 2 gave
    # ES = inf): the running sum is computed on the scores scaled by 2**shift, which
    # changes no ES and no bit of ordinary lists (shift 0). Figures scale the same way.
    es_stat, shift = scaled_for_weights(ranked_stat, float(o.weight)) if o.set_statistic == "ks" else (ranked_stat, 0)
    observed = sorted_positions_scores(index.members, index.offsets, es_stat, float(o.weight), o.set_statistic)
    sizes, size_slot = np.unique(index.sizes, return_inverse=True)
    n_perm = int(o.permutations)
    floor = p_floor_warning(ranked.source, n_perm, sign_specific=True) if o.p_method == "permutation" else None
    if floor is not None:  # as gsea and genes say
        logger.warning("%s", floor)

    size_slot_on_device = backend.xp.asarray(size_slot)  # on the device once, not per batch

    def score_batch(start: int, stop: int) -> Any:
        null_by_size = backend.random_set_null(int(o.seed), start, stop, es_stat, float(o.weight),
                                               o.set_statistic, sizes)
        return null_by_size[:, size_slot_on_device]

    # Sets of one size share one draw per permutation, where GSEA draws each set's random
    # sets on their own: FWER is that of independent draws, from each size's null.
    job, null_info = gsea_job(score_batch, observed, n_perm=n_perm, exact=False, xp=backend.xp,
                              n_sets=index.n_sets, batch_size=o.batch_size, budget=budget, extra_bytes=0,
                              scale=score_scale(o.set_statistic, ranked_stat), fwer_groups=size_slot,
                              set_names=index.names)

    def finish(accumulator: Any, timings: dict) -> pd.DataFrame:
        stats = accumulator.finish()
        if o.p_method == "multilevel":
            started_multilevel = time.perf_counter()
            workers = o.threads or numba.get_num_threads()  # --threads, else Numba's (all cores)
            stats["pval"], stats["log2err"] = _multilevel(index, stats, es_stat, n_perm, o, workers)
            timings["multilevel_seconds"] = time.perf_counter() - started_multilevel
        table = gsea_table(index, stats, observed,
                           leading_edges(index, gene_ids, es_stat, float(o.weight), o.set_statistic))
        timings["read_seconds"] = read_seconds
        table.attrs["run"] = provenance(
            "prerank",
            {"set_statistic": o.set_statistic, "weight": float(o.weight), "permutations": n_perm,
             "seed": int(o.seed), "min_size": o.min_size, "max_size": o.max_size, "duplicates": o.duplicates,
             "p_method": o.p_method, "sample_size": int(o.sample_size) | 1, "eps": float(o.eps),
             "memory_bytes": budget, "batch_size": null_info["batch_size"], "device": o.device},
            started,
            permutation_plan={"seed": int(o.seed), "permutations": n_perm, "exact_enumeration": False,
                              "generator": "Philox4x32-10, counter=(k_lo, k_hi, block, 0x47530000), key=seed; "
                                           "one random sequence of distinct ranked positions per permutation "
                                           "(partial Fisher-Yates), the set of size n takes its first n"},
            permutation_type="gene set (gene labels)",
            null_storage=null_info["null_storage"],
            memory_plan=null_info["memory_plan"],
            tie_tolerance=null_info["tie_tolerance"],
            data={"n_genes": n_genes, **index.census(),
                  **({"running_sum_scale": f"2**{shift}: scores scaled so that every |s| ** p fits float64"}
                     if shift else {}),
                  "ranked_list": file_digest(o.rnk) or {"object": type(o.rnk).__name__},
                  "gene_sets": digests(o.gene_sets)},
            backend=backend.describe(),
            timings=timings,
        )
        table.attrs["ranking"] = _ranking(index, gene_ids, ranked_stat, float(o.weight), o.set_statistic,
                                          ranked=True)
        return table

    return Prepared(job, finish)


#: The smallest positive float64: a multilevel p below it is reported as it, not as 0.
SMALLEST_P = float(np.nextafter(0.0, 1.0))


def _multilevel(index: Any, stats: dict, ranked_stat: np.ndarray, n_perm: int, o: Any, workers: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Nominal p-values and their log2 errors with multilevel estimates for the sets where
    they are the more precise (fgseaMultilevel's rule): the multilevel probability of the
    score with its sign (one ruler per set size and sign) divided by the permutations'
    estimate of P(sign), (m + 1)/(permutations + 1); elsewhere the permutation p and its
    error. p-values below ``eps`` are reported as ``eps`` with no error.

    Which sets get a ruler is decided once, at the permutation p: those whose permutation
    error exceeds the error a multilevel estimate would have at that p. Their ruler's p
    is then taken whatever it is. (Comparing the errors again at the ruler's p threw the
    smallest p-values away: the multilevel error grows like sqrt(-log2 p) and passes the
    permutation error of p at its floor near p = 1e-50, so the most enriched sets fell
    back to 1/(m + 1) while weaker ones kept 1e-34.) A probability below the smallest
    float64 is reported as ``eps``, or as that smallest float where ``eps`` is 0, never
    as 0. The rulers of different sizes run on ``workers`` threads (each is a pure
    function of (seed, size, sign), so the result does not depend on their number)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..enrich.multilevel import multilevel_error, multilevel_pvalues, permutation_error

    es, pval, n_same = stats["es"], stats["pval"].copy(), stats["n_null_same_sign"]
    sample_size = int(o.sample_size) | 1
    errors = np.array([permutation_error(int(round(p * (m + 1))) - 1, int(m)) for p, m in zip(pval, n_same)])
    may_gain = errors > np.array([multilevel_error(p, sample_size) for p in pval])

    def estimate(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        which = np.flatnonzero((index.sizes == size) & may_gain)
        joint, reliable = multilevel_pvalues(ranked_stat, float(o.weight), int(size), es[which],
                                             sample_size=sample_size, seed=int(o.seed), eps=float(o.eps))
        return which, joint, reliable

    sizes = np.unique(index.sizes[may_gain])[::-1]  # the largest (slowest) rulers first
    with ThreadPoolExecutor(max(1, min(int(workers), sizes.size))) as pool:
        for which, joint, reliable in pool.map(estimate, sizes):
            for i, probability, good in zip(which, joint, reliable):
                p = min(1.0, probability / ((n_same[i] + 1) / (n_perm + 1)))
                if p > 0:
                    pval[i], errors[i] = p, (multilevel_error(p, sample_size) if good else np.nan)
                else:  # below float64's range: below eps too, or at the range's end
                    pval[i], errors[i] = max(float(o.eps), SMALLEST_P), np.nan
    below = pval < o.eps
    pval[below], errors[below] = o.eps, np.nan
    return pval, errors
