"""What the modes share: result columns, option checks, the GSEA null and table, provenance."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._pipeline import (
    file_digest,
    P_FLOOR_WARNING,
    TIE_RULE,
    Study,
    load_study,
    choose_batch_size,
    design_warning,
    parse_memory,
    versions,
    watch_compilation,
)
from ..backends import get_backend
from ..backends.cpu import hit_weights
from ..design import PermutationPlan, TwoGroupLabels
from ..errors import InputError, option
from ..enrich.running_sum import running_sum
from ..genesets import GeneSetIndex
from ..nulls import GseaNullAccumulator, bh_adjust, tie_tolerance
from ..runner import Job
from ..stats.metrics import METRIC_CODES, Metric, get_metric, ranking_metric
from ..stats.ranking import rank_genes

RESULT_COLUMNS = [
    "gene_set", "size", "size_original", "es", "nes", "pval", "n_null_same_sign", "fdr", "fwer", "padj_bh",
    "leading_edge", "tags_pct", "list_pct", "signal_pct",
]
GENE_COLUMNS = ["gene", "statistic", "pval_parametric", "pval", "qval_bh", "pval_maxt"]


def common_setup(memory: str | int, device: str, threads: int | None) -> tuple[int, Any]:
    """The memory budget and the backend of a run whose options
    :func:`permenrich.options.check_options` has checked (and the first-run notice)."""
    budget = parse_memory(memory)
    backend = get_backend(device, threads=threads, memory=budget)
    if backend.name == "cpu":
        watch_compilation()
    return budget, backend


@dataclass
class StudyRun:
    """What the modes that permute sample labels share once their inputs are read: the
    metric, the budget, the backend with the statistic prepared, the study, the
    permutation plan, the seconds spent reading, and the statistic's value under no
    effect (``centre``: 0; 1 for ratio_of_classes; n_A n_B / 2 for Mann-Whitney U)."""

    metric: Metric
    budget: int
    backend: Any
    study: Study
    plan: PermutationPlan
    read_seconds: float
    centre: float

    @property
    def resident_bytes(self) -> int:
        """What the run holds throughout (:attr:`Study.resident_bytes`), and the backend's
        own copy where its statistic needs one: the ranks of a rank metric, the
        normalised matrix of a correlation."""
        study = self.study
        extra = study.in_memory and study.covariates is None and (
            self.metric.kind == "correlation" or self.metric.rank_transform)
        return study.resident_bytes + (int(study.values.nbytes) if extra else 0)


def prepare_study(o: Any, started: float, restrict: Callable[[Study], Study] | None = None, *,
                  ranking: bool = False) -> StudyRun:
    """Read the expression data and the phenotype of options ``o``, plan the
    permutations and prepare the backend's per-gene statistic (``restrict`` may first
    narrow the study, e.g. ORA's universe; ``ranking``: the statistic ranks genes for a
    set statistic, :func:`~permenrich.stats.metrics.ranking_metric`)."""
    metric = get_metric(o.metric)
    if ranking:
        metric = ranking_metric(metric)
    budget, backend = common_setup(o.memory, o.device, o.threads)
    study = load_study(o.expr, o.phenotype, metric=metric, groupby=o.groupby, case=o.case, control=o.control,
                       phenotype_column=o.phenotype_column, strata=o.strata, pairs=o.pairs, chip=o.chip,
                       collapse=o.collapse, nan_policy=o.nan_policy, zero_variance=o.zero_variance,
                       normalize=o.normalize, budget=budget, pseudobulk=o.pseudobulk,
                       pseudobulk_method=o.pseudobulk_method, covariates=o.covariates,
                       layer=getattr(o, "layer", None), use_raw=bool(getattr(o, "use_raw", False)),
                       min_cells=getattr(o, "min_cells", 10))
    if restrict is not None:
        study = restrict(study)
    design = study.design
    plan = PermutationPlan(design, int(o.permutations), int(o.seed), random_only=getattr(o, "random_only", False))
    _warn_about_p_floor(plan, study, o, ranking)
    read_seconds = time.perf_counter() - started
    prepare_gene_statistic(backend, study, metric)
    centre = 0.0
    if isinstance(design, TwoGroupLabels):
        centre = no_effect_value(metric, design.n_case, design.n_control)
    return StudyRun(metric, budget, backend, study, plan, read_seconds, centre)


def no_effect_value(metric: Metric, n_case: int, n_control: int) -> float:
    """A two-group statistic's value under no effect: n_A n_B / 2 for Mann-Whitney's U,
    1 for ratio_of_classes, 0 otherwise (the centred U of a ranking included)."""
    if metric.code == METRIC_CODES["mann_whitney"]:
        return n_case * n_control / 2
    return 1.0 if metric.name == "ratio_of_classes" else 0.0


def prepare_gene_statistic(backend: Any, study: Study, metric: Metric) -> None:
    """Prepare ``backend``'s per-gene statistic of ``study``'s labellings: what a run does,
    and what :func:`permenrich.pl.null_scores` does again to recompute one set's null."""
    design = study.design
    backend.prepare_statistic(study.values, metric, phenotype=getattr(design, "values", None),
                              drawn_is_case=getattr(design, "drawn_is_case", True), covariates=study.covariates)


