"""Over-representation analysis, list mode and expression mode with permutation nulls (:func:`ora`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._pipeline import (
    Study,
    choose_batch_size,
    digests,
    file_digest,
    load_gene_sets,
    parse_memory,
)
from ..backends.cpu import NumbaThreads
from ..enrich.overlap import top_genes_mask
from ..errors import InputError, OptionError, option
from ..genesets import GeneSetIndex
from ..nulls import ALTERNATIVE_CODES, ExceedanceAccumulator, bh_adjust
from ..stats.covariates import CovariateStatistic, t_pvalues
from ..stats.metrics import MetricName, get_metric
from ..runner import Job, Prepared, ProgressCallback, run
from ._shared import options_of, prepare_study, provenance, reading_record

logger = logging.getLogger("permenrich")


ORA_COLUMNS = ["gene_set", "size", "size_original", "list_size", "overlap", "expected", "odds_ratio",
               "pval_hypergeom", "padj_bh_hypergeom", "pval_perm", "padj_bh_perm", "pval_perm_maxt",
               "overlap_genes"]


#: The test alternative that each ``direction`` of an altered-gene list stands for.
DIRECTION_ALTERNATIVES = {"up": "greater", "down": "less", "both": "two-sided"}


def _select_genes(stats: np.ndarray, *, top: int | None, fdr: float | None, direction: str, centre: float,
                  pvalue_of_statistic: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """The "altered" genes of each row of ``stats`` (n_batch, n_genes) -> bool matrix.

    ``top``: the ``top`` most extreme genes in ``direction`` (ties by gene index);
    ``fdr``: genes whose BH q-value of the statistic's textbook p-value is < ``fdr``.
    """
    stats = np.atleast_2d(stats)
    n_batch, n_genes = stats.shape
    if top is not None:
        selected = np.empty((n_batch, n_genes), dtype=bool)
        top_genes_mask(np.ascontiguousarray(stats, dtype=np.float64), min(int(top), n_genes),
                       ALTERNATIVE_CODES[DIRECTION_ALTERNATIVES[direction]], float(centre), selected)
        return selected
    pvalues = pvalue_of_statistic(stats)  # built for the direction's alternative
    selected = np.zeros((n_batch, n_genes), dtype=bool)
    for row in range(n_batch):
        selected[row] = bh_adjust(pvalues[row]) < fdr
    return selected


def ora(
    gene_list: Any = None,
    gene_sets: Any = None,
    *,
    universe: Any = None,
    map: Any = None,  # noqa: A002 - the option's name on the command line (--map)
    expr: Any = None,
    phenotype: Any = None,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    phenotype_column: str | None = None,
    strata: str | None = None,
    pairs: str | None = None,
    covariates: Sequence[str] | None = None,
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
    map
        List mode: a mapping of items to genes (TSV with the columns ``item`` and
        ``gene``, a DataFrame, or a dict), e.g. miRNA -> target genes from a database
        export or protein -> gene. It is applied to the list and to the universe alike;
        without a universe, the map's genes are the background.
    expr, phenotype, groupby, case, control, phenotype_column, strata, pairs, covariates, metric
        Expression mode (no ``gene_list``): the altered genes are derived from a per-gene
        statistic, as in :func:`genes`.
    top, fdr, direction
        Expression mode selection rule (exactly one of ``top``/``fdr``): the ``top`` most
        extreme genes, or those with Benjamini–Hochberg q < ``fdr`` from the statistic's
        textbook p-value (metrics whose null is a fixed function of the statistic:
        student_t, mann_whitney, pearson, spearman); ``direction`` up (case > control or
        positive correlation), down or both.
    min_size, max_size
        Sets whose size in the universe falls outside are excluded (default 15, 500).
    permutations, seed, collapse, chip, nan_policy, zero_variance, normalize
        As in :func:`gsea` (expression mode).
    pseudobulk, pseudobulk_method, min_cells, layer, use_raw, batch_size, memory, threads, device, client, progress
        As in :func:`gsea` (expression mode; ``layer``/``use_raw`` also choose the matrix
        whose genes are the list mode's default universe).

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`ORA_COLUMNS`: ``pval_hypergeom`` is the one-sided hypergeometric
        (Fisher) p-value — the exact gene-resampling null (random sets of equal size);
        in expression mode ``pval_perm`` is the sample-label permutation p-value,
        re-deriving the altered list under each permutation so that gene-gene
        correlation is respected, of the overlap as a z-score given the list's size
        (:func:`standardised_overlap`), and ``pval_perm_maxt`` its Westfall–Young maxT
        adjustment over sets. Sorted by the permutation p-value when there is one, else
        by the hypergeometric one.

    Notes
    -----
    A set that holds every gene of the universe is kept and gets p = 1 in every p-value
    column, exactly: its overlap is the whole list, so ``P(X >= x) = 1`` for the
    hypergeometric null, and under every permutation its overlap is again the whole list
    (p = 1 by definition, whatever the permuted list sizes). It is left out of the maxT
    maximum, where its overlap, the list size, would mask every other set.
    """
    return run(prepare_ora, options_of(locals()), client=client, progress=progress)


