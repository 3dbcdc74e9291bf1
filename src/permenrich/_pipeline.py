"""The shared pipeline behind every mode: option checks, loading, planning, batching,
provenance. Modes (:mod:`permenrich.api`) differ only in what a batch of permutations
is turned into and in the accumulator that reads it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import platform
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .design import ContinuousPhenotype, TwoGroupLabels, pair_codes, strata_codes
from .errors import ClassEmptiedError, InputError, OptionError, gene_set_inputs, option
from .genesets import GeneSetIndex, build_gene_set_index
from .io import (
    ExpressionData,
    apply_chip,
    collapse_duplicates,
    continuous_phenotype,
    design_from_phenotype,
    iter_gene_sets,
    read_expression,
    sample_annotation,
)
from .io.expression import check_constant_genes, first_out_of_range
from .io.geo import looks_like_series_matrix, warn_if_unlogged
from .io.phenotype import is_sample_sheet
from .stats.metrics import Metric

logger = logging.getLogger("permenrich")


TIE_RULE = ("genes ranked by decreasing statistic; ties ordered by row index after collapsing "
            "(lower index first); -0.0 == 0.0")

#: Largest memory budget taken (1 EB): anything larger is a typo.
MAX_MEMORY_BYTES = 10**18
_MEMORY_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


# ---- options ------------------------------------------------------------------------------
def parse_memory(memory: str | int) -> int:
    """Bytes from ``"1GB"``, ``"512MiB"``, ``"2e9"`` or an int."""
    if isinstance(memory, (int, np.integer)) and not isinstance(memory, bool):
        value = int(memory)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(memory))
        if not match or match.group(2).upper() not in _MEMORY_UNITS:
            raise OptionError(f"{option('memory')} must look like 512MB, 2GB or 1GiB, got {memory!r}")
        number = float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()]
        if not math.isfinite(number) or number > MAX_MEMORY_BYTES:
            raise OptionError(f"{option('memory')} {memory!r} is beyond any machine (over 1 EB); give the memory "
                              "to use, e.g. 16GB")
        value = int(number)
    if value < 10**6:
        raise OptionError(f"memory budget {memory!r} is below 1 MB; give at least {option('memory', '1MB')}")
    return value


def format_bytes(n_bytes: float) -> str:
    """A size as a user reads it: ``1.23 GB``, ``45.6 MB``, ``789 kB`` (powers of 1000, as
    ``--memory`` takes them; 999.6 MB is ``1 GB``, as three digits round it)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= 0.9995 * size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes / 1e3:.3g} kB"


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(f"{option(name)} must be one of {', '.join(choices)}, got {value!r}")


#: Most threads one run accepts (Numba starts them all as OS threads).
MAX_THREADS = 1024
#: Most permutations one run accepts: p-values down to 1e-10, hours on a GPU; a request
#: beyond it is almost certainly a typo that would run for years.
MAX_PERMUTATIONS = 10**10


def check_run_options(*, permutations: int, seed: int, batch_size: int | None, threads: int | None,
                      weight: float | None = None) -> None:
    """Options every permutation mode shares; raises :class:`OptionError`."""
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise OptionError(f"{option('permutations')} must be a positive integer, got {permutations!r}")
    if permutations > MAX_PERMUTATIONS:
        raise OptionError(f"{option('permutations', permutations)} is above the limit of {MAX_PERMUTATIONS:,} "
                          "(p-values down to 1e-10); ask for fewer")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise OptionError(f"{option('seed')} must be an integer in [0, 2**64), got {seed!r}")
    for name, value in (("batch_size", batch_size), ("threads", threads)):
        # 2.7 was cut to 2, "2" was a TypeError and 1.5 threads ran and was recorded
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise OptionError(f"{option(name)} must be a positive integer, got {value!r}")
    if threads is not None and int(threads) > MAX_THREADS:
        # each is an OS thread with its own stack: 100,000 of them crashed the process
        raise OptionError(f"{option('threads', threads)} is above the limit of {MAX_THREADS:,}; give at most "
                          "the machine's cores")
    if weight is not None and (not isinstance(weight, (int, float)) or isinstance(weight, bool)
                               or not math.isfinite(weight) or weight < 0):
        raise OptionError(f"{option('weight')} must be a finite number >= 0 (GSEA uses 0, 1, 1.5 or 2), got {weight!r}")


# ---- loading ------------------------------------------------------------------------------
@dataclass
class Study:
    """Expression values of the analysed samples and their design.

    ``values`` is a (n_genes, n_samples) array, or a
    :class:`permenrich.streaming.StreamedMatrix` when the matrix is streamed from disk.
    ``covariates``: with covariates, the Freedman–Lane statistic of the phenotype
    (:class:`permenrich.stats.covariates.CovariateStatistic`), else None.
    """

    values: Any
    gene_ids: np.ndarray
    design: TwoGroupLabels | ContinuousPhenotype
    source: str
    info: dict = field(default_factory=dict)
    covariates: Any = None

    @property
    def n_genes(self) -> int:
        return int(self.gene_ids.size)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.values, np.ndarray)

    @property
    def resident_bytes(self) -> int:
        """Bytes the study holds for the whole analysis: the matrix in memory (one copy, which
        the CPU backend's two-group statistics read in place) and, with covariates, the
        reduced model's residuals; 0 for a streamed matrix, whose blocks belong to each
        batch."""
        if not self.in_memory:
            return 0
        residuals = self.covariates.residuals_by_sample.nbytes if self.covariates is not None else 0
        return int(self.values.nbytes) + int(residuals)


