"""Several studies at once: per-gene meta-analysis with within-study permutations
(:func:`meta`)."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._pipeline import choose_batch_size, digests, file_digest, load_gene_sets, parse_memory
from ..errors import InputError, OptionError, gene_set_inputs, option, table_column_names
from ..io.manifest import read_manifest_rows, relative_to
from ..nulls import ExceedanceAccumulator, GseaNullAccumulator, StackedAccumulator, bh_adjust
from ..runner import Job, Prepared, ProgressCallback, run
from ..stats.meta import combine_studies, gather, join_genes, study_seed
from ..enrich.linear import SetStatisticName
from ..stats.metrics import Alternative, MetricName
from ._shared import (
    check_observed_scores,
    check_observed_statistics,
    gsea_job,
    gsea_table,
    leading_edges,
    options_of,
    prepare_study,
    provenance,
    score_scale,
)

logger = logging.getLogger(__name__)

#: What one study may set: the single-study input options of :func:`permenrich.genes`.
STUDY_KEYS = ("name", "expr", "phenotype", "groupby", "case", "control", "phenotype_column", "strata", "pairs",
              "covariates", "collapse", "chip", "nan_policy", "zero_variance", "normalize", "pseudobulk",
              "pseudobulk_method", "min_cells", "layer", "use_raw")
#: Fewest samples per class a study needs: Hedges' g's variance needs n > 3.94 overall
#: and a permutation null needs labellings to draw from.
MIN_PER_CLASS = 2


#: A study losing this fraction of its genes to the inner join is warned about.
INNER_JOIN_LOSS_WARNED = 0.1

#: Manifest columns (one row per study): every study option, ``study`` for its name; the
#: file-path ones are relative to the manifest.
MANIFEST_COLUMNS = ("study", *(key for key in STUDY_KEYS if key != "name"))
_BOOLEAN_CELLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_PATH_COLUMNS = ("expr", "phenotype", "chip")
#: Manifest columns whose study option has another name.
MANIFEST_OPTION = {"study": "name"}


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Studies from a manifest: see :func:`manifest_studies`."""
    return manifest_studies(path)[0]


def manifest_studies(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[int]]:
    """Studies from a manifest, and the line of each: a TSV (CSV for ``.csv``) with one
    row per study and the columns :data:`MANIFEST_COLUMNS` (``study`` and ``expr`` required, the others
    optional; an empty cell leaves the default). ``phenotype`` is a CLS file or a sample
    sheet, ``covariates`` a comma-separated list of its columns; relative paths are
    relative to the manifest's folder."""
    studies = []
    line_of: dict[str, int] = {}
    lines: list[int] = []
    for cells in read_manifest_rows(path, columns=MANIFEST_COLUMNS, required=("study", "expr"),
                                    what="manifest", entry="study"):
        study: dict[str, Any] = {}
        for column, text in cells.items():
            if not text:
                continue
            if column in _PATH_COLUMNS:
                study[column] = relative_to(path, text)
            elif column == "covariates":
                study[column] = [c.strip() for c in text.split(",") if c.strip()]
            elif column == "min_cells":
                if not text.strip().isdigit():
                    raise InputError(f"{path}: line {cells.line}: column 'min_cells' must be a whole number of "
                                     f"cells, got {text!r}")
                study[column] = int(text)
            elif column == "use_raw":
                if text.strip().lower() not in _BOOLEAN_CELLS:
                    raise InputError(f"{path}: line {cells.line}: column 'use_raw' must be true or false, got "
                                     f"{text!r}")
                study[column] = _BOOLEAN_CELLS[text.strip().lower()]
            else:
                study["name" if column == "study" else column] = text
        if study["name"] in line_of:
            raise InputError(f"{path}: line {cells.line}: study {study['name']!r} is listed twice (also line "
                             f"{line_of[study['name']]}); give every study its own name")
        line_of[study["name"]] = cells.line
        lines.append(cells.line)
        studies.append(study)
    return studies, lines