class _OverlapNull(ExceedanceAccumulator):
    """Exceedance counts of the sets' null overlaps, and the null list sizes (how many
    genes each permutation selected): batches are ``(overlaps, list_sizes)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.list_size_count, self.list_size_sum = 0, 0
        self.list_size_min, self.list_size_max = np.iinfo(np.int64).max, -1

    def add(self, pass_index: int, batch: tuple[np.ndarray, np.ndarray]) -> None:
        overlaps, sizes = batch
        super().add(pass_index, overlaps)
        self._merge_sizes(sizes.size, int(sizes.sum()), int(sizes.min()), int(sizes.max()))

    def _merge_sizes(self, count: int, total: int, smallest: int, largest: int) -> None:
        self.list_size_count += count
        self.list_size_sum += total
        self.list_size_min = min(self.list_size_min, smallest)
        self.list_size_max = max(self.list_size_max, largest)

    def state(self, pass_index: int) -> dict:
        return {**super().state(pass_index), "list_sizes": (self.list_size_count, self.list_size_sum,
                                                            self.list_size_min, self.list_size_max)}

    def merge(self, pass_index: int, state: dict) -> None:
        super().merge(pass_index, state)
        self._merge_sizes(*state["list_sizes"])

    def list_sizes(self) -> dict:
        return {"mean": self.list_size_sum / self.list_size_count, "min": self.list_size_min,
                "max": self.list_size_max}


#: Options that only expression mode uses (list mode: the list is the selection, and
#: nothing is permuted; the resources, threads to device, are accepted as in any run);
#: and those that only reading ``expr`` for a universe uses.
_EXPRESSION_MODE_ONLY = ("top", "fdr", "groupby", "case", "control", "covariates", "strata", "pairs",
                         "phenotype_column", "metric", "direction", "permutations", "seed", "nan_policy",
                         "zero_variance", "normalize", "pseudobulk", "pseudobulk_method", "min_cells")
_UNIVERSE_READING = ("chip", "collapse", "layer", "use_raw")


def _check_list_mode_options(options: dict) -> None:
    """Refuse, in list mode, an option set to anything but its default that the run would
    ignore (the user meant something by it), and ``expr`` when a universe or map already
    gives the background."""
    import inspect

    from ..options import differs_from_default

    defaults = {name: p.default for name, p in inspect.signature(ora).parameters.items()}

    def given(name: str) -> bool:
        return differs_from_default(options.get(name), defaults[name])

    chosen = next((name for name in _EXPRESSION_MODE_ONLY if given(name)), None)
    if chosen is not None:
        raise OptionError(f"{option(chosen)} belongs to expression mode, where the altered genes are chosen "
                          f"from {option('expr')} and a phenotype; with {option('gene_list')} the list is the "
                          f"selection and nothing is permuted: drop {option(chosen)} (or the gene list)")
    if options.get("expr") is not None and (options.get("universe") is not None or options.get("map") is not None):
        background = "universe" if options.get("universe") is not None else "map"
        raise OptionError(f"in list mode {option('expr')} only gives the background genes, and {option(background)} "
                          f"already does: drop one of them")
    unused = next((name for name in _UNIVERSE_READING if options.get("expr") is None and given(name)), None)
    if unused is not None:
        raise OptionError(f"{option(unused)} reads {option('expr')}, which in list mode gives the background genes; "
                          f"without it there is nothing to read: drop {option(unused)} (or give {option('expr')})")


def prepare_ora(options: dict) -> Prepared:
    """Read and check the inputs of :func:`ora` and the observed overlaps; the runner's
    :class:`~permenrich.runner.Prepared` (no job in list mode; also run on Dask workers)."""
    from ..io import read_gene_list
    from ..io.genelist import map_items, read_item_map
    from ..io.genelist import gene_list_source

    o = SimpleNamespace(**options)
    started = time.perf_counter()
    expression_mode = o.gene_list is None
    if expression_mode and o.expr is None:
        raise InputError(f"give {option('gene_list')} (list mode) or {option('expr')} and a phenotype "
                         "(expression mode)")
    if expression_mode and o.map is not None:
        raise OptionError(f"{option('map')} maps the items of a list to genes (list mode): give "
                          f"{option('gene_list')} too")
    if not expression_mode and o.phenotype is not None:
        raise InputError(f"give either {option('gene_list')} or {option('expr')} with a phenotype, not both")
    if not expression_mode:
        _check_list_mode_options(options)
    sections: dict[str, Any] = {}
    if expression_mode:
        if (o.top is None) == (o.fdr is None):
            raise InputError(f"expression mode needs exactly one selection rule: {option('top')} (a number of genes) "
                             f"or {option('fdr')} (a q-value)")
        if o.fdr is not None and get_metric(o.metric).pvalue_of_statistic is None:
            raise InputError(f"{option('fdr')} needs a statistic whose p-value can be recomputed under every "
                             f"permutation (student_t, mann_whitney, pearson, spearman); {o.metric} cannot: use "
                             f"{option('top')} instead")

        def restrict(study: Study) -> Study:
            """The study's genes within the universe, when one is given."""
            if o.universe is None:
                return study
            if not study.in_memory:
                raise InputError(f"{option('universe')} cannot restrict a streamed matrix ({study.source}); raise "
                                 f"{option('memory')} or use {option('pseudobulk')}")
            keep_genes = np.isin(study.gene_ids, read_gene_list(o.universe, what="universe"))
            if not keep_genes.any():
                raise InputError(f"{gene_list_source(o.universe)}: the universe shares no gene with the expression "
                                 f"data {study.source}; check the gene id type (symbols vs probe or Ensembl ids)")
            values = np.ascontiguousarray(study.values.T[:, keep_genes]).T  # samples-major, as loaded
            covariates = None
            if study.covariates is not None:
                covariates = CovariateStatistic(values, study.design.values, study.covariates.reduced_design,
                                                study.source)
            return Study(values, study.gene_ids[keep_genes], study.design, study.source, study.info, covariates)

        study_run = prepare_study(o, started, restrict)
        metric_record, budget, backend = study_run.metric, study_run.budget, study_run.backend
        study, plan, centre = study_run.study, study_run.plan, study_run.centre
        gene_ids = study.gene_ids
        if o.top is not None and int(o.top) >= gene_ids.size:
            raise InputError(f"{option('top', o.top)} selects every one of the {gene_ids.size} genes of "
                             f"{study.source}; choose fewer")
        design = study.design
        n_case = getattr(design, "n_case", 0)
        n_control = getattr(design, "n_control", 0)
        alternative = DIRECTION_ALTERNATIVES[o.direction]
        if o.fdr is None:
            p_of_stat = None
        elif study.covariates is not None:  # the t of a linear model: its textbook null has fixed df
            p_of_stat = partial(t_pvalues, df=study.covariates.df, alternative=alternative)
        else:
            p_of_stat = metric_record.pvalue_of_statistic(study.values if study.in_memory else None, n_case,
                                                          n_control, alternative)

        def select(stats: np.ndarray) -> np.ndarray:
            with NumbaThreads(o.threads):
                return _select_genes(np.asarray(backend.to_host(stats)), top=None if o.top is None else int(o.top),
                                     fdr=o.fdr, direction=o.direction, centre=centre, pvalue_of_statistic=p_of_stat)

        selected = select(backend.gene_statistics(plan.observed()))[0]
        if not selected.any():
            raise InputError(f"no gene of {study.source} passes the selection rule (q < {o.fdr}); loosen "
                             f"{option('fdr')} or use {option('top')}")
    else:
        budget = parse_memory(o.memory)
        genes_of_interest = read_gene_list(o.gene_list, what="gene list")
        # A map (miRNA -> targets, protein -> gene) turns the list and its universe alike
        # into genes; without a universe, the map's genes are the background.
        targets = read_item_map(o.map) if o.map is not None else None
        if targets is not None:
            genes_of_interest = map_items(genes_of_interest, targets, where=gene_list_source(o.gene_list),
                                          what="gene list")
        if o.universe is not None:
            gene_ids = read_gene_list(o.universe, what="universe")
            if targets is not None:
                gene_ids = map_items(gene_ids, targets, where=gene_list_source(o.universe), what="universe")
            gene_ids = np.asarray(gene_ids, dtype=object)
            universe_name = gene_list_source(o.universe)
        elif targets is not None:
            gene_ids = np.asarray(list(dict.fromkeys(g for genes in targets.values() for g in genes)), dtype=object)
            universe_name = f"the genes of the map {gene_list_source(o.map)}"
        elif o.expr is not None:
            from ..io import read_expression
            # only its genes: those measured in every sample (no value is analysed, so
            # none is refused for its range)
            expression = read_expression(o.expr, nan_policy="defer", layer=o.layer, use_raw=o.use_raw)
            complete = np.isfinite(expression.values).all(axis=1)
            expression = dataclasses.replace(expression, values=expression.values[complete],
                                             gene_ids=expression.gene_ids[complete])
            if o.chip is not None:  # probes to the list's kind of id, as an expression analysis maps them
                from ..io import apply_chip

                expression = apply_chip(expression, o.chip, method=o.collapse)
            gene_ids = np.asarray(expression.gene_ids, dtype=object)
            universe_name = f"the genes of {expression.source}"
        else:
            raise InputError(f"{gene_list_source(o.gene_list)}: list mode needs a universe ({option('universe')}, or "
                             f"the expression data's genes with {option('expr')}): the background decides the "
                             "p-values")
        gene_ids = np.asarray(list(dict.fromkeys(gene_ids)), dtype=object)
        selected = np.isin(gene_ids, genes_of_interest)
        outside = len(set(genes_of_interest) - set(gene_ids))
        if not selected.any():
            raise InputError(f"{gene_list_source(o.gene_list)}: none of the {len(genes_of_interest)} listed genes "
                             f"is in the universe ({universe_name}, {gene_ids.size} genes); check the gene id type "
                             "(symbols vs probe or Ensembl ids)")
        if outside:
            logger.warning("%s: %d of %d listed genes are not in the universe (%s) and are ignored",
                           gene_list_source(o.gene_list), outside, len(genes_of_interest), universe_name)
        plan = None
    index = load_gene_sets(o.gene_sets, gene_ids, min_size=o.min_size, max_size=o.max_size, allow_full=True)
    test = overlap_test(index, gene_ids, selected, threads=o.threads, **({} if not expression_mode else dict(
        selections=lambda start, stop: select(backend.gene_statistics(backend.labellings(plan, start, stop))),
        n_perm=plan.n_perm, exact=plan.exact, batch_size=o.batch_size, budget=budget)))
    covering = ~test.tested

    def finish(accumulator: Any, timings: dict) -> pd.DataFrame:
        table = test.table(accumulator)
        if accumulator is not None:
            sections.update(permutation_plan=plan.describe(), permutation_type="phenotype (sample labels)",
                            design={k: v for k, v in study.info.items() if k not in ("strata", "pairs")},
                            null_list_size=accumulator.list_sizes(), backend=backend.describe())
            if not study.in_memory:
                study.values.release()  # the file is free for others
        table.attrs["run"] = provenance(
            "ora",
            {"mode": "expression" if expression_mode else "list", "metric": o.metric if expression_mode else None,
             "top": o.top, "fdr": o.fdr, "direction": o.direction if expression_mode else None,
             # list mode permutes nothing: no permutations, seed or device
             "permutations": int(o.permutations) if expression_mode else None,
             "seed": int(o.seed) if expression_mode else None, "min_size": o.min_size, "max_size": o.max_size,
             "strata": o.strata, "pairs": o.pairs, "memory_bytes": budget,
             "batch_size": test.job.batch_size if test.job is not None else None,
             "device": o.device if expression_mode else None,
             **(reading_record(o)[0] if expression_mode else {"collapse": o.collapse if o.chip else None})},
            started,
            data={"n_universe": int(gene_ids.size), "n_selected": int(selected.sum()),
                  **index.census(),
                  "n_gene_sets_covering_universe": int(covering.sum()),
                  "gene_list": file_digest(o.gene_list) if o.gene_list is not None else None,
                  "universe": file_digest(o.universe) if o.universe is not None else None,
                  "map": file_digest(o.map) if o.map is not None else None,
                  "expression": (file_digest(o.expr) or {"object": type(o.expr).__name__}) if o.expr is not None
                  else None,
                  "phenotype": file_digest(o.phenotype) if o.phenotype is not None else None,
                  "chip": file_digest(o.chip) if o.chip is not None else None,
                  "gene_sets": digests(o.gene_sets)},
            timings=timings,
            **sections,
        )
        return table

    return Prepared(test.job, finish)