@dataclass
class LoadedData:
    """Expression data read once and shared by every contrast of a run.

    ``data`` holds the values in memory, or only the sample ids and ``obs`` when
    ``source`` (an open :class:`permenrich.io.chunked.MatrixSource`) is streamed.
    """

    data: ExpressionData
    source: Any = None
    info: dict = field(default_factory=dict)
    #: Samples that log1p_cpm could not normalise (id -> why): refused only if analysed,
    #: as a streamed matrix refuses them (a contrast may leave them out).
    unusable: dict = field(default_factory=dict)
    #: Set when ``data`` holds missing or out-of-range values: they count only in the
    #: samples a study analyses, so the ``nan_policy``, the value range, normalisation and
    #: probe collapse wait for them.
    deferred: DeferredPreparation | None = None


@dataclass(frozen=True)
class DeferredPreparation:
    """What :func:`load_data` leaves to each study when the matrix has missing or
    out-of-range values."""

    chip: Any
    collapse: str
    normalize: str
    nan_policy: str

    def prepare(self, data: ExpressionData, analysed: np.ndarray) -> ExpressionData:
        """The analysed samples of ``data`` (a boolean mask), with the ``nan_policy``
        applied to them alone, normalised and collapsed.

        Raises
        ------
        InputError
            A gene missing in an analysed sample under ``nan_policy="error"``, a value out
            of range, or an analysed sample that cannot be normalised.
        """
        from .io.expression import apply_nan_policy

        obs = None if data.obs is None else data.obs.iloc[np.flatnonzero(analysed)]
        subset = ExpressionData(values=np.ascontiguousarray(data.values[:, analysed]), gene_ids=data.gene_ids,
                                sample_ids=np.asarray(data.sample_ids, dtype=object)[analysed], source=data.source,
                                obs=obs, dataset=data.dataset)
        subset = apply_nan_policy(subset, self.nan_policy, scope=" in the analysed samples")
        return prepare_values(subset, chip=self.chip, collapse=self.collapse, normalize=self.normalize)[0]


_HDF5_SUFFIXES = (".h5ad", ".h5", ".hdf5")


def _is_hdf5_path(expr: Any) -> bool:
    return isinstance(expr, (str, os.PathLike)) and str(expr).lower().endswith(_HDF5_SUFFIXES)


class _InMemorySource:
    """An in-memory ExpressionData seen as a one-block MatrixSource (for pseudobulk)."""

    storage = "in memory"

    def __init__(self, data: ExpressionData) -> None:
        self.data = data
        self.source = data.source
        self.gene_ids = data.gene_ids
        self.n_genes = data.n_genes

    def blocks(self, max_block_bytes: int, samples: np.ndarray | None = None) -> Iterator[Any]:
        from types import SimpleNamespace

        values = np.ascontiguousarray(self.data.values.T)
        yield SimpleNamespace(sample_start=0, sample_stop=values.shape[0], gene_start=0, gene_stop=self.n_genes,
                              values=values)