def _warn_about_p_floor(plan: PermutationPlan, study: Study, o: Any, ranking: bool) -> None:
    """Say up front when no p-value of the run can fall below :data:`P_FLOOR_WARNING`."""
    message = p_floor_warning(study.source, plan.n_perm, plan.exact, mirrored=plan.mirrored,
                              sign_specific=ranking,  # GSEA's p, whatever the set statistic
                              metric=getattr(o, "metric", None), alternative=getattr(o, "alternative", None),
                              direction=getattr(o, "direction", None))
    if message is not None:
        design_warning(study.info, message)


def p_floor(n_perm: int, exact: bool = False, *, mirrored: bool = False, sign_specific: bool = False,
            metric: str | None = None, alternative: str | None = None, direction: str | None = None
            ) -> tuple[float, str]:
    """The smallest p-value a run can report, and in words how it comes about.

    1/labellings under exact enumeration (the observed labelling is one of them), else
    1/(permutations + 1); twice that for a two-sided test (``alternative``, or ORA's
    ``direction="both"``) when every labelling's complement is a labelling
    (``mirrored``) and the ``metric`` changes sign with the classes (ratio_of_classes
    turns r into 1/r): the complement scores alike; and about twice that for GSEA's
    sign-specific p-value (only the null scores of the observed sign count: about half;
    the words then begin with "about").
    """
    base = 1.0 / n_perm if exact else 1.0 / (n_perm + 1)
    said = f"1/{n_perm}" if exact else f"1/({n_perm}+1)"
    two_sided = alternative == "two-sided" or direction == "both"
    if sign_specific:
        return 2 * base, f"about {2 * base:.3g} (2 x {said}: a set's p counts only the null scores of its sign)"
    if two_sided and exact and mirrored and metric != "ratio_of_classes":
        return 2 * base, f"{2 * base:.3g} (2 x {said}: each labelling's complement scores alike, two-sided)"
    return base, f"{base:.3g} ({said})"


def p_floor_warning(source: str, n_perm: int, exact: bool = False, **design: Any) -> str | None:
    """The warning that no p-value of a run of ``n_perm`` permutations (all of them, when
    ``exact``) can fall below :data:`P_FLOOR_WARNING`, or None when one can; ``design``
    as :func:`p_floor`."""
    floor, said = p_floor(n_perm, exact, **design)
    if floor <= P_FLOOR_WARNING:
        return None
    why = (f"the design has only {n_perm} distinct labellings (all enumerated); smaller p-values need more "
           "samples (or fewer strata)" if exact
           else f"{n_perm} permutations; raise {option('permutations')} for smaller p-values")
    return f"{source}: no p-value can fall below {said}: {why}"


def check_observed_statistics(stat: np.ndarray, gene_ids: np.ndarray, metric: str, source: str,
                              set_statistic: str | None = None) -> None:
    """Refuse observed statistics that no rule can rank: NaN always; +-inf for the
    linear set statistics (the running sum and the per-gene tests rank infinities at
    the extremes, see :mod:`permenrich.enrich.running_sum` and :mod:`permenrich.nulls`)."""
    undefined = np.isnan(stat)
    if set_statistic in ("mean", "maxmean"):
        undefined |= np.isinf(stat)
    if undefined.any():
        first = int(np.flatnonzero(undefined)[0])
        why = ("is undefined (NaN)" if np.isnan(stat[first])
               else f"is {stat[first]} (constant within both classes), which set statistic {set_statistic!r} "
                    "cannot average; use set statistic ks or a metric with a variance floor (signal_to_noise, t_test)")
        raise InputError(f"{source}: the {metric} statistic of gene {str(gene_ids[first])!r} {why}"
                         f"{'; check its values' if np.isnan(stat[first]) else ''}")


