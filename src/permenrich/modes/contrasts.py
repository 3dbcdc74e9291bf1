"""Many contrasts over one read of the data (:func:`contrasts`) and writing results."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._pipeline import (
    load_data,
    file_digest,
    parse_memory,
)
from ..errors import InputError, OptionError, option
from ..io import sample_annotation
from ..io.expression import _preview
from ..io.manifest import read_manifest_rows
from ..io.output import write_output_dir
from ..options import check_options
from ..runner import WarningsRecorded
from ._shared import provenance
from .genes import genes
from .gsea import gsea


# Names of the files beside the per-contrast tables, compared in lower case: macOS and
# Windows file systems ignore case, so "A" and "a" must not share a file there either.
_RESERVED_STEMS = ("results", "run")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_STEM = 100  # file names are limited to 255 bytes; leave room for suffixes


def contrast_file_names(names: Iterable[str]) -> dict[str, str]:
    """The file (``<stem>.tsv`` in the output folder) that holds each contrast's table.

    Parameters
    ----------
    names : iterable of str
        Contrast names, distinct, in output order.

    Returns
    -------
    dict of str to str
        Contrast name -> file name. Runs of characters other than letters, digits, ``_``,
        ``.`` and ``-`` become one ``_`` (``"CD4+/CD25 T Reg_vs_rest"`` ->
        ``"CD4_CD25_T_Reg_vs_rest.tsv"``); leading and trailing ``.``, ``_`` and ``-``
        are dropped (no hidden files); stems are cut to 100 characters; a stem that is
        empty becomes ``contrast``. A stem already taken, ignoring case, by an earlier
        contrast or by ``results`` / ``run`` (the run's own files) gets ``-2``, ``-3``,
        ...: distinct names always get distinct files.
    """
    taken = set(_RESERVED_STEMS)
    files = {}
    for name in names:
        stem = _UNSAFE.sub("_", name).strip("._-")[:_MAX_STEM].rstrip("._-") or "contrast"
        candidate, number = stem, 1
        while candidate.lower() in taken:
            number += 1
            candidate = f"{stem}-{number}"
        taken.add(candidate.lower())
        files[name] = f"{candidate}.tsv"
    return files


#: The columns of a contrasts table, every one required.
CONTRAST_COLUMNS = ("name", "groupby", "case", "control")


def read_contrasts(spec: Any, *, one_vs_rest: str | None = None, levels: list[str] | None = None) -> pd.DataFrame:
    """Contrasts as a table with columns ``name, groupby, case, control``.

    ``spec``: a TSV/CSV file or a DataFrame with those columns (``control`` may be
    ``rest``: every other level), or None with ``one_vs_rest`` naming a column whose
    ``levels`` each become one contrast against the rest. Names may be any non-empty
    text, distinct; :func:`contrast_file_names` maps them to file names.
    """
    if spec is None:
        if one_vs_rest is None:
            raise InputError("give contrasts (a table of name, groupby, case, control) or a one-vs-rest column")
        return pd.DataFrame({"name": [f"{level}_vs_rest" for level in levels], "groupby": one_vs_rest,
                             "case": levels, "control": "rest"})
    if isinstance(spec, pd.DataFrame):
        table, where = spec.copy(), "<contrasts>"
    else:
        # the manifests' reader: line numbers, '#' comment lines only, a row longer than its header refused
        where = str(spec)
        rows = read_manifest_rows(spec, columns=CONTRAST_COLUMNS, required=CONTRAST_COLUMNS, what="contrasts table",
                                  entry="contrast", other_columns=True)
        for row in rows:
            if row["case"] == row["control"]:
                raise InputError(f"{where}: line {row.line}: contrast {row['name']!r} compares {row['case']!r} with "
                                 "itself; give two different levels (or control 'rest')")
        table = pd.DataFrame(rows, columns=list(CONTRAST_COLUMNS))
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("name", "groupby", "case", "control") if c not in table.columns]
    if missing:
        raise InputError(f"{where}: contrasts need the columns name, groupby, case, control; missing {missing[0]!r}")
    if table.empty:
        raise InputError(f"{where}: no contrast listed")
    for row, name in enumerate(table["name"], start=1):
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{where}: contrast {row} has no name (got {name!r}); give every contrast a name")
    if table.name.duplicated().any():
        raise InputError(f"{where}: contrast name {table.name[table.name.duplicated()].iloc[0]!r} is used twice")
    contrasts = table[["name", "groupby", "case", "control"]].reset_index(drop=True)
    # Where each contrast was given, for the messages about its levels.
    contrasts.attrs["places"] = ([f"{where}: line {row.line}" for row in rows] if not isinstance(spec, pd.DataFrame)
                                 else [f"{where}: row {i}" for i in range(1, len(contrasts) + 1)])
    return contrasts


def _check_contrast_options(mode: str, gene_sets: Any, options: dict[str, Any]) -> None:
    """Refuse, before the matrix is read, what each contrast would override or ignore:
    the groups (the contrasts name them), gene sets in genes mode, and a keyword the
    mode's function does not take (a misspelling was a TypeError after the reading)."""
    import inspect

    for name in ("case", "control", "groupby"):
        if options.get(name) is not None:
            raise OptionError(f"the contrasts name the groups of every contrast; drop {option(name)}")
    if mode == "genes" and gene_sets is not None:
        raise OptionError(f"{option('mode', 'genes')} tests genes: drop {option('gene_sets')}, or give "
                          f"{option('mode', 'gsea')}")
    function = gsea if mode == "gsea" else genes
    accepted = set(inspect.signature(function).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise OptionError(f"{unknown[0]}= is not an option of {function.__name__}() (what each contrast runs); "
                          f"check its spelling")


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
    normalize: Literal["none", "log1p_cpm", "log2"] = "none",
    pseudobulk: str | None = None,
    pseudobulk_method: Literal["sum", "mean"] = "sum",
    min_cells: int = 10,
    layer: str | None = None,
    use_raw: bool = False,
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
    mode
        ``"gsea"`` or ``"genes"``: what each contrast runs.
    one_vs_rest
        A group column: every level against all other samples.
    phenotype
        A sample sheet holding the group columns (default: the h5ad's obs).
    chip, collapse, nan_policy, normalize, pseudobulk, pseudobulk_method, min_cells, layer, use_raw, memory
        As in :func:`gsea`; applied once for all contrasts.
    **options
        Passed to the mode's function for every contrast (metric, permutations, seed, ...).

    Returns
    -------
    pandas.DataFrame
        The mode's results of all contrasts, with a leading ``contrast`` column;
        ``attrs["run"]["contrasts"]`` holds each contrast's run provenance,
        ``attrs["run"]["contrast_files"]`` the file that :func:`write_results` gives each
        contrast's table (:func:`contrast_file_names`) and ``attrs["per_contrast"]`` each
        contrast's own table.
    """
    started = time.perf_counter()
    check_options(dict(options, mode=mode, collapse=collapse, nan_policy=nan_policy, normalize=normalize,
                       pseudobulk=pseudobulk, pseudobulk_method=pseudobulk_method, min_cells=min_cells,
                       memory=memory, layer=layer, use_raw=use_raw))
    _check_contrast_options(mode, gene_sets, options)
    budget = parse_memory(memory)
    if spec is None and one_vs_rest is None:
        raise InputError("give contrasts (a table of name, groupby, case, control) or a one-vs-rest column")
    if spec is not None:
        table = read_contrasts(spec)
        columns = list(dict.fromkeys(table["groupby"]))
    else:
        table, columns = None, [one_vs_rest]
    from ..stats.covariates import covariate_column

    # every column a contrast's design reads survives the pseudobulk (covariates too)
    keys = tuple(dict.fromkeys([*columns, *(c for c in (options.get("strata"), options.get("pairs")) if c),
                                *(covariate_column(name)[0] for name in options.get("covariates") or ())]))
    with WarningsRecorded() as loading:  # each contrast's run records its own
        loaded = load_data(expr, chip=chip, collapse=collapse, nan_policy=nan_policy, normalize=normalize,
                           budget=budget, pseudobulk=pseudobulk, pseudobulk_keys=keys,
                           pseudobulk_method=pseudobulk_method, layer=layer, use_raw=use_raw, min_cells=min_cells)
    if options.get("client") is not None and loaded.source is not None:
        loaded.source.close()
        raise OptionError(f"{loaded.data.source} is streamed from disk (larger than half of {option('memory')}), and "
                          f"contrasts on a Dask cluster need it in memory: raise {option('memory')}, use "
                          f"{option('pseudobulk')}, or run each contrast with gsea()/genes() on the cluster")
    annotations = {column: sample_annotation(loaded.data, phenotype, column, what="group") for column in columns}
    if table is None:
        levels = sorted({v for v in annotations[one_vs_rest] if v != ""})
        table = read_contrasts(None, one_vs_rest=one_vs_rest, levels=levels)
    # Before any permutation: every name gets its own file, whatever characters it holds.
    files = contrast_file_names(table["name"])
    places = table.attrs.get("places") or [None] * len(table)
    # Every contrast's levels are checked before the first one runs.
    labelled = []
    for place, contrast in zip(places, table.itertuples(index=False)):
        said = f"{place}: contrast {contrast.name!r}" if place else f"contrast {contrast.name!r}"
        labels = annotations.get(contrast.groupby)
        if labels is None:
            raise InputError(f"{said}: group column {contrast.groupby!r} is not available")
        present = set(labels) - {""}
        for level in (contrast.case,) if contrast.control == "rest" else (contrast.case, contrast.control):
            if level not in present:
                raise InputError(f"{said}: level {level!r} of {contrast.groupby!r} has no samples; its levels are "
                                 f"{_preview(sorted(present))}; check the contrast table")
        if contrast.control == "rest":
            contrast_labels = np.where(labels == contrast.case, contrast.case,
                                       np.where(labels == "", "", "rest")).astype(object)
        else:
            contrast_labels = labels
        labelled.append((contrast, contrast_labels))
    # Strata, pairs and covariates come from where the groups came from: a sample sheet
    # given as phenotype= travels with each contrast's labels (the labels alone would send
    # the runs to the matrix's own obs, which a DataFrame or text matrix does not have).
    wanted = [(options.get("strata"), "strata"), (options.get("pairs"), "pairs"),
              *((covariate_column(name)[0], "covariate") for name in options.get("covariates") or ())]
    design_columns = {column: sample_annotation(loaded.data, phenotype, column, what=what)
                      for column, what in wanted if column and phenotype is not None}
    parts, runs, per_contrast = [], {}, {}
    shared = dict(chip=None if chip is None else str(chip), collapse=collapse, nan_policy=nan_policy,
                  normalize=normalize, pseudobulk=pseudobulk, pseudobulk_method=pseudobulk_method if pseudobulk else None,
                  min_cells=min_cells if pseudobulk else None, layer=layer, use_raw=use_raw)
    phenotype_digest = file_digest(phenotype) if isinstance(phenotype, (str, os.PathLike)) else None
    expression_digest = file_digest(expr) or {"object": type(expr).__name__}
    chip_digest = file_digest(chip) if chip is not None else None
    for contrast, contrast_labels in labelled:
        kwargs = dict(options, case=contrast.case, control=contrast.control, memory=memory)
        labels_given: Any = list(contrast_labels)
        if design_columns:
            labels_given = pd.DataFrame({**design_columns, contrast.groupby: contrast_labels},
                                        index=pd.Index(loaded.data.sample_ids.astype(str)))
            kwargs["groupby"] = contrast.groupby
        try:
            if mode == "gsea":
                result = gsea(loaded, labels_given, gene_sets, **kwargs)
            else:
                result = genes(loaded, labels_given, **kwargs)
        except (InputError, OptionError) as error:  # say which contrast, keep the one line
            raise type(error)(f"contrast {contrast.name!r}: {error}") from None
        per_contrast[contrast.name] = result
        # the contrast ran on the matrix read here: its record says how it was read
        result.attrs["run"]["parameters"].update(shared)
        result.attrs["run"]["data"].update(expression=expression_digest, chip=chip_digest, phenotype=phenotype_digest)
        runs[contrast.name] = result.attrs["run"]
        part = result.copy()
        part.insert(0, "contrast", contrast.name)
        parts.append(part)
    if loaded.source is not None:
        loaded.source.close()
    combined = pd.concat(parts, ignore_index=True)
    combined.attrs["run"] = provenance(f"{mode} (contrasts)", {"mode": mode, "contrasts": table.to_dict("records"),
                                                               "one_vs_rest": one_vs_rest, **shared,
                                                               "memory_bytes": budget}, started,
                                        data={"expression": expression_digest, "chip": chip_digest,
                                              "phenotype": phenotype_digest, **loaded.info},
                                        contrasts=runs, contrast_files=files)
    warnings = loading.messages + [f"contrast {name!r}: {w}" for name, part in runs.items()
                                   for w in part.get("warnings", [])]
    if warnings:
        combined.attrs["run"]["warnings"] = warnings
    combined.attrs["per_contrast"] = per_contrast
    return combined


def write_results(table: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write a run's output folder, all files at once: ``results.tsv``, ``run.json``,
    for GSEA and preranked results the observed ranked list ``ranking.tsv`` (columns
    ``gene``, ``statistic``, top first) and, for :func:`contrasts`, one table per contrast.

    Parameters
    ----------
    table : pandas.DataFrame
        A result of :func:`gsea`, :func:`prerank`, :func:`genes`, :func:`ora` or
        :func:`contrasts`; ``attrs["run"]`` becomes ``run.json`` and
        ``attrs["per_contrast"]`` (if any) the per-contrast tables.
    out_dir : str or PathLike
        Output folder: missing, empty, or an earlier permenrich output (replaced as a
        whole). The files are written into a temporary sibling folder and renamed into
        place in one step (:func:`permenrich.io.output.write_output_dir`).

    Returns
    -------
    dict of str to pathlib.Path
        ``results``, ``run``, ``ranking`` where the ranked list was written (not with
        contrasts), and each contrast's table under the contrast's name (except
        contrasts named ``results`` or ``run``: their files are in run.json's
        ``contrast_files``).

    Raises
    ------
    OptionError
        ``out_dir`` is not usable (see :func:`permenrich.io.check_output_dir`), another
        run is writing to it, or writing failed (disk full, ...); the previous output is
        then untouched.

    Notes
    -----
    Per-contrast files are named by :func:`contrast_file_names` (the real names stay in
    the tables' ``contrast`` column); run.json records the mapping as ``contrast_files``
    and every file written as ``output.files``.
    """
    per_contrast = table.attrs.get("per_contrast") or {}
    files = contrast_file_names(per_contrast)
    run = dict(table.attrs.get("run") or {})  # a copy: the caller's attrs stay as they are
    if per_contrast:
        run["contrast_files"] = files
    tables = {"results.tsv": table, **{files[name]: part for name, part in per_contrast.items()}}
    ranking = table.attrs.get("ranking")
    if ranking is not None and not per_contrast:
        # The observed ranked list: what enrichment plots (and `permenrich report OUT`) need.
        tables["ranking.tsv"] = ranking.frame()
    out = write_output_dir(out_dir, tables, run)
    return {**{name: out / files[name] for name in per_contrast}, "results": out / "results.tsv",
            **({"ranking": out / "ranking.tsv"} if "ranking.tsv" in tables else {}), "run": out / "run.json"}
