"""Public API: validate, plan, run the pipeline, wrap the results.

The pipeline is the same for every backend::

    read -> design (labels, permutation plan) -> per-gene statistic -> ranking
         -> set statistic -> null accumulators -> p-values -> results

Backends only supply the kernel that turns a batch of labellings into enrichment scores
(``backend.score``); everything else here runs once, whatever the device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from . import __version__
from .backends import get_backend
from .design import PermutationPlan, TwoGroupLabels
from .enrich.running_sum import running_sum
from .errors import InputError, OptionError
from .genesets import GeneSetIndex, build_gene_set_index
from .io import (
    ExpressionData,
    apply_chip,
    atomic_write_table,
    atomic_write_text,
    check_output_dir,
    collapse_duplicates,
    design_from_phenotype,
    read_expression,
    read_gene_sets,
)
from .nulls import GseaNullAccumulator, bh_adjust
from .stats.metrics import RATIO_METRICS, MetricName, metric_code

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

RESULT_COLUMNS = [
    "gene_set", "size", "size_original", "es", "nes", "pval", "fdr", "fwer", "padj_bh",
    "leading_edge", "tags_pct", "list_pct", "signal_pct",
]

TIE_RULE = ("genes ranked by decreasing statistic; ties ordered by row index after collapsing "
            "(lower index first); -0.0 == 0.0")

_MEMORY_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_memory(memory: str | int) -> int:
    """Bytes from ``"1GB"``, ``"512MiB"``, ``"2e9"`` or an int."""
    if isinstance(memory, (int, np.integer)) and not isinstance(memory, bool):
        value = int(memory)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(memory))
        if not match or match.group(2).upper() not in _MEMORY_UNITS:
            raise OptionError(f"memory must look like 512MB, 2GB or 1GiB, got {memory!r}")
        value = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()])
    if value < 10**6:
        raise OptionError(f"memory budget {memory!r} is below 1 MB; give at least 1MB")
    return value


def _check_options(metric: str, weight: float, permutations: int, seed: int, min_size: int,
                   max_size: int, collapse: str, nan_policy: str, zero_variance: str,
                   batch_size: int | None, threads: int | None) -> int:
    code = metric_code(metric)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
        raise OptionError(f"weight must be a finite number >= 0 (GSEA uses 0, 1, 1.5 or 2), got {weight!r}")
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise OptionError(f"permutations must be a positive integer, got {permutations!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise OptionError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if collapse not in ("mean", "max", "median"):
        raise OptionError(f"collapse must be one of mean, max, median, got {collapse!r}")
    if nan_policy not in ("error", "drop"):
        raise OptionError(f"nan_policy must be 'error' or 'drop', got {nan_policy!r}")
    if zero_variance not in ("error", "drop"):
        raise OptionError(f"zero_variance must be 'error' or 'drop', got {zero_variance!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise OptionError(f"threads must be a positive integer, got {threads!r}")
    return code


def _file_digest(source: Any) -> dict[str, str] | None:
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return {"path": str(Path(source).resolve()), "sha256": digest.hexdigest()}
    return None


def _load_expression(expr: Any, *, chip: Any, collapse: str, nan_policy: str) -> ExpressionData:
    data = read_expression(expr, nan_policy=nan_policy)
    if chip is not None:
        return apply_chip(data, chip, method=collapse)
    return collapse_duplicates(data, method=collapse)


def _drop_constant_genes(values: np.ndarray, gene_ids: np.ndarray, policy: str,
                         source: str) -> tuple[np.ndarray, np.ndarray]:
    constant = np.ptp(values, axis=1) == 0
    if not constant.any():
        return values, gene_ids
    if constant.all():
        raise InputError(f"{source}: every gene has the same value in all analysed samples; "
                         "nothing can be ranked")
    if policy == "error":
        first = gene_ids[np.flatnonzero(constant)[0]]
        raise InputError(f"{source}: gene {first!r} has zero variance across the analysed samples "
                         f"({int(constant.sum())} such genes); remove them or pass "
                         "--zero-variance drop (zero_variance='drop')")
    logger.warning("dropped %d zero-variance genes (constant across the analysed samples)", int(constant.sum()))
    return values[~constant], gene_ids[~constant]


def _batches(n_perm: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n_perm, batch_size):
        yield start, min(n_perm, start + batch_size)


def gsea(
    expr: Any,
    phenotype: Any = None,
    gene_sets: Any = None,
    *,
    groupby: str | None = None,
    case: str | None = None,
    control: str | None = None,
    metric: MetricName = "signal_to_noise",
    weight: float = 1.0,
    permutations: int = 1000,
    seed: int = 0,
    min_size: int = 15,
    max_size: int = 500,
    collapse: Literal["mean", "max", "median"] = "mean",
    chip: str | os.PathLike | None = None,
    nan_policy: Literal["error", "drop"] = "error",
    zero_variance: Literal["error", "drop"] = "drop",
    batch_size: int | None = None,
    memory: str | int = "1GB",
    threads: int | None = None,
    device: Literal["cpu"] = "cpu",
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Phenotype-permutation GSEA.

    Parameters
    ----------
    expr
        Expression data: a path (GCT, TSV/CSV/TXT, h5ad, HDF5), a DataFrame (genes x
        samples) or an AnnData (samples x genes).
    phenotype
        A CLS file, a sample sheet (TSV/CSV with sample ids and a group column named by
        ``groupby``), a sequence of labels (one per sample), or None with ``groupby``
        naming an ``obs`` column of an h5ad/AnnData.
    gene_sets
        GMT/GMX path(s), or a mapping of set name to gene list.
    groupby, case, control
        Group column and the two classes compared (case is the "positive" class A; with
        exactly two classes the defaults follow the CLS order).
    metric
        Ranking metric, see :mod:`permenrich.stats.metrics`.
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
    batch_size
        Permutations per kernel call; default chosen from ``memory``.
    memory
        Memory budget for permutation batches and the cached null (e.g. ``"1GB"``).
    threads
        CPU threads (default: all cores).
    device
        ``"cpu"`` (GPU backends plug in here).
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
    See the module docs of :mod:`permenrich.enrich.running_sum` (ES, leading edge) and
    :mod:`permenrich.nulls` (NES, p, FDR, FWER).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    code = _check_options(metric, weight, permutations, seed, min_size, max_size, collapse,
                          nan_policy, zero_variance, batch_size, threads)
    budget = parse_memory(memory)
    if gene_sets is None:
        raise OptionError("gene_sets is required: give GMT/GMX file(s) or a mapping of set name to genes")
    backend = get_backend(device, threads=threads)

    data = _load_expression(expr, chip=chip, collapse=collapse, nan_policy=nan_policy)
    design = design_from_phenotype(data, phenotype, groupby=groupby, case=case, control=control)
    values = data.values[:, design.keep]
    gene_ids = np.asarray(data.gene_ids, dtype=object)
    if metric in RATIO_METRICS and (values <= 0).any():
        row = int(np.flatnonzero((values <= 0).any(axis=1))[0])
        raise InputError(f"{data.source}: metric {metric} divides class means and needs positive values, "
                         f"but gene {gene_ids[row]!r} has a value <= 0; use signal_to_noise, t_test or "
                         "diff_of_classes for log-scale or centred data")
    values, gene_ids = _drop_constant_genes(values, gene_ids, zero_variance, data.source)
    sets = read_gene_sets(gene_sets)
    index = build_gene_set_index(sets, list(gene_ids), min_size=min_size, max_size=max_size)
    n_genes = values.shape[0]
    full = np.flatnonzero(index.sizes >= n_genes)
    if full.size:
        raise InputError(f"gene set {index.names[full[0]]!r} contains every analysed gene; "
                         "an enrichment score needs genes outside the set")
    labels = TwoGroupLabels(np.asarray(design.is_case, dtype=bool))
    plan = PermutationPlan(labels, int(permutations), int(seed))
    timings["read_seconds"] = time.perf_counter() - started

    gene_set_offsets, gene_set_ids = index.gene_to_sets(n_genes)
    backend.prepare(values, labels.drawn_is_case, code, float(weight), index.members,
                    index.offsets, gene_set_offsets, gene_set_ids)
    observed_es, observed_stat = backend.score(plan.observed(), keep_stat=True)
    observed_es = np.asarray(backend.to_host(observed_es))[0]
    observed_stat = np.asarray(backend.to_host(observed_stat))[0]

    n_sets = index.n_sets
    # A batch holds its null ES and a few same-sized temporaries in the accumulators.
    bytes_per_perm = 8 * n_sets * 6 + 8 * labels.n_drawn
    # Batches past a few hundred permutations gain nothing on the CPU; ~20 batches a run
    # keep the progress bar moving.
    chosen_batch = int(batch_size) if batch_size is not None else int(
        max(64, min(budget // 4 // bytes_per_perm, 8192, max(256, -(-plan.n_perm // 20)))))
    chosen_batch = min(chosen_batch, plan.n_perm)
    cache_null = plan.n_perm * n_sets * 8 <= budget // 2
    total_work = plan.n_perm * (1 if cache_null else 2)
    done = 0

    accumulator = GseaNullAccumulator(observed_es, plan.n_perm, plan.exact, xp=backend.xp)
    cached: list[Any] = []
    t0 = time.perf_counter()
    for start, stop in _batches(plan.n_perm, chosen_batch):
        null_es, _ = backend.score(plan.labellings(start, stop))
        accumulator.add_first_pass(null_es)
        if cache_null:
            cached.append(null_es)
        done += stop - start
        if progress is not None:
            progress(done, total_work)
    accumulator.finish_first_pass()
    timings["first_pass_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cache_null:
        for null_es in cached:
            accumulator.add_second_pass(null_es)
        cached.clear()
    else:
        # Regenerating permutation k from (seed, k) makes the second pass exact.
        for start, stop in _batches(plan.n_perm, chosen_batch):
            null_es, _ = backend.score(plan.labellings(start, stop))
            accumulator.add_second_pass(null_es)
            done += stop - start
            if progress is not None:
                progress(done, total_work)
    stats = accumulator.finish()
    timings["second_pass_seconds"] = time.perf_counter() - t0

    table = _result_table(index, gene_ids, observed_stat, float(weight), observed_es, stats)
    timings["total_seconds"] = time.perf_counter() - started
    table.attrs["run"] = {
        "command": "gsea",
        "permenrich_version": __version__,
        "parameters": {
            "metric": metric, "weight": float(weight), "permutations": int(permutations),
            "seed": int(seed), "min_size": min_size, "max_size": max_size, "collapse": collapse,
            "nan_policy": nan_policy, "zero_variance": zero_variance, "case": design.case,
            "control": design.control, "memory_bytes": budget, "batch_size": chosen_batch,
            "device": device,
        },
        "design": {"n_case": design.n_case, "n_control": design.n_control,
                   "n_samples_excluded": int((~np.asarray(design.keep)).sum())},
        "permutation_plan": plan.describe(),
        "null_storage": "cached in memory" if cache_null else "recomputed from (seed, k) in a second pass",
        "data": {"n_genes": n_genes, "n_gene_sets_read": len(sets), "n_gene_sets_used": n_sets,
                 "expression": _file_digest(expr) or {"object": type(expr).__name__},
                 "phenotype": _file_digest(phenotype) if phenotype is not None else None,
                 "gene_sets": [d for d in (_file_digest(g) for g in _as_list(gene_sets)) if d],
                 "chip": _file_digest(chip) if chip is not None else None},
        "tie_rule": TIE_RULE,
        "backend": backend.describe(),
        "versions": _versions(),
        "timings": timings,
        "per_permutation_ms": 1000 * (timings["first_pass_seconds"] + timings["second_pass_seconds"]) / total_work,
    }
    return table


def _as_list(gene_sets: Any) -> list[Any]:
    if isinstance(gene_sets, (str, os.PathLike)):
        return [gene_sets]
    if isinstance(gene_sets, Mapping):
        return []
    return list(gene_sets)


def _result_table(index: GeneSetIndex, gene_ids: np.ndarray, observed_stat: np.ndarray, weight: float,
                  observed_es: np.ndarray, stats: dict[str, np.ndarray]) -> pd.DataFrame:
    from .stats.ranking import rank_genes

    order = rank_genes(observed_stat)
    position_of_gene = np.empty_like(order)
    position_of_gene[order] = np.arange(order.size)
    ranked_weights = np.abs(observed_stat[order]) ** weight
    leading, tags, lists, signals = [], [], [], []
    for s in range(index.n_sets):
        members = index.members[index.offsets[s]:index.offsets[s + 1]]
        result = running_sum(position_of_gene[members], ranked_weights)
        leading.append(",".join(str(gene_ids[order[p]]) for p in result.leading_edge_positions))
        tags.append(100.0 * result.tags_fraction)
        lists.append(100.0 * result.list_fraction)
        signals.append(100.0 * result.signal_fraction)
    table = pd.DataFrame({
        "gene_set": index.names.astype(str),
        "size": index.sizes.astype(int),
        "size_original": index.sizes_original.astype(int),
        "es": observed_es,
        "nes": stats["nes"],
        "pval": stats["pval"],
        "fdr": stats["fdr"],
        "fwer": stats["fwer"],
        "padj_bh": bh_adjust(stats["pval"]),
        "leading_edge": leading,
        "tags_pct": tags,
        "list_pct": lists,
        "signal_pct": signals,
    })
    table["_abs_nes"] = -np.abs(table["nes"].to_numpy())
    table = table.sort_values(["pval", "_abs_nes", "gene_set"], kind="mergesort").drop(columns="_abs_nes")
    return table.reset_index(drop=True)


def _versions() -> dict[str, str]:
    import numba
    import scipy

    return {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
            "numba": numba.__version__, "scipy": scipy.__version__, "platform": platform.platform()}


def write_results(table: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.tsv`` and ``run.json`` into ``out_dir`` atomically.

    Returns
    -------
    dict with the paths written.
    """
    out = check_output_dir(out_dir)
    results_path = out / "results.tsv"
    run_path = out / "run.json"
    atomic_write_table(table, results_path)
    atomic_write_text(run_path, json.dumps(table.attrs.get("run", {}), indent=2, default=str) + "\n")
    return {"results": results_path, "run": run_path}