def gsea_table(index: GeneSetIndex, stats: dict[str, np.ndarray], observed: np.ndarray,
                edges: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    table = pd.DataFrame({
        "gene_set": index.names.astype(str),
        "size": index.sizes.astype(int),
        "size_original": index.sizes_original.astype(int),
        "es": stats["es"],
        "nes": stats["nes"],
        "pval": stats["pval"],
        **({"log2err": stats["log2err"]} if "log2err" in stats else {}),
        "n_null_same_sign": stats["n_null_same_sign"].astype(np.int64),
        "fdr": stats["fdr"],
        "fwer": stats["fwer"],
        "padj_bh": bh_adjust(stats["pval"]),
        "leading_edge": [e[0] for e in edges],
        "tags_pct": [e[1] for e in edges],
        "list_pct": [e[2] for e in edges],
        "signal_pct": [e[3] for e in edges],
    })
    # FDR first (it accounts for every set's null), then the strength of the enrichment:
    # a nominal p can be large only because few null scores share the set's sign.
    order = np.lexsort((table.gene_set.to_numpy(), -np.abs(table.nes.to_numpy()), table.fdr.to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def leading_edges(index: GeneSetIndex, gene_ids: np.ndarray, stat: np.ndarray, weight: float,
                   set_statistic: str) -> list[tuple[str, float, float, float]]:
    """GSEA's leading edge per set (running-sum statistic only; empty otherwise)."""
    if set_statistic != "ks":
        return [("", np.nan, np.nan, np.nan)] * index.n_sets
    gene_ids = np.asarray(gene_ids, dtype=object)
    order = rank_genes(stat)
    position_of_gene = np.empty_like(order)
    position_of_gene[order] = np.arange(order.size)
    ranked_weights = hit_weights(np.ascontiguousarray(stat[order], dtype=np.float64), float(weight))
    edges = []
    for s in range(index.n_sets):
        members = index.members[index.offsets[s]:index.offsets[s + 1]]
        result = running_sum(position_of_gene[members], ranked_weights)
        edges.append((",".join(map(str, gene_ids[order[result.leading_edge_positions]])),
                      100.0 * result.tags_fraction, 100.0 * result.list_fraction, 100.0 * result.signal_fraction))
    return edges


def score_scale(set_statistic: str, gene_scores: np.ndarray) -> float:
    """Magnitude of a run's set scores, for the tie tolerance: 1 for the running sum (ES
    lies in [-1, 1]); the largest finite |gene score| for mean/maxmean (a mean's bound)."""
    if set_statistic == "ks":
        return 1.0
    finite = np.abs(gene_scores[np.isfinite(gene_scores)])
    return float(finite.max()) if finite.size else 1.0


def null_storage(cached: int, n_perm: int) -> str:
    """What run.json says of the null between GSEA's two passes (``cached``: the
    permutations whose scores the memory budget leaves room for)."""
    if cached >= n_perm:
        return "cached in memory"
    if cached <= 0:
        return "recomputed from (seed, k) in a second pass"
    return (f"recomputed from (seed, k) in a second pass, except up to {cached:,} permutations kept in memory "
            "(what the memory budget leaves beside the matrix and a batch)")


def check_observed_scores(observed: np.ndarray, set_names: np.ndarray | None = None) -> None:
    """Refuse observed set scores that are not finite: a running sum whose hit weights
    |statistic| ** p under- or overflow float64 (1/norm infinite) would be reported as
    ES = inf with an ordinary-looking p-value."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(observed, dtype=np.float64)))
    if bad.size:
        which = f"set {str(set_names[bad[0]])!r}" if set_names is not None else f"{bad.size} sets"
        raise InputError(f"the observed enrichment score of {which} is not finite: the hit weights |statistic| ** p "
                         "of its genes under- or overflow float64 (statistics near 1e-160 with p = 2, or huge ones "
                         "with a large p); multiply the data by a constant (the running sum does not depend on the "
                         f"statistics' scale) or use another {option('weight')}")


def gsea_job(score: Callable[[int, int], Any], observed: np.ndarray, *, n_perm: int, exact: bool, xp: Any,
             n_sets: int, batch_size: int | None, budget: int, extra_bytes: int, scale: float,
             streamed: bool = False, resident_bytes: int = 0,
             fwer_groups: np.ndarray | None = None, set_names: np.ndarray | None = None) -> tuple[Job, dict[str, Any]]:
    """The two-pass GSEA null over the permutations of ``score`` as a runner job
    (``streamed``: each batch reads the matrix from disk once, see
    :func:`choose_batch_size`); ``scale`` is the scores' magnitude (:func:`score_scale`),
    which sets the tie tolerance; ``resident_bytes``: what the run holds throughout (the
    matrix in memory, :attr:`~permenrich._pipeline.Study.resident_bytes`); ``fwer_groups``: see
    :class:`~permenrich.nulls.GseaNullAccumulator` (their tail counts are held throughout,
    two int64 per group, observed set and sign); ``set_names`` name a set whose observed
    score is not finite (refused). Also returns what run.json says of it."""
    check_observed_scores(observed, set_names)
    per_permutation = 8 * n_sets * 6 + extra_bytes
    chosen = choose_batch_size(batch_size, budget, per_permutation, n_perm, streamed=streamed)
    fwer_bytes = 0 if fwer_groups is None else 16 * (int(np.max(fwer_groups, initial=-1)) + 1) * (n_sets + 1)
    # The null is kept for the second pass in what the budget leaves beside the matrix, the
    # FWER tails and a batch's buffers; the rest is scored again.
    room = max(0, budget - resident_bytes - fwer_bytes - chosen * per_permutation)
    cache = min(n_perm, room // max(1, 8 * n_sets))
    tolerance = tie_tolerance(scale)
    job = Job(n_perm=n_perm, batch_size=chosen, cache=cache, score=score,
              new_accumulator=lambda: GseaNullAccumulator(observed, n_perm, exact, xp=xp, tie_tolerance=tolerance,
                                                          fwer_groups=fwer_groups))
    plan = {"budget_bytes": int(budget), "matrix_bytes": int(resident_bytes),
            "batch_bytes": int(chosen * per_permutation), "null_cache_bytes": int(cache * 8 * n_sets)}
    if fwer_groups is not None:
        plan["fwer_tail_bytes"] = fwer_bytes
    info = {"batch_size": chosen, "tie_tolerance": tolerance, "null_storage": null_storage(cache, n_perm),
            "memory_plan": plan}
    return job, info


def options_of(arguments: dict) -> dict:
    """A public function's arguments as the options of its run (what workers receive):
    all of them but the client and the progress callback, which stay with the caller."""
    return {name: value for name, value in arguments.items() if name not in ("client", "progress")}


def reading_record(o: Any) -> tuple[dict, dict]:
    """How a run read its expression data, for run.json: the options that change the
    matrix analysed (parameters) and the digests of the files it came from (data), one
    record for gsea, genes and ora's expression mode."""
    parameters = {"collapse": o.collapse, "nan_policy": o.nan_policy, "zero_variance": o.zero_variance,
                  "groupby": o.groupby}
    data = {"expression": file_digest(o.expr) or {"object": type(o.expr).__name__},
            "phenotype": file_digest(o.phenotype) if o.phenotype is not None else None,
            "chip": file_digest(o.chip) if o.chip is not None else None}
    return parameters, data


def provenance(command: str, parameters: dict, started: float, **sections: Any) -> dict:
    run = {"command": command, "parameters": parameters, **sections, "tie_rule": TIE_RULE,
           "versions": versions()}
    timings = run.setdefault("timings", {})
    timings["total_seconds"] = time.perf_counter() - started
    scored = timings.get("permutations_scored", 0)
    if scored:
        # After the first batch (compilation, cache loading) when there were later ones.
        run["per_permutation_ms"] = timings.get("per_permutation_ms", 1000 * (
            timings["first_pass_seconds"] + timings["second_pass_seconds"]) / scored)
    return run


