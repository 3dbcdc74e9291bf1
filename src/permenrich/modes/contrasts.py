"""Many contrasts over one read of the data (:func:`contrasts`) and writing results."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._pipeline import (
    load_data,
    check_choice,
    file_digest,
    parse_memory,
)
from ..errors import InputError
from ..io import (
    atomic_write_table,
    atomic_write_text,
    check_output_dir,
    sample_annotation,
)
from ._shared import provenance
from .genes import genes
from .gsea import gsea


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
    combined.attrs["run"] = provenance(f"{mode} (contrasts)", {"mode": mode, "contrasts": table.to_dict("records"),
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


