"""Over-representation of several lists in one run (:func:`ora_lists`): e.g. the miRNAs,
proteins and genes reported altered in a disease, each with its own universe and map."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._pipeline import file_digest
from ..errors import InputError, OptionError
from ..io.manifest import read_manifest_rows, relative_to
from ..nulls import bh_adjust

#: Manifest columns: ``list`` and ``genes`` required; paths relative to the manifest.
LIST_COLUMNS = ("list", "genes", "universe", "map")
_LIST_KEYS = ("name", "gene_list", "universe", "map")


def read_list_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Lists from a manifest: a TSV (CSV for ``.csv``) with one row per list and the
    columns ``list`` (a name), ``genes`` (the list's file), and optionally ``universe``
    and ``map`` (files; an empty cell: none). Relative paths are relative to the
    manifest's folder."""
    return [{"name": cells["list"], "gene_list": relative_to(path, cells["genes"]),
             **{key: relative_to(path, cells[key]) for key in ("universe", "map") if cells[key]}}
            for cells in read_manifest_rows(path, columns=LIST_COLUMNS, required=("list", "genes"),
                                            what="list manifest", entry="list")]


def ora_lists(
    lists: Sequence[Mapping[str, Any]] | str | os.PathLike,
    gene_sets: Any,
    *,
    universe: Any = None,
    map: Any = None,  # noqa: A002 - the option's name on the command line (--map)
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
    universe, map
        The universe and map of every list that names neither a universe nor a map of its
        own (e.g. one platform's genes as the background of all gene lists); a list with
        a map of its own keeps its map's genes as its background, in its own ids.
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
            own = spec.get("universe") is not None or spec.get("map") is not None
            table = ora(spec["gene_list"], gene_sets, universe=spec.get("universe") if own else universe,
                        map=spec.get("map") if own else map, min_size=min_size, max_size=max_size)
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
                       "universe": None if universe is None else file_digest(universe) or {"object": type(universe).__name__},
                       "map": None if map is None else file_digest(map) or {"object": type(map).__name__},
                       "multiple_testing": "padj_bh_all: Benjamini-Hochberg across all lists x sets; "
                                           "padj_bh_hypergeom: within each list"},
        "manifest": file_digest(source),
        "lists": {name: table.attrs["run"] for name, table in tables.items()},
        "timings": {"total_seconds": time.perf_counter() - started},
    }
    combined.attrs["per_contrast"] = tables
    return combined