def meta(
    studies: Sequence[Mapping[str, Any]] | str | os.PathLike,
    gene_sets: Any = None,
    *,
    mode: Literal["genes", "gsea", "ora"] = "genes",
    set_statistic: SetStatisticName = "ks",
    weight: float = 1.0,
    min_size: int = 15,
    max_size: int = 500,
    top: int | None = None,
    direction: Literal["up", "down", "both"] = "both",
    leave_one_out: bool = False,
    method: Literal["stouffer", "fixed", "random"] = "stouffer",
    join: Literal["inner", "outer"] = "inner",
    metric: MetricName | None = None,
    alternative: Alternative = "two-sided",
    nan_policy: Literal["error", "drop"] = "error",
    zero_variance: Literal["error", "drop"] = "drop",
    permutations: int = 10000,
    seed: int = 0,
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu", "gpu", "auto"] = "auto",
    client: Any = None,
    progress: ProgressCallback | bool | None = None,
) -> pd.DataFrame:
    """Per-gene meta-analysis of several two-group studies, with a permutation null that
    relabels every study at once (so the genes' correlation within each study is kept).

    Parameters
    ----------
    studies
        A manifest file (:func:`read_manifest`), or one mapping per study, with the
        input options of :func:`permenrich.genes`
        (``expr``, ``phenotype`` or ``groupby``, ``case``, ``control``, ``strata``,
        ``covariates``, ``chip``, ``collapse``, ``normalize``, ...) and an optional
        ``name`` (default ``study1``, ``study2``, ...). Studies may measure different
        genes (e.g. platforms collapsed to symbols with ``chip``).
    gene_sets
        For ``mode="gsea"``: GMT/GMX file(s) or a mapping of set name to genes.
    mode
        ``genes``: per-gene permutation p-values and maxT of the combined statistic.
        ``gsea``: GSEA on the ranking by the combined statistic, its null from the same
        combined permutations. ``ora``: over-representation of the ``top`` genes of the
        combined statistic, the selection re-derived under every permutation.
    set_statistic, weight, min_size, max_size
        As in :func:`permenrich.gsea` (``mode="gsea"``; min/max size also for ``ora``).
    top, direction
        ``mode="ora"``: the ``top`` most extreme genes of the combined statistic in
        ``direction`` (up, down or both) are the altered genes.
    leave_one_out
        Also the meta-analysis without each study, from the same permutations: columns
        ``statistic_without_<study>``/``pval_without_<study>`` (genes) or
        ``nes_without_<study>``/``pval_without_<study>``/``fdr_without_<study>``
        (gsea), to see which study a result rests on.
    method
        ``stouffer`` (weighted sum of the per-study statistics, weights sqrt(n)),
        ``fixed`` (inverse-variance fixed effect on Hedges' g) or ``random``
        (DerSimonian–Laird random effects on Hedges' g); see :mod:`permenrich.stats.meta`.
    join
        ``inner``: genes every study measures; ``outer``: every gene, combined over the
        studies that measure it (column ``n_studies``).
    metric
        Per-study statistic: any two-group metric for ``stouffer`` (default
        ``welch_t``); ``hedges_g`` (the default and only choice) for ``fixed``/``random``.
        Each study's statistic is combined (and reported as ``statistic_<study>``) less
        its no-effect value: ``ratio_of_classes`` - 1, and Mann-Whitney's U as
        (U - n_A n_B / 2) / sqrt(n_A n_B (n + 1) / 12), its null sd, since U's scale
        grows with the class sizes.
    nan_policy, zero_variance
        As in :func:`permenrich.genes`, for every study that does not set its own (a
        study's ``nan_policy``/``zero_variance``, or its manifest cell).
    alternative, permutations, seed, batch_size, memory, threads, device, client, progress
        As in :func:`permenrich.genes`. Study 1 is permuted with ``seed``, study s with
        a seed mixed from (seed, s): permutation k is a pure function of (seed, k).

    Returns
    -------
    pandas.DataFrame
        One row per joined gene: ``gene``, ``statistic`` (combined), ``n_studies``,
        ``effect``/``tau2``/``q``/``i2`` for the effect-size methods, one
        ``statistic_<study>`` column per study, ``pval``, ``qval_bh``, ``pval_maxt``;
        sorted as :func:`permenrich.genes`. With ``mode="gsea"``: the table of
        :func:`permenrich.gsea` for the combined ranking plus one ``es_<study>`` column
        per study (that study's own enrichment score on the joined genes; a gene it
        lacks counts as 0). ``attrs["run"]`` holds the provenance.
    """
    if metric is None:
        metric = "hedges_g" if method in ("fixed", "random") else "welch_t"
    return run(prepare_meta, options_of(locals()), client=client, progress=progress)