def _warn_if_lists_shrink(observed: int, null: dict) -> None:
    """Say when the relabelled lists are far shorter than the observed one: the
    permutation p-values then mostly say that the labels matter at all (hardly any gene
    passes the rule without them), not that a set stands out among the altered genes."""
    if null["mean"] >= observed / 4:
        return
    logger.warning("the relabelled data selected %.1f genes on average (%d-%d) against %d observed: the permutation "
                   "p-values then mostly test whether any gene is altered, not whether a set stands out among the "
                   "altered ones; for that, use a list of fixed size (%s) or pval_hypergeom",
                   null["mean"], null["min"], null["max"], observed, option("top"))


@dataclass
class OverlapTest:
    """The overlaps of the selected genes with each set, and (with permutations) the job
    that re-derives the selection under every relabelling; what ``ora`` in expression
    mode and ``meta(mode="ora")`` share."""

    index: GeneSetIndex
    gene_ids: np.ndarray
    selected: np.ndarray
    observed: dict
    tested: np.ndarray
    job: Job | None

    def table(self, accumulator: Any) -> pd.DataFrame:
        """The :data:`ORA_COLUMNS` table, sorted by the permutation p-value when there
        were permutations, else by the hypergeometric one."""
        from ..enrich.overlap import leading_overlap_genes

        index, observed = self.index, self.observed
        table = pd.DataFrame({
            "gene_set": index.names.astype(str), "size": index.sizes.astype(int),
            "size_original": index.sizes_original.astype(int), "list_size": observed["list_size"],
            "overlap": observed["overlap"], "expected": observed["expected"], "odds_ratio": observed["odds_ratio"],
            "pval_hypergeom": observed["pval"], "padj_bh_hypergeom": bh_adjust(observed["pval"]),
            "pval_perm": np.nan, "padj_bh_perm": np.nan, "pval_perm_maxt": np.nan,
            "overlap_genes": leading_overlap_genes(self.selected, index.members, index.offsets, self.gene_ids),
        })
        sort_key = table.pval_hypergeom.to_numpy()
        if accumulator is not None:
            result = accumulator.finish()
            _warn_if_lists_shrink(int(self.selected.sum()), accumulator.list_sizes())
            pval, p_maxt = np.ones(index.n_sets), np.ones(index.n_sets)
            pval[self.tested], p_maxt[self.tested] = result["pval"], result["p_maxt"]
            table["pval_perm"] = pval
            table["padj_bh_perm"] = bh_adjust(pval)
            table["pval_perm_maxt"] = p_maxt
            sort_key = table.pval_perm.to_numpy()
        order = np.lexsort((table.gene_set.to_numpy(), table.pval_hypergeom.to_numpy(), sort_key))
        return table.iloc[order].reset_index(drop=True)


