"""Over-representation of several lists in one run (:func:`ora_lists`): e.g. the miRNAs,
proteins and genes reported altered in a disease, each with its own universe and map."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._pipeline import file_digest
from ..errors import InputError, OptionError
from ..nulls import bh_adjust

#: Manifest columns: ``list`` and ``genes`` required; paths relative to the manifest.
LIST_COLUMNS = ("list", "genes", "universe", "map")
_LIST_KEYS = ("name", "gene_list", "universe", "map")


def read_list_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Lists from a manifest: a TSV (CSV for ``.csv``) with one row per list and the
    columns ``list`` (a name), ``genes`` (the list's file), and optionally ``universe``
    and ``map`` (files; an empty cell: none). Relative paths are relative to the
    manifest's folder."""
    where = str(path)
    if not Path(path).is_file():
        raise InputError(f"{where}: list manifest not found; give a TSV with the columns list, genes[, universe, map]")
    try:
        table = pd.read_csv(path, sep="," if where.lower().endswith(".csv") else "\t", dtype=str,
                            keep_default_na=False, comment="#")
    except (ValueError, OSError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        reason = "empty file" if isinstance(exc, pd.errors.EmptyDataError) else str(exc).splitlines()[-1]
        raise InputError(f"{where}: cannot read the list manifest ({reason}); give a UTF-8 TSV with the columns "
                         "list, genes[, universe, map]") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    unknown = [c for c in table.columns if c not in LIST_COLUMNS]
    if unknown:
        raise InputError(f"{where}: line 1: unknown column {unknown[0]!r}; the columns are {', '.join(LIST_COLUMNS)}")
    for required in ("list", "genes"):
        if required not in table.columns:
            raise InputError(f"{where}: line 1: the column {required!r} is required")
    if table.empty:
        raise InputError(f"{where}: no list given; one row per list under the header")
    base = Path(path).parent
    lists = []
    for line, record in enumerate(table.to_dict("records"), start=2):
        for required in ("list", "genes"):
            if not record[required].strip():
                raise InputError(f"{where}: line {line}: the {required!r} cell is empty")
        resolve = lambda text: str(Path(text) if Path(text).is_absolute() else base / text)  # noqa: E731
        lists.append({"name": record["list"].strip(), "gene_list": resolve(record["genes"].strip()),
                      **{key: resolve(record[key].strip()) for key in ("universe", "map")
                         if record.get(key, "").strip()}})
    return lists


def ora_lists(
    lists: Sequence[Mapping[str, Any]] | str | os.PathLike,
    gene_sets: Any,
    *,
    min_size: int = 15,
    max_size: int = 500,
) -> pd.DataFrame:
    """Over-representation of several lists against the same gene sets, each list with
    its own universe and, for lists of non-gene items (miRNAs, proteins), its own map.

    Parameters
    ----------
    lists
        A manifest (:func:`read_list_manifest`) or one mapping per list with ``name``,
        ``gene_list`` (file or sequence), and optionally ``universe`` and ``map`` (as
        in :func:`permenrich.ora`).
    gene_sets
        GMT/GMX path(s), or a mapping of set name to genes.
    min_size, max_size
        Sets whose size in a list's universe falls outside are excluded for that list.

    Returns
    -------
    pandas.DataFrame
        The :func:`permenrich.ora` columns with a leading ``list`` column, and
        ``padj_bh_all``: Benjamini–Hochberg across every list x set (the family a
        reader scans); ``padj_bh_hypergeom`` stays per list. Sorted by ``padj_bh_all``,
        then p-value. ``attrs["per_contrast"]`` holds each list's own table (written
        beside ``results.tsv``), ``attrs["run"]`` each list's provenance.
    """
    from .ora import ora

    started = time.perf_counter()
    source = lists
    if isinstance(lists, (str, os.PathLike)):
        lists = read_list_manifest(lists)
    if not isinstance(lists, Sequence) or not lists:
        raise OptionError("lists must be a list manifest or a non-empty list of mappings, one per list")
    tables: dict[str, pd.DataFrame] = {}
    for i, spec in enumerate(lists):
        if not isinstance(spec, Mapping):
            raise OptionError(f"list {i + 1} must be a mapping (name, gene_list, universe, map), "
                              f"got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(_LIST_KEYS))
        if unknown:
            raise OptionError(f"list {i + 1}: unknown key {unknown[0]!r}; a list takes {', '.join(_LIST_KEYS)}")
        name = str(spec.get("name") or f"list{i + 1}")
        if name in tables:
            raise OptionError(f"list name {name!r} is used twice; give each list its own name")
        if spec.get("gene_list") is None:
            raise OptionError(f"list {name!r}: 'gene_list' is required")
        try:
            table = ora(spec["gene_list"], gene_sets, universe=spec.get("universe"), map=spec.get("map"),
                        min_size=min_size, max_size=max_size)
        except (InputError, OptionError) as error:  # say which list, keep the one-line message
            raise type(error)(f"list {name!r}: {error}") from None
        tables[name] = table
    combined = pd.concat([table.assign(list=name)[["list", *table.columns]] for name, table in tables.items()],
                         ignore_index=True)
    combined["padj_bh_all"] = bh_adjust(combined.pval_hypergeom.to_numpy())
    order = np.lexsort((combined.gene_set.to_numpy(), combined.list.to_numpy(),
                        combined.pval_hypergeom.to_numpy(), combined.padj_bh_all.to_numpy()))
    combined = combined.iloc[order].reset_index(drop=True)
    combined.attrs["run"] = {
        "command": "ora_lists",
        "parameters": {"min_size": min_size, "max_size": max_size,
                       "multiple_testing": "padj_bh_all: Benjamini-Hochberg across all lists x sets; "
                                           "padj_bh_hypergeom: within each list"},
        "manifest": file_digest(source),
        "lists": {name: table.attrs["run"] for name, table in tables.items()},
        "timings": {"total_seconds": time.perf_counter() - started},
    }
    combined.attrs["per_contrast"] = tables
    return combined