def load_data(expr: Any, *, chip: Any, collapse: str, nan_policy: str, normalize: str, budget: int,
              pseudobulk: str | None = None, pseudobulk_keys: tuple[str, ...] = (),
              pseudobulk_method: str = "sum", layer: str | None = None, use_raw: bool = False,
              min_cells: int = 10, compared: tuple[str, frozenset[str]] | None = None) -> LoadedData:
    """Read (or open for streaming) the expression data, pseudobulk and normalise it.

    A matrix stored in HDF5/h5ad/10x whose dense float64 size exceeds half the memory
    budget is streamed from disk for every pass; otherwise it is read into memory once.
    With ``pseudobulk``, cells are summed (or averaged) per combination of the
    ``pseudobulk`` column and ``pseudobulk_keys`` (e.g. the group column), streaming;
    pseudo-samples of fewer than ``min_cells`` cells are then dropped (0 keeps all).
    ``layer``/``use_raw`` choose the matrix of an h5ad or AnnData (``layers[layer]`` or
    ``raw.X``; default ``X``). Design warnings (see :func:`design_warnings`) are logged
    and kept in ``info["warnings"]``; ``compared`` (a group column and the levels a run
    compares) confines the warning about dropped pseudo-samples to those levels.
    """
    from .io.expression import _is_anndata, check_layer_options, data_place, open_hdf5_matrix
    from .streaming import NORMALISATIONS, pseudobulk_expression

    check_choice("collapse", collapse, ("mean", "max", "median"))
    check_choice("nan_policy", nan_policy, ("error", "drop"))
    check_choice("normalize", normalize, NORMALISATIONS)
    check_layer_options(layer, use_raw)
    info: dict[str, Any] = {"normalize": normalize}
    if layer is not None or use_raw:
        info["matrix"] = "raw.X" if use_raw else f"layers[{layer!r}]"
    block_bytes = max(1 << 20, budget // 8)
    source = None
    if _is_hdf5_path(expr) and chip is None:
        source = open_hdf5_matrix(expr, layer=layer, use_raw=use_raw)
        info["source_storage"] = source.storage
        if pseudobulk is None and source.nbytes <= budget // 2:
            source.close()
            source = None
    if source is not None:
        if normalize == "log1p_cpm":
            _warn_unless_counts(_first_cells(source), data_place(source.source, source.dataset), info)
        if pseudobulk is None:
            _warn_if_pseudoreplicated(source.obs, source.source, info)
    if pseudobulk is not None:
        if source is None:
            data = read_expression(expr, nan_policy=nan_policy, layer=layer, use_raw=use_raw)
            if normalize == "log1p_cpm":
                _warn_unless_counts(data.values, data_place(data.source, data.dataset), info)
            if data.obs is None:
                raise InputError(f"{data.source}: {option('pseudobulk')} needs per-cell annotations (an h5ad or "
                                 "AnnData obs)")
            matrix_source: Any = _InMemorySource(data)
            obs = data.obs
        else:
            matrix_source, obs = source, source.obs
            if obs is None:
                raise InputError(f"{source.source}: {option('pseudobulk')} needs per-cell annotations (an h5ad obs); "
                                 "this file has none")
        columns = list(dict.fromkeys([pseudobulk, *pseudobulk_keys]))
        missing = [c for c in columns if c not in obs.columns]
        if missing:
            raise InputError(f"{matrix_source.source}: column {missing[0]!r} not in obs; available columns: "
                             f"{', '.join(map(str, list(obs.columns)[:10]))}")
        data = pseudobulk_expression(matrix_source, obs[columns].reset_index(drop=True), method=pseudobulk_method,
                                     max_block_bytes=block_bytes, max_result_bytes=budget // 2)
        if source is not None:
            source.close()
        unkeyed = len(obs) - int(data.obs["n_cells"].sum())
        if unkeyed:
            design_warning(info, f"{matrix_source.source}: {unkeyed} of {len(obs)} cells have no value in "
                                 f"{' or '.join(repr(c) for c in columns)} and are left out of the pseudobulk")
        data, dropped = _drop_small_pseudo_samples(data, min_cells, columns, info, compared)
        cells = data.obs["n_cells"]
        if pseudobulk_method == "sum" and normalize != "log1p_cpm" and cells.min() != cells.max():
            design_warning(info, f"{matrix_source.source}: pseudo-samples summed over {int(cells.min())} to "
                                 f"{int(cells.max())} cells and not normalised: each one's values grow with its "
                                 f"number of cells, which then decides the test; give "
                                 f"{option('normalize', 'log1p_cpm')} (counts) or "
                                 f"{option('pseudobulk_method', 'mean')} (normalised data)")
        info.update({"matrix_storage": "in memory (pseudobulk)", "pseudobulk": {
            "by": columns, "method": pseudobulk_method, "samples": int(data.n_samples),
            "cells_per_sample_min": int(data.obs["n_cells"].min()),
            "cells_per_sample_max": int(data.obs["n_cells"].max()), "min_cells": int(min_cells),
            "cells_without_keys": unkeyed, **dropped}})
        source = None
    elif source is not None and normalize == "log2":
        source.close()
        raise OptionError(f"{option('normalize', 'log2')} needs the matrix in memory, but {source.source} is streamed "
                          f"(larger than half of {option('memory')}): raise {option('memory')}")
    elif source is not None:
        ids = pd.Index(source.gene_ids)
        if ids.has_duplicates:
            raise InputError(f"{source.source}: duplicated gene ids (e.g. {str(ids[ids.duplicated()][0])!r}); a "
                             "streamed matrix cannot be collapsed on the fly: deduplicate the genes in the file, "
                             f"or raise {option('memory')} so that it is read into memory and collapsed")
        header = ExpressionData(values=np.empty((0, source.n_samples)), gene_ids=np.empty(0, dtype=object),
                                sample_ids=np.asarray(source.sample_ids, dtype=object), source=source.source,
                                obs=source.obs)
        info.update({"matrix_storage": "streamed from disk", "dense_bytes": int(source.nbytes),
                     "max_block_bytes": block_bytes})
        return LoadedData(header, source, info)
    else:
        # A missing value counts only in the samples analysed (as for a streamed matrix):
        # the nan_policy waits for the study (DeferredPreparation).
        data = read_expression(expr, nan_policy="defer", layer=layer, use_raw=use_raw)
        info["matrix_storage"] = "in memory"
        if data.values.nbytes > budget // 2 and isinstance(expr, (str, os.PathLike)) and not _is_hdf5_path(expr):
            design_warning(info, f"{data.source}: read whole ({format_bytes(data.values.nbytes)} as float64), over "
                                 f"half of {option('memory')}: a text matrix cannot be streamed; write it as an h5ad "
                                 "file to stream it within the budget, or raise the budget")
        if normalize == "none" and looks_like_series_matrix(expr):
            warn_if_unlogged(data)
        if normalize == "log1p_cpm":
            _warn_unless_counts(data.values, data_place(data.source, data.dataset), info)
        if _is_hdf5_path(expr) or _is_anndata(expr):  # cells; not the annotated samples of a GEO series
            _warn_if_pseudoreplicated(data.obs, data.source, info)
    # A missing or out-of-range value counts only in the samples analysed, as streamed:
    # then each study prepares its own samples (only read "defer"s them; pseudobulk cells
    # follow nan_policy, and their sums are checked).
    if first_out_of_range(data.values) is not None:
        return LoadedData(data, None, info, deferred=DeferredPreparation(chip, collapse, normalize, nan_policy))
    data, unusable = prepare_values(data, chip=chip, collapse=collapse, normalize=normalize, unusable={})
    return LoadedData(data, None, info, unusable)


def prepare_values(data: ExpressionData, *, chip: Any, collapse: str, normalize: str,
                   unusable: dict[Any, str] | None = None) -> tuple[ExpressionData, dict[Any, str]]:
    """Normalise, collapse probes (``chip``) or duplicated ids, and lay the matrix out
    samples-major. With ``unusable`` (a dict), samples that cannot be normalised are
    recorded there instead of refused."""
    from .streaming import log1p_cpm, log2_values

    # Normalised before probes or duplicated ids are merged: a library size is the sum of
    # every count of the sample, as a streamed matrix's is.
    if normalize in ("log1p_cpm", "log2"):
        values = (log1p_cpm(data.values, source=data, unusable=unusable) if normalize == "log1p_cpm"
                  else log2_values(data))
        data = ExpressionData(values=values, gene_ids=data.gene_ids, sample_ids=data.sample_ids, source=data.source,
                              dataset=data.dataset, obs=data.obs)
    data = apply_chip(data, chip, method=collapse) if chip is not None else collapse_duplicates(data, method=collapse)
    # Samples-major (values.T C-ordered), once: the kernels read samples x genes, so the
    # backend and the t tests' p-values read it in place, and a study of every sample (or
    # each one-vs-rest contrast) shares this one copy, which the budget counts.
    return dataclasses.replace(data, values=np.asfortranarray(data.values)), (unusable or {})


# ---- design warnings -------------------------------------------------------------------------
#: Largest value of a matrix that looks log-transformed rather than counts (log1p of a
#: million is 13.8; a count matrix holds values far above 50 unless it is tiny).
LOG_SCALE_MAX = 50.0
#: obs columns that name the biological replicate of a cell (compared in lower case).
REPLICATE_COLUMNS = ("donor", "sample", "patient", "individual", "subject", "donor_id", "sample_id",
                     "patient_id", "individual_id", "subject_id")
#: A design whose smallest attainable p-value is above this is announced.
P_FLOOR_WARNING = 0.01


def _drop_small_pseudo_samples(data: ExpressionData, min_cells: int, columns: list[str], info: dict,
                               compared: tuple[str, frozenset[str]] | None = None) -> tuple[ExpressionData, dict]:
    """Drop the pseudo-samples of fewer than ``min_cells`` cells (their sums are too noisy
    to weigh like the others), with one design warning naming them (those of the
    ``compared`` levels only, when given: the others are not analysed). Returns the kept
    data and, when any was dropped, ``{"dropped": [...], "levels_dropped": {column:
    [...]}}``: the levels of each key column left without any pseudo-sample (a class
    emptied)."""
    n_cells = np.asarray(data.obs["n_cells"])
    small = n_cells < min_cells
    if not small.any():
        return data, {}
    names = [str(s) for s in data.sample_ids[small]]
    if small.all():
        raise InputError(f"{data.source}: every pseudo-sample has fewer than {option('min_cells', min_cells)} cells "
                         f"(at most {int(n_cells.max())}); lower {option('min_cells')}")
    obs = data.obs
    said = small
    if compared is not None and compared[0] in obs.columns:
        said = small & obs[compared[0]].astype(str).isin(compared[1]).to_numpy()
    if said.any():
        said_names = [str(s) for s in data.sample_ids[said]]
        shown = ", ".join(f"{name} ({int(n)})" for name, n in zip(said_names[:10], n_cells[said][:10]))
        more = f" and {len(said_names) - 10} more" if len(said_names) > 10 else ""
        design_warning(info, f"{data.source}: dropped {len(said_names)} of {data.n_samples} pseudo-samples with "
                             f"fewer than {option('min_cells', min_cells)} cells: {shown}{more}")
    levels_dropped = {column: sorted(set(map(str, obs.loc[small, column])) - set(map(str, obs.loc[~small, column])))
                      for column in columns}
    kept = ExpressionData(values=np.ascontiguousarray(data.values.T[~small]).T, gene_ids=data.gene_ids,
                          sample_ids=data.sample_ids[~small], source=data.source, obs=obs.loc[~small],
                          dataset=data.dataset)
    return kept, {"dropped": names, "levels_dropped": {c: v for c, v in levels_dropped.items() if v}}


def _check_classes_kept(info: dict, groupby: str | None, case: str | None, control: str | None) -> None:
    """A one-line error when ``min_cells`` dropped every pseudo-sample of a compared class
    (instead of a puzzling "class not found" later)."""
    pseudo = info.get("pseudobulk") or {}
    emptied = (pseudo.get("levels_dropped") or {}).get(groupby) if groupby is not None else None
    if not emptied:
        return
    named = [c for c in (case, control) if c is not None and c != "rest"]
    lost = [c for c in named if str(c) in emptied] if named else emptied
    if lost:
        raise ClassEmptiedError(f"{option('min_cells', pseudo['min_cells'])} dropped every pseudo-sample of "
                                f"{groupby} {lost[0]!r} (each has fewer cells); lower {option('min_cells')}",
                                level=str(lost[0]))


def design_warning(info: dict, message: str) -> None:
    """Log a design warning on the package logger (shown by the CLI) and keep it in
    ``info["warnings"]``, which run.json holds as ``design.warnings``. A new list, since
    the contrasts of one run share the info they were loaded with."""
    logger.warning("%s", message)
    info["warnings"] = [*info.get("warnings", []), message]


def _first_cells(source: Any, n_cells: int = 2000) -> np.ndarray:
    """The first block of up to ``n_cells`` samples of an open matrix (what a count check
    looks at for a matrix too large to read whole)."""
    blocks = source.blocks(1 << 24, samples=np.arange(min(n_cells, source.n_samples)))
    try:
        return next(iter(blocks)).values.copy()
    finally:
        blocks.close()


def _warn_unless_counts(values: np.ndarray, where: str, info: dict) -> None:
    """``normalize="log1p_cpm"`` on values that look already normalised: non-integer and
    all below :data:`LOG_SCALE_MAX` (negative values are refused later, with their place)."""
    finite = values[np.isfinite(values)] if not np.isfinite(values).all() else values
    if finite.size == 0 or finite.min() < 0 or finite.max() >= LOG_SCALE_MAX:
        return
    columns = finite if finite.ndim == 1 else finite[:, :max(1, 4_000_000 // max(1, finite.shape[0]))]
    if np.array_equal(columns, np.floor(columns)):
        return
    chosen = info.get("matrix")  # layer= or use_raw= given already: another matrix is needed
    fix = (f"pass the counts, e.g. {option('layer', 'counts')} or {option('use_raw', True)}" if chosen is None
           else f"{chosen} holds no counts: pass the layer that does, or give the data as normalised "
                f"({option('normalize', 'none')})")
    design_warning(info, f"{where}: {option('normalize', 'log1p_cpm')} expects raw counts, but the values are "
                         f"non-integer and at most {float(finite.max()):.3g} (log-transformed or normalised?); "
                         f"{fix}")


def _warn_if_pseudoreplicated(obs: pd.DataFrame | None, where: str, info: dict) -> None:
    """Cell-level permutation of annotated cells whose obs names their donors or samples
    (a column like ``donor`` with fewer levels than cells): the cells are not independent."""
    if obs is None:
        return
    for column in obs.columns:
        if str(column).strip().lower() in REPLICATE_COLUMNS:
            n_levels = int(obs[column].nunique(dropna=True))
            if 0 < n_levels < len(obs):
                design_warning(info, f"{where}: labels are permuted across {len(obs)} cells, but obs[{column!r}] "
                                     f"groups them into {n_levels} {column} levels: cells of one {column} are not "
                                     "independent replicates (pseudoreplication, p-values far too small); pass "
                                     f"{option('pseudobulk', column)} to test the {column}s")
                return


#: Covariate models leaving fewer residual degrees of freedom than this are warned about.
FEW_RESIDUAL_DF = 5


def annotation_source(data: ExpressionData, phenotype: Any) -> str:
    """Where per-sample annotations (strata, pairs, covariates) come from, for messages:
    the sample sheet's path, a DataFrame, else the expression data (an h5ad's obs, a GEO
    series' characteristics; a CLS file holds only the labels)."""
    if isinstance(phenotype, (str, os.PathLike)) and is_sample_sheet(phenotype):
        return str(phenotype)
    return "<DataFrame>" if isinstance(phenotype, pd.DataFrame) else data.source


def make_study(loaded: LoadedData, phenotype: Any, *, metric: Metric, groupby: str | None, case: str | None,
               control: str | None, phenotype_column: str | None, strata: str | None, pairs: str | None,
               zero_variance: str, covariates: Sequence[str] | None = None, nan_policy: str = "error") -> Study:
    """The analysed samples of ``loaded`` and their design (labels, strata; with
    ``covariates``, the phenotype as a number and the reduced model's design, for
    Freedman–Lane permutations)."""
    from .streaming import StreamedMatrix

    check_choice("zero_variance", zero_variance, ("error", "drop"))
    if strata is not None and pairs is not None:
        raise OptionError(f"give either {option('strata')} or {option('pairs')}, not both")
    data = loaded.data
    info: dict[str, Any] = dict(loaded.info)
    if metric.kind == "correlation":
        if pairs is not None:
            raise OptionError(f"{option('pairs')} apply to two-group designs; use {option('strata')} for a continuous "
                              "phenotype")
        for name, value in (("groupby", groupby), ("case", case), ("control", control)):
            if value is not None:  # a correlation has no groups: the option would be ignored
                raise OptionError(f"{option(name)} chooses the groups of a two-group metric; {metric.name} "
                                  f"correlates with the numeric {option('phenotype_column')}: drop {option(name)}")
        name, numbers = continuous_phenotype(data, phenotype, phenotype_column)
        keep = np.ones(data.n_samples, dtype=bool)
        stratum = (strata_codes(sample_annotation(data, phenotype, strata, what="strata"),
                                source=annotation_source(data, phenotype), sample_ids=data.sample_ids)
                   if strata is not None else None)
        design: TwoGroupLabels | ContinuousPhenotype = ContinuousPhenotype(numbers, stratum)
        info.update({"phenotype": name, "n_samples": int(numbers.size)})
    else:
        if phenotype_column is not None:
            raise OptionError(f"{option('phenotype_column')} is the numeric phenotype of the correlation metrics; "
                              f"give {option('metric', 'pearson')} (or spearman), or drop it for a two-group "
                              f"analysis of {metric.name}")
        _check_classes_kept(info, groupby, case, control)
        two = design_from_phenotype(data, phenotype, groupby=groupby, case=case, control=control)
        keep = np.asarray(two.keep, dtype=bool)
        is_case = np.asarray(two.is_case, dtype=bool)
        stratum = None
        kept_ids = np.asarray(data.sample_ids, dtype=object)[keep]
        if strata is not None:
            stratum = strata_codes(sample_annotation(data, phenotype, strata, what="strata")[keep],
                                   source=annotation_source(data, phenotype), sample_ids=kept_ids)
            _refuse_one_class_strata(is_case, stratum, annotation_source(data, phenotype), strata, two)
        elif pairs is not None:
            stratum = pair_codes(sample_annotation(data, phenotype, pairs, what="pairs")[keep], is_case,
                                 source=annotation_source(data, phenotype))
        design = TwoGroupLabels(is_case, stratum)
        info.update({"case": two.case, "control": two.control, "n_case": two.n_case,
                     "n_control": two.n_control, "n_samples_excluded": int((~keep).sum())})
        if two.excluded:
            info["excluded_classes"] = dict(two.excluded)
    info["strata"] = strata
    info["pairs"] = pairs
    reduced_design = None
    if covariates:
        from .io.phenotype import is_missing
        from .stats.covariates import covariate_column, covariate_matrix

        if loaded.source is not None:
            raise OptionError(f"{option('covariates')} need the matrix in memory, but {data.source} is streamed "
                              f"(larger than half of {option('memory')}): raise {option('memory')} or use "
                              f"{option('pseudobulk')}")
        columns = {name: sample_annotation(data, phenotype, covariate_column(name)[0], what="covariate")[keep]
                   for name in covariates}
        if nan_policy == "drop":  # samples without a covariate value leave the analysis
            complete = np.ones(int(keep.sum()), dtype=bool)
            for values in columns.values():
                complete &= np.array([not is_missing(str(v)) for v in values])
            if not complete.all():
                logger.warning("%s: %d analysed sample(s) lack a covariate value and are left out (nan_policy "
                               "'drop')", data.source, int((~complete).sum()))
                positions = np.flatnonzero(keep)
                keep = keep.copy()
                keep[positions[~complete]] = False
                columns = {name: values[complete] for name, values in columns.items()}
                design = _subset_design(design, complete)
                if isinstance(design, TwoGroupLabels):  # the classes as analysed
                    info.update({"n_case": int(design.is_case.sum()), "n_control": int((~design.is_case).sum())})
                    if design.strata is not None and strata is not None:
                        _refuse_one_class_strata(design.is_case, design.strata, annotation_source(data, phenotype),
                                                 strata, two)
                info["n_samples_without_covariates"] = int((~complete).sum())
        reduced_design, terms = covariate_matrix(columns, annotation_source(data, phenotype),
                                                 sample_ids=np.asarray(data.sample_ids, dtype=object)[keep])
        x = design.values if isinstance(design, ContinuousPhenotype) else design.is_case.astype(np.float64)
        # residuals move, not labels; the strata of the samples analysed (after any drop)
        design = ContinuousPhenotype(np.asarray(x, dtype=np.float64), design.strata)
        info["covariates"] = terms
        info["permutation_of"] = "residuals of expression ~ covariates (Freedman-Lane)"
    if loaded.source is not None:
        if metric.kind != "two_group" or metric.rank_transform or metric.positive_values:
            raise OptionError(f"metric {metric.name} needs the matrix in memory, but {data.source} is streamed "
                              f"(larger than half of {option('memory')}): raise {option('memory')}, use "
                              f"{option('pseudobulk')}, or choose "
                              "signal_to_noise, t_test, diff_of_classes, student_t or welch_t")
        matrix = StreamedMatrix(loaded.source, np.flatnonzero(keep), max_block_bytes=info["max_block_bytes"],
                                normalise=info.get("normalize", "none"), zero_variance=zero_variance)
        return Study(matrix, matrix.gene_ids, design, data.source, info)
    if loaded.deferred is not None:  # missing values, which count in the analysed samples only
        data = loaded.deferred.prepare(data, keep)
        keep = np.ones(data.n_samples, dtype=bool)
    if loaded.unusable:  # samples log1p_cpm could not normalise, analysed here: refused as streaming does
        for sample in np.asarray(data.sample_ids, dtype=object)[keep]:
            if sample in loaded.unusable:
                raise InputError(loaded.unusable[sample])
    # Samples-major as loaded (load_data); a subset of the samples is copied, as such.
    values = data.values if keep.all() else np.ascontiguousarray(data.values.T[keep]).T
    gene_ids = np.asarray(data.gene_ids, dtype=object)
    if metric.positive_values and (values <= 0).any():
        row = int(np.flatnonzero((values <= 0).any(axis=1))[0])
        raise InputError(f"{data.source}: metric {metric.name} divides class means and needs positive values, "
                         f"but gene {gene_ids[row]!r} has a value <= 0; use signal_to_noise, t_test or "
                         "diff_of_classes for log-scale or centred data")
    values, gene_ids = _drop_constant_genes(values, gene_ids, zero_variance, data.source)
    statistic = None
    if reduced_design is not None:
        from .stats.covariates import CovariateStatistic

        statistic = CovariateStatistic(values, design.values, reduced_design, data.source)
        info["residual_df"] = statistic.df
        if statistic.df < FEW_RESIDUAL_DF:
            logger.warning("%s: %d samples leave %d residual degree(s) of freedom after %d covariate term(s): each "
                           "gene's t rests on a variance estimated from almost nothing, and the test has little "
                           "power; use fewer covariates or more samples", data.source, design.n_samples,
                           statistic.df, reduced_design.shape[1] - 1)
    return Study(values, gene_ids, design, data.source, info, covariates=statistic)


def _refuse_one_class_strata(is_case: np.ndarray, stratum: np.ndarray, source: str, strata: str, two: Any) -> None:
    """Refuse strata that each hold one class: no label can move, and with covariates the
    residuals move only among samples of one class, which leaves every class difference
    as it was (the test then has no power at all)."""
    if not any(np.unique(is_case[stratum == code]).size == 2 for code in range(int(stratum.max()) + 1)):
        raise InputError(f"{source}: every stratum of {option('strata', strata)} holds one class only, so no label "
                         f"can move and no permutation test is possible; use a stratum column that mixes "
                         f"{two.case!r} and {two.control!r}, or leave {option('strata')} out")


def _subset_design(design: TwoGroupLabels | ContinuousPhenotype, rows: np.ndarray
                   ) -> TwoGroupLabels | ContinuousPhenotype:
    """The design of a subset of the analysed samples (strata kept, renumbered)."""
    strata = None if design.strata is None else np.unique(design.strata[rows], return_inverse=True)[1]
    if isinstance(design, ContinuousPhenotype):
        return ContinuousPhenotype(design.values[rows], strata)
    return TwoGroupLabels(design.is_case[rows], strata)


def load_study(expr: Any, phenotype: Any, *, metric: Metric, groupby: str | None, case: str | None,
               control: str | None, phenotype_column: str | None, strata: str | None, pairs: str | None,
               chip: Any, collapse: str, nan_policy: str, zero_variance: str, normalize: str = "none",
               budget: int = 10**9, pseudobulk: str | None = None, pseudobulk_method: str = "sum",
               covariates: Sequence[str] | None = None, layer: str | None = None, use_raw: bool = False,
               min_cells: int = 10) -> Study:
    """Read the expression data (unless ``expr`` is already :class:`LoadedData`) and the
    phenotype into a :class:`Study`."""
    from .stats.covariates import covariate_column

    columns = [covariate_column(name)[0] for name in covariates or ()]
    keys = tuple(c for c in (groupby, strata, pairs, phenotype_column, *columns) if c is not None)
    # Two named levels: only their pseudo-samples are analysed (against "rest", all are).
    compared = (groupby, frozenset(map(str, (case, control)))) if (
        groupby is not None and case is not None and control not in (None, "rest")) else None
    loaded = expr if isinstance(expr, LoadedData) else load_data(
        expr, chip=chip, collapse=collapse, nan_policy=nan_policy, normalize=normalize,
        budget=budget, pseudobulk=pseudobulk, pseudobulk_keys=keys, pseudobulk_method=pseudobulk_method,
        layer=layer, use_raw=use_raw, min_cells=min_cells, compared=compared)
    return make_study(loaded, phenotype, metric=metric, groupby=groupby, case=case, control=control,
                      phenotype_column=phenotype_column, strata=strata, pairs=pairs, zero_variance=zero_variance,
                      covariates=covariates, nan_policy=nan_policy)


def _drop_constant_genes(values: np.ndarray, gene_ids: np.ndarray, policy: str,
                         source: str) -> tuple[np.ndarray, np.ndarray]:
    constant = np.ptp(values, axis=1) == 0
    check_constant_genes(constant, gene_ids, policy, source)
    if not constant.any():
        return values, gene_ids
    return np.ascontiguousarray(values.T[:, ~constant]).T, gene_ids[~constant]  # samples-major, one copy


def load_gene_sets(gene_sets: Any, gene_ids: np.ndarray, *, min_size: int, max_size: int,
                   allow_full: bool = False) -> GeneSetIndex:
    """Read gene sets and index them against ``gene_ids`` as they are read (only the sets
    within the size bounds are kept; ``index.n_read`` counts every set read). A set holding every
    gene is refused, unless ``allow_full`` (ORA gives it p = 1)."""
    if gene_sets is None:
        raise OptionError(f"{option('gene_sets')} is required: give {gene_set_inputs()}")
    index = build_gene_set_index(iter_gene_sets(gene_sets), gene_ids, min_size=min_size, max_size=max_size)
    full = np.flatnonzero(index.sizes >= len(gene_ids))
    if full.size and not allow_full:
        raise InputError(f"{index.sources[full[0]]}: gene set {index.names[full[0]]!r} contains all "
                         f"{len(gene_ids)} analysed genes; an enrichment score needs genes outside the set: "
                         "check that the expression data or ranked list is complete")
    return index


# ---- running permutations ------------------------------------------------------------------
#: Fewest permutations per batch (below it, per-batch overheads dominate): a budget that
#: holds fewer is exceeded, with a warning.
MIN_BATCH = 64


def choose_batch_size(batch_size: int | None, budget: int, bytes_per_permutation: int, n_perm: int,
                      streamed: bool = False) -> int:
    """Permutations per batch: explicit, or from the budget (a quarter of it for a batch's
    buffers), capped so that a run reports progress about 20 times.

    A streamed matrix is read from disk once per batch, so its batches take all the
    budget allows (no progress cap): the file is then read as few times as memory permits.
    """
    if batch_size is not None:
        return min(int(batch_size), n_perm)
    fit = budget // 4 // max(1, bytes_per_permutation)
    if fit < MIN_BATCH and n_perm > fit:
        logger.warning("a quarter of %s holds the buffers of %d permutations (%s each); batches take %d, %s, above "
                       "the budget: raise %s", option("memory"), fit, format_bytes(bytes_per_permutation),
                       min(n_perm, MIN_BATCH), format_bytes(min(n_perm, MIN_BATCH) * bytes_per_permutation),
                       option("memory"))
    if streamed:
        return int(min(n_perm, max(MIN_BATCH, fit)))
    return int(min(n_perm, max(MIN_BATCH, min(fit, 8192, max(256, -(-n_perm // 20))))))


COMPILE_NOTICE = "compiling kernels (first run only: about a minute; cached for later runs)"
#: ``extra`` of a notice about the process, not the analysis: run.json does not keep it.
CONSOLE_ONLY = {"console_only": True}
# Whether this process has said COMPILE_NOTICE, and the listener that says it.
_compile_notice = {"given": False, "listener": None}


def watch_compilation() -> None:
    """Say, once per process (a WARNING on the package logger, shown by the CLI), when
    one of permenrich's kernels starts compiling: Numba's on-disk cache lacks it, and
    compiling takes about a minute. Loading a cached kernel, or compiling code of another
    package, says nothing: the notice listens to Numba's compile events, which fire only
    when compiling starts, so it is said exactly when it is true."""
    if _compile_notice["listener"] is not None:
        return
    from numba.core import event

    class CompileNotice(event.Listener):
        def on_start(self, started: event.Event) -> None:
            function = getattr(started.data.get("dispatcher"), "py_func", None)
            module = getattr(function, "__module__", None) or ""
            if module.split(".")[0] == "permenrich" and not _compile_notice["given"]:
                _compile_notice["given"] = True
                logger.warning(COMPILE_NOTICE, extra=CONSOLE_ONLY)

        def on_end(self, ended: event.Event) -> None:
            pass

    _compile_notice["listener"] = CompileNotice()
    event.register("numba:compile", _compile_notice["listener"])


# ---- provenance -----------------------------------------------------------------------------
def file_digest(source: Any) -> dict[str, str] | None:
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return {"path": str(Path(source).resolve()), "sha256": digest.hexdigest()}
    return None


def digests(sources: Any) -> list[dict[str, str]]:
    if sources is None or isinstance(sources, Mapping):
        return []
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    return [d for d in (file_digest(s) for s in sources) if d]


def versions() -> dict[str, str]:
    import numba
    import scipy

    return {"permenrich": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
            "platform": platform.platform()}