def overlap_test(index: GeneSetIndex, gene_ids: np.ndarray, selected: np.ndarray, *,
                 selections: Callable[[int, int], np.ndarray] | None = None, n_perm: int = 0, exact: bool = False,
                 batch_size: int | None = None, budget: int = 0, threads: int | None = None) -> OverlapTest:
    """Observed overlaps of ``selected`` (bool over ``gene_ids``) with the sets of
    ``index``; with ``selections(start, stop)`` (the selected genes of permutations
    [start, stop), a bool matrix), the job of the permutation null. A set holding every
    gene gets p = 1 and stays out of the permutations."""
    from ..enrich.overlap import OverlapCounter, overlap_statistics

    observed = overlap_statistics(selected, index.members, index.offsets, gene_ids.size)
    tested = index.sizes != gene_ids.size
    job = None
    if selections is not None:
        counter = OverlapCounter(index.members, index.offsets, gene_ids.size)
        set_sizes = index.sizes[tested].astype(np.float64)

        def score_batch(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            chosen = selections(start, stop)
            list_sizes = chosen.sum(axis=1)
            return standardised_overlap(counter.counts(chosen)[:, tested], list_sizes, set_sizes,
                                        gene_ids.size), list_sizes

        observed_z = standardised_overlap(observed["overlap"][tested][None, :], np.array([selected.sum()]),
                                          set_sizes, gene_ids.size)[0]
        job = Job(n_perm=n_perm, batch_size=choose_batch_size(batch_size, budget, 8 * gene_ids.size * 6, n_perm),
                  cache=False, score=score_batch,
                  new_accumulator=lambda: _OverlapNull(observed_z, alternative="greater", centre=0.0, n_perm=n_perm,
                                                       exact=exact, threads=threads))
    return OverlapTest(index, gene_ids, selected, observed, tested, job)


def standardised_overlap(overlaps: np.ndarray, list_sizes: np.ndarray, set_sizes: np.ndarray,
                         n_universe: int) -> np.ndarray:
    """The permutation test's statistic: each overlap x of a list of n genes with a set
    of k, as a z-score under the hypergeometric null of that list size,
    (x - k n/N) / sqrt(k (n/N) (1 - n/N) (N - k)/(N - 1)); 0 where the variance is 0 (an
    empty list, or every gene).

    With a fixed list size (``top``) it orders the overlaps of a set as the overlaps
    themselves do, so the permutation p-values are those of the overlap; but it puts
    sets of different sizes on one scale for the maxT adjustment, and when the list's
    size changes under relabelling (``fdr``), a set is judged against what its size
    and the list's would give by chance: a set found less often than expected is not
    called enriched because the relabelled lists were shorter.

    Parameters
    ----------
    overlaps : ndarray, shape (n_lists, n_sets)
    list_sizes : ndarray, shape (n_lists,)
    set_sizes : ndarray, shape (n_sets,)
    n_universe : int
    """
    fraction = np.asarray(list_sizes, dtype=np.float64)[:, None] / n_universe
    k = np.asarray(set_sizes, dtype=np.float64)[None, :]
    variance = k * fraction * (1.0 - fraction) * (n_universe - k) / (n_universe - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (np.asarray(overlaps, dtype=np.float64) - k * fraction) / np.sqrt(variance)
    return np.where(variance > 0, z, 0.0)