def _study_options(options: dict, study: Mapping[str, Any], index: int, name: str) -> dict:
    """The single-study options of study ``index``: genes() defaults, the run's shared
    options, then the study's own inputs."""
    from .genes import genes

    unknown = sorted(set(study) - set(STUDY_KEYS))
    if unknown:
        raise OptionError(f"study {name!r}: unknown key {unknown[0]!r}; a study takes {', '.join(STUDY_KEYS)}")
    if study.get("expr") is None:
        raise OptionError(f"study {name!r}: 'expr' is required (the study's expression data)")
    defaults = {name: p.default for name, p in inspect.signature(genes).parameters.items()
                if p.default is not inspect.Parameter.empty and name not in ("client", "progress")}
    shared = {k: options[k] for k in ("alternative", "permutations", "batch_size", "memory", "threads", "device",
                                      "nan_policy", "zero_variance")}
    merged = {**defaults, **shared, **{k: v for k, v in study.items() if k != "name"}}
    merged.update(metric=options["metric"], seed=study_seed(options["seed"], index), random_only=True)
    return merged


def _class_sizes(study: Any, name: str) -> tuple[int, int]:
    """A study's (n_case, n_control): of its labels, or, with covariates (the phenotype
    then a 0/1 column of the linear model, whose residuals are permuted), of that column."""
    design = study.design
    if hasattr(design, "n_case"):
        return int(design.n_case), int(design.n_control)
    if study.covariates is not None and "case" in study.info:
        values = np.asarray(design.values)
        return int((values == 1).sum()), int((values == 0).sum())
    raise InputError(f"study {name!r}: the meta-analysis compares two groups, and this study's phenotype is "
                     "continuous; give its groupby, case and control")


def _warn_of_shared_data(names: Sequence[str], records: Sequence[dict]) -> None:
    """Two studies reading the same expression file (the same SHA-256) are one study's
    samples counted twice (or overlapping): the combination assumes independent studies."""
    first_of: dict[str, str] = {}
    for name, record in zip(names, records):
        digest = record["expression"].get("sha256")
        if digest is None:
            continue
        if digest in first_of:
            logger.warning("studies %r and %r read the same expression data (%s): the meta-analysis takes studies "
                           "to be independent, and shared samples count twice; leave one out unless they compare "
                           "disjoint samples", first_of[digest], name, record["expression"]["path"])
        else:
            first_of[digest] = name


def prepare_meta(options: dict) -> Prepared:
    """Read and check every study, prepare each one's backend and the combined observed
    statistics; the runner's :class:`~permenrich.runner.Prepared`."""
    o = SimpleNamespace(**options)
    started = time.perf_counter()
    if o.mode in ("gsea", "ora") and o.gene_sets is None:
        raise OptionError(f"mode {o.mode!r} needs gene sets: give {option('gene_sets')} ({gene_set_inputs()})")
    if o.mode == "ora" and o.top is None:
        raise OptionError(f"mode 'ora' tests the top genes of the combined statistic: give the number of genes, e.g. "
                          f"{option('top', 100)}")
    if o.mode == "ora" and o.leave_one_out:
        raise OptionError(f"{option('leave_one_out', True)} is available for modes genes and gsea, not ora")
    if o.method in ("fixed", "random") and o.metric != "hedges_g":
        raise OptionError(f"{option('method', o.method)} combines Hedges' g; use {option('metric', 'hedges_g')} "
                          f"(got {o.metric!r})")
    manifest, lines = None, []
    if isinstance(o.studies, (str, os.PathLike)):
        manifest = o.studies
        o.studies, lines = manifest_studies(manifest)
    if not isinstance(o.studies, Sequence) or not o.studies:
        raise OptionError("studies must be a non-empty list of mappings, one per study")
    for i, study in enumerate(o.studies):
        if not isinstance(study, Mapping):
            raise OptionError(f"study {i + 1} must be a mapping of input options (expr=..., phenotype=..., "
                              f"case=..., control=...), got {type(study).__name__}")
    names = [str(s.get("name") or f"study{i + 1}") for i, s in enumerate(o.studies)]
    if len(set(names)) != len(names):
        raise OptionError(f"study names must be unique, got {names}")

    runs, class_sizes = [], []
    for i, study in enumerate(o.studies):
        if study.get("covariates") and o.metric != "student_t":
            raise OptionError(f"study {names[i]!r}: covariates make its statistic the t of the phenotype in a linear "
                              f"model (Freedman-Lane); use {option('metric', 'student_t')} with "
                              f"{option('method', 'stouffer')}, not {o.metric!r}")
        study_options = SimpleNamespace(**_study_options(options, study, i, names[i]))
        # All studies are held at once: each one's matrix is kept in memory (or streamed)
        # within its share of the budget.
        study_options.memory = max(10**6, parse_memory(o.memory) // len(o.studies))
        place = f"{manifest}: line {lines[i]}: " if manifest is not None else ""
        # A manifest's study sets its options in its row: messages name those columns.
        columns = [MANIFEST_OPTION.get(c, c) for c in MANIFEST_COLUMNS] if manifest is not None else []
        try:
            with table_column_names(columns):
                study_run = prepare_study(study_options, started)
        except (InputError, OptionError) as error:  # say which study, keep the one-line message
            text = str(error)
            if option("memory") in text and len(o.studies) > 1:
                text += f" (each of the {len(o.studies)} studies has 1/{len(o.studies)} of {option('memory')})"
            raise type(error)(f"{place}study {names[i]!r}: {text}") from None
        n_case, n_control = _class_sizes(study_run.study, names[i])
        if min(n_case, n_control) < MIN_PER_CLASS:
            raise InputError(f"{place}study {names[i]!r} has {n_case} case and {n_control} control samples; "
                             f"each class needs at least {MIN_PER_CLASS}: drop the study or add samples")
        runs.append(study_run)
        class_sizes.append((n_case, n_control))
    genes, positions = join_genes([r.study.gene_ids for r in runs], o.join)
    if genes.size == 0:
        raise InputError("the studies share no gene: check that their gene ids are of one kind "
                         "(map probes to symbols with each study's chip)")
    for name, found, r in zip(names, positions, runs):
        if not (found >= 0).any():
            raise InputError(f"study {name!r} shares no gene with the others: check its gene ids or its chip")
        lost = len(r.study.gene_ids) - int((found >= 0).sum())
        if o.join == "inner" and lost >= INNER_JOIN_LOSS_WARNED * len(r.study.gene_ids):
            logger.warning("study %r: %s of its %s genes (%.0f%%) are not measured by every study and are left out; "
                           "%s keeps them (combined over the studies that measure them)", name, f"{lost:,}",
                           f"{len(r.study.gene_ids):,}", 100 * lost / len(r.study.gene_ids),
                           option("join", "outer"))
    sizes = np.array(class_sizes, dtype=np.float64)
    weights = np.sqrt(sizes.sum(axis=1))
    # Each study's statistic enters the combination centred at its no-effect value (so
    # that two-sided tests, ORA's directions and a GSEA ranking of the combination see
    # 0 as no effect), and Mann-Whitney's U over its null sd, as U's scale grows with
    # each study's class sizes.
    centres = np.array([r.centre for r in runs])
    scales = np.array([math.sqrt(a * b * (a + b + 1) / 12) if o.metric == "mann_whitney" else 1.0
                       for a, b in sizes])

    def as_combined(s: int, statistic: Any) -> np.ndarray:
        """Study ``s``'s statistics as they are combined."""
        statistic = np.asarray(statistic)
        return statistic if centres[s] == 0 and scales[s] == 1 else (statistic - centres[s]) / scales[s]

    if o.leave_one_out and len(runs) < 2:
        raise OptionError("leave_one_out needs at least two studies")
    # The meta-analysis of every study, then (leave_one_out) of all studies but each one:
    # all scored from the same permutations, each study's statistics computed once.
    subsets = [list(range(len(runs)))]
    if o.leave_one_out:
        subsets += [[t for t in range(len(runs)) if t != s] for s in range(len(runs))]

    def combined(per_study: list[np.ndarray], subset: list[int] | None = None) -> Any:
        subset = subsets[0] if subset is None else subset
        return combine_studies([per_study[t] for t in subset], positions[subset], o.method,
                               weights=weights[subset], class_sizes=sizes[subset])

    def subset_statistics(per_study: list[np.ndarray]) -> np.ndarray:
        """Shape (n_subsets, n_batch, n_genes); without a study, a gene that only it
        measures (outer join) counts as 0."""
        parts = [combined(per_study, subset).statistic if i == 0
                 else np.nan_to_num(combined(per_study, subset).statistic, nan=0.0)
                 for i, subset in enumerate(subsets)]
        return parts[0][None] if len(parts) == 1 else np.stack(parts)  # no copy without leave-one-out

    def combined_statistics(start: int, stop: int) -> np.ndarray:
        """The combined statistics of permutations [start, stop) for every subset: each
        study's labellings k, on its own backend, combined on the host."""
        per_study = [as_combined(s, r.backend.to_host(r.backend.gene_statistics(r.backend.labellings(r.plan, start,
                                                                                                   stop))))
                     for s, r in enumerate(runs)]
        return subset_statistics(per_study)

    observed_each = []
    for s, r in enumerate(runs):
        stat = np.asarray(r.backend.to_host(r.backend.gene_statistics(r.plan.observed())))[0]
        check_observed_statistics(stat, r.study.gene_ids, o.metric, r.study.source)
        observed_each.append(as_combined(s, stat))
    observed = combined([stat[None, :] for stat in observed_each]).row(0)
    observed_subsets = subset_statistics([stat[None, :] for stat in observed_each])[:, 0]
    check_observed_statistics(observed.statistic, genes, o.metric, "the combined statistic",
                              o.set_statistic if o.mode == "gsea" else None)
    n_perm = int(o.permutations)
    budget, backend = parse_memory(o.memory), runs[0].backend
    studies_record = [{"name": name, "seed": r.plan.seed, "memory_bytes": r.budget, "n_case": n_case,
                       "n_control": n_control, "n_genes": int(r.study.n_genes),
                       "n_genes_joined": int((found >= 0).sum()), "case": r.study.info.get("case"),
                       "control": r.study.info.get("control"), "permutation_plan": r.plan.describe(),
                       "design": {k: v for k, v in r.study.info.items() if k not in ("case", "control")},
                       "expression": file_digest(s.get("expr")) or {"object": type(s.get("expr")).__name__},
                       "phenotype": file_digest(s.get("phenotype")),
                       "chip": file_digest(s["chip"]) if s.get("chip") is not None else None,
                       "collapse": s.get("collapse", "mean"), "normalize": s.get("normalize", "none")}
                      for name, r, found, s, (n_case, n_control) in zip(names, runs, positions, o.studies,
                                                                         class_sizes)]
    _warn_of_shared_data(names, studies_record)
    parameters = {"mode": o.mode, "method": o.method, "join": o.join, "metric": o.metric,
                  "alternative": o.alternative, "permutations": n_perm, "seed": int(o.seed), "memory_bytes": budget,
                  "device": o.device, "stouffer_weights": "sqrt(n)" if o.method == "stouffer" else None,
                  "leave_one_out": bool(o.leave_one_out), "nan_policy": o.nan_policy, "zero_variance": o.zero_variance}
    data = {"n_genes": int(genes.size), "manifest": file_digest(options["studies"])}

    def record(table: pd.DataFrame, timings: dict, **sections: Any) -> None:
        for r in runs:  # the run is done: streamed files are free for others
            if not r.study.in_memory:
                r.study.values.release()
        table.attrs["run"] = provenance(
            "meta", parameters, started, studies=studies_record,
            permutation_type="phenotype (sample labels), every study relabelled independently",
            data=data, backend=backend.describe(), timings=timings, **sections)

    per_study_observed = gather(observed_each, positions)
    if o.mode == "ora":
        return _ora_of_combined(o, genes, observed.statistic, combined_statistics, n_perm, budget, parameters,
                                data, record)
    if o.mode == "gsea":
        return _gsea_of_combined(o, backend, genes, names, observed_subsets, per_study_observed,
                                 combined_statistics, n_perm, budget, parameters, data, record,
                                 resident_bytes=sum(r.resident_bytes for r in runs))

    chosen = choose_batch_size(o.batch_size, budget, 8 * genes.size * (len(runs) + 4), n_perm)
    parameters["batch_size"] = chosen
    job = Job(n_perm=n_perm, batch_size=chosen, cache=False, score=combined_statistics,
              new_accumulator=lambda: StackedAccumulator([
                  ExceedanceAccumulator(statistic, alternative=o.alternative, centre=0.0, n_perm=n_perm, exact=False,
                                        xp=np, threads=o.threads) for statistic in observed_subsets]))

    def finish(accumulator: Any, timings: dict) -> pd.DataFrame:
        result, *without = accumulator.finish()
        columns: dict[str, Any] = {"gene": genes.astype(str), "statistic": observed.statistic,
                                   "n_studies": observed.n_studies}
        for field in ("effect", "tau2", "q", "i2"):
            if getattr(observed, field) is not None:
                columns[field] = getattr(observed, field)
        for name, values in zip(names, per_study_observed):
            columns[f"statistic_{name}"] = values
        columns.update(pval=result["pval"], qval_bh=bh_adjust(result["pval"]), pval_maxt=result["p_maxt"])
        for s, (name, statistic, part) in enumerate(zip(names, observed_subsets[1:], without)):
            # a gene only study s measures has no statistic without it (scored as 0 above)
            unmeasured = ~(np.delete(positions, s, axis=0) >= 0).any(axis=0)
            columns[f"statistic_without_{name}"] = np.where(unmeasured, np.nan, statistic)
            columns[f"pval_without_{name}"] = np.where(unmeasured, np.nan, part["pval"])
        table = pd.DataFrame(columns)
        order = np.lexsort((table.gene.to_numpy(), -np.abs(table.statistic.to_numpy()), table.pval.to_numpy()))
        table = table.iloc[order].reset_index(drop=True)
        record(table, timings)
        return table

    return Prepared(job, finish)


def _ora_of_combined(o: Any, genes: np.ndarray, statistic: np.ndarray, combined_statistics: Any, n_perm: int,
                     budget: int, parameters: dict, data: dict, record: Any) -> Prepared:
    """ORA of the ``top`` genes of the combined statistic, the selection re-derived from
    every permutation's combined statistic (as :func:`permenrich.ora` in expression mode)."""
    from .ora import _select_genes, overlap_test

    if int(o.top) >= genes.size:
        raise OptionError(f"{option('top', o.top)} selects every one of the {genes.size} joined genes; choose fewer")

    def select(stats: np.ndarray) -> np.ndarray:
        return _select_genes(stats, top=int(o.top), fdr=None, direction=o.direction, centre=0.0,
                             pvalue_of_statistic=None)

    index = load_gene_sets(o.gene_sets, genes, min_size=o.min_size, max_size=o.max_size, allow_full=True)
    selected = select(statistic[None, :])[0]
    test = overlap_test(index, genes, selected, selections=lambda a, b: select(combined_statistics(a, b)[0]),
                        n_perm=n_perm, exact=False, batch_size=o.batch_size, budget=budget, threads=o.threads)
    parameters.update(top=int(o.top), direction=o.direction, min_size=o.min_size, max_size=o.max_size,
                      batch_size=test.job.batch_size)
    data.update(index.census(), gene_sets=digests(o.gene_sets), n_selected=int(selected.sum()))

    def finish(accumulator: Any, timings: dict) -> pd.DataFrame:
        table = test.table(accumulator)
        record(table, timings, null_list_size=accumulator.list_sizes())
        return table

    return Prepared(test.job, finish)


def _gsea_of_combined(o: Any, backend: Any, genes: np.ndarray, names: list[str], statistics: np.ndarray,
                      per_study: np.ndarray, combined_statistics: Any, n_perm: int, budget: int, parameters: dict,
                      data: dict, record: Any, resident_bytes: int = 0) -> Prepared:
    """GSEA on the combined ranking: the set statistic of the combined per-gene statistic,
    its null from the same permutations (the combination of every study's permutation k).
    ``statistics``: the observed combined statistic of each subset (all studies first,
    then without each one), shape (n_subsets, n_genes)."""
    from .gsea import _ranking

    index = load_gene_sets(o.gene_sets, genes, min_size=o.min_size, max_size=o.max_size)
    backend.prepare_sets(o.set_statistic, index.members, index.offsets, float(o.weight), int(genes.size))

    def set_scores(stats: np.ndarray) -> np.ndarray:
        return np.asarray(backend.to_host(backend.set_scores(backend.xp.asarray(stats))))

    statistic = statistics[0]
    observed = set_scores(statistics)  # (n_subsets, n_sets)
    # Each study's own enrichment on the joined genes (a gene it lacks counts as 0), so
    # that a reader sees which studies drive a set.
    study_scores = set_scores(np.nan_to_num(per_study, nan=0.0))
    def score(start: int, stop: int) -> np.ndarray:
        parts = [set_scores(stats) for stats in combined_statistics(start, stop)]
        return parts[0][None] if len(parts) == 1 else np.stack(parts)

    n_parts = observed.shape[0]
    for part in observed:  # every part (leave-one-out included) is reported
        check_observed_scores(part, index.names)
    job, null_info = gsea_job(score, observed[0], n_perm=n_perm, exact=False, xp=np, n_sets=index.n_sets * n_parts,
                              batch_size=o.batch_size, budget=budget,
                              extra_bytes=8 * genes.size * (len(names) + 4 * n_parts),
                              scale=max(score_scale(o.set_statistic, s) for s in statistics),
                              resident_bytes=resident_bytes)
    tolerance = null_info["tie_tolerance"]
    job = dataclasses.replace(job, new_accumulator=lambda: StackedAccumulator(
        [GseaNullAccumulator(part, n_perm, False, xp=np, tie_tolerance=tolerance) for part in observed]))
    parameters.update(set_statistic=o.set_statistic, weight=float(o.weight), min_size=o.min_size,
                      max_size=o.max_size, batch_size=null_info["batch_size"])
    data.update(index.census(), gene_sets=digests(o.gene_sets))

    def finish(accumulator: Any, timings: dict) -> pd.DataFrame:
        result, *without = accumulator.finish()
        table = gsea_table(index, result, observed[0],
                           leading_edges(index, genes, statistic, float(o.weight), o.set_statistic))
        row_of_set = pd.Series(np.arange(index.n_sets), index=index.names.astype(str))
        rows = row_of_set.loc[table.gene_set].to_numpy()
        for name, scores in zip(names, study_scores):
            table[f"es_{name}"] = scores[rows]
        for name, part in zip(names, without):
            for column in ("nes", "pval", "fdr"):
                table[f"{column}_without_{name}"] = part[column][rows]
        record(table, timings, null_storage=null_info["null_storage"], memory_plan=null_info["memory_plan"],
               tie_tolerance=null_info["tie_tolerance"])
        table.attrs["ranking"] = _ranking(index, genes, statistic, float(o.weight), o.set_statistic)
        return table

    return Prepared(job, finish)
