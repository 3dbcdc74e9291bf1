"""Gene-set collections: GMT, GMX, in-memory dicts and network tables (decoupler, OmniPath).

:func:`iter_gene_sets` yields sets one at a time (a GMT is read line by line), so that
:func:`permenrich.genesets.build_gene_set_index` keeps only the sets within the size
bounds: a collection of a million sets is never held in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from permenrich.errors import InputError
from permenrich.io.expression import (
    _existing_file,
    _format_suffix,
    _preview,
    _read_text,
    _split_lines,
    _text_lines,
    refuse_other_role,
)

logger = logging.getLogger(__name__)

__all__ = ["GeneSet", "iter_gene_sets", "read_gmt", "read_gmx", "read_gene_sets"]


@dataclass
class GeneSet:
    """One gene set as read.

    Attributes
    ----------
    name : str
        As written in the file (GSEA upper-cases names; we keep them).
    description : str
        Second GMT field / second GMX row (often a URL).
    genes : list of str
        Unique, in file order.
    source : str
        The file path, or ``"<dict>"``.
    """

    name: str
    description: str
    genes: list[str]
    source: str


# (set, "file line N" / "file column N"): the place is for duplicate-name messages.
_Located = Iterator[tuple[GeneSet, str]]
GeneSetSources = str | Path | Sequence[str | Path] | Mapping[str, Iterable[str]] | Sequence[GeneSet] | Any


def read_gmt(path: str | Path) -> list[GeneSet]:
    """Read a GMT file: one set per line, ``name<tab>description<tab>gene...``.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    list of GeneSet
        In file order. Empty gene cells are dropped; genes repeated within a set are
        kept once. Blank lines and lines starting with ``#`` are skipped.

    Raises
    ------
    InputError
        A line with fewer than two fields or an empty name, a set name used twice
        (compared case-insensitively, as GSEA does), or no set at all.
    """
    return list(_unique_names(lambda: _gmt_sets(path)))


def read_gmx(path: str | Path) -> list[GeneSet]:
    """Read a GMX file: the transpose of GMT, one set per column.

    Parameters
    ----------
    path : str or Path
        Row 1: set names; row 2: descriptions; then genes. Columns may have different
        lengths.

    Returns
    -------
    list of GeneSet
        In column order.

    Raises
    ------
    InputError
        Fewer than two rows, a column with genes but no name, a repeated set name, or no
        set at all.
    """
    return list(_unique_names(lambda: _gmx_sets(path)))


def read_gene_sets(sources: GeneSetSources) -> list[GeneSet]:
    """Read gene sets from one or more files, or take them from a dict.

    Parameters
    ----------
    sources : path, list of paths, dict, network table or list of GeneSet
        Files ending in ``.gmx`` are read as GMX, all others as GMT. A dict maps set
        name to its genes (description empty, source ``"<dict>"``). A pandas DataFrame
        with columns ``source`` and ``target`` (decoupler's/OmniPath's networks) gives
        one set per source (see :func:`network_sets`).

    Returns
    -------
    list of GeneSet
        All sets, files in the order given.

    Raises
    ------
    InputError
        Any file error (see :func:`read_gmt`, :func:`read_gmx`), a set name that appears
        twice anywhere (case-insensitive), or no set at all.

    See Also
    --------
    iter_gene_sets : the same sets one at a time, without holding them all.
    """
    return list(iter_gene_sets(sources))


def iter_gene_sets(sources: GeneSetSources) -> Iterator[GeneSet]:
    """The sets of :func:`read_gene_sets`, one at a time.

    Parameters
    ----------
    sources : path, list of paths, dict or list of GeneSet
        As for :func:`read_gene_sets`.

    Yields
    ------
    GeneSet
        In the order of :func:`read_gene_sets`. A GMT is read line by line; only the
        names seen so far are kept (to refuse duplicates), so memory does not grow with
        the sets' genes.

    Raises
    ------
    InputError
        As :func:`read_gene_sets`, when the offending set is reached (no source at all:
        at once).
    """
    if _is_network(sources):
        items: Mapping[str, Iterable[str]] | list = network_sets(sources)
    elif isinstance(sources, Mapping):
        items = sources
    else:
        items = [sources] if isinstance(sources, (str, Path, GeneSet)) else list(sources)
        if not items:
            raise InputError("no gene-set source given; pass at least one GMT/GMX file")
        paths = [Path(item).resolve() for item in items if isinstance(item, (str, Path))]
        if len(set(paths)) < len(paths):
            twice = next(p for p in paths if paths.count(p) > 1)
            raise InputError(f"{twice}: the gene-set file is given more than once; give each file once")
    return _unique_names(lambda: _located(items))


def _located(items: Mapping[str, Iterable[str]] | list) -> _Located:
    if isinstance(items, Mapping):
        yield from _from_mapping(items)
        return
    for item in items:
        if isinstance(item, GeneSet):
            yield item, item.source
        elif isinstance(item, (str, Path)):
            refuse_other_role(Path(item).expanduser(), str(item), "a gene-set file", own="gene_sets")
            yield from (_gmx_sets if _format_suffix(Path(item)) == ".gmx" else _gmt_sets)(item)
        else:
            raise InputError(
                "gene-set sources must be paths, a dict of name -> genes, or GeneSet objects; "
                f"got {type(item).__name__}"
            )


def _unique_names(located: Callable[[], _Located]) -> Iterator[GeneSet]:
    """The sets of ``located()``, refusing a name seen before (case-insensitively, as
    GSEA does). Only the names are kept; the first place of a repeated name is found by
    reading the sources again, on that error path only."""
    seen: set[str] = set()
    for gene_set, place in located():
        key = gene_set.name.upper()
        if key in seen:
            first, first_place = next((s, p) for s, p in located() if s.name.upper() == key)
            raise InputError(
                f"gene-set name {gene_set.name!r} ({place}) duplicates {first.name!r} ({first_place}); "
                "names are compared case-insensitively, rename or remove one"
            )
        seen.add(key)
        yield gene_set


def _unique(genes: Iterable[str]) -> list[str]:
    """Strip, drop empties, keep the first of repeats, in order."""
    unique = dict.fromkeys(map(str.strip, map(str, genes)))  # C-level loops: a GMT may hold 1e8 genes
    unique.pop("", None)
    return list(unique)


def _gmt_sets(path: str | Path) -> _Located:
    where = str(path)
    n_sets = 0
    for line_number, line in _text_lines(_existing_file(path, "GMT")):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise InputError(
                f"{where}: line {line_number} has 1 field; expected 'name<tab>description<tab>genes...' "
                "(check that fields are tab-separated)"
            )
        name = fields[0].strip()
        if not name:
            raise InputError(f"{where}: line {line_number}, column 1: gene-set name is empty")
        if len(fields) >= 3 and all(_is_description_cell(field) for field in fields):
            raise InputError(
                f"{where}: line {line_number}: every field is 'na' or a URL, as on the description line of a GMX "
                "file (one set per column): name the file .gmx, or write one set per line "
                "('name<tab>description<tab>genes...')"
            )
        n_sets += 1
        yield GeneSet(name=name, description=fields[1].strip(), genes=_unique(fields[2:]), source=where), (
            f"{where} line {line_number}"
        )
    if not n_sets:
        raise InputError(f"{where}: no gene sets found; expected one 'name<tab>description<tab>genes...' per line")


def _is_description_cell(field: str) -> bool:
    text = field.strip().lower()
    return text in ("na", "") or text.startswith(("http://", "https://"))


def _gmx_sets(path: str | Path) -> _Located:
    # Sets are columns: the whole file is needed before the first set is complete.
    where = str(path)
    lines = _split_lines(_read_text(_existing_file(path, "GMX")))
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise InputError(
            f"{where}: GMX file has {len(lines)} lines; expected set names on line 1, "
            "descriptions on line 2, then genes"
        )
    rows = [line.split("\t") for line in lines]
    n_columns = max(len(row) for row in rows)
    n_sets = 0
    for column in range(n_columns):
        cells = [row[column].strip() if column < len(row) else "" for row in rows]
        name, genes = cells[0], cells[2:]
        if not name:
            if any(cells[1:]):
                raise InputError(
                    f"{where}: line 1, column {column + 1}: gene-set name is empty but the column has content"
                )
            continue  # a wholly empty column (trailing tabs)
        n_sets += 1
        yield GeneSet(name=name, description=cells[1], genes=_unique(genes), source=where), (
            f"{where} column {column + 1}"
        )
    if not n_sets:
        raise InputError(f"{where}: no gene sets found; expected set names on line 1")


def _is_network(sources: object) -> bool:
    """A table with columns (pandas DataFrame), as decoupler and OmniPath give networks."""
    return hasattr(sources, "columns") and hasattr(sources, "itertuples")


#: Column names of a network table: set name, member gene, optional weight.
NETWORK_COLUMNS = ("source", "target", "weight")


def network_sets(network: Any) -> dict[str, list[str]]:
    """Gene sets from a network table in decoupler's/OmniPath's layout.

    Parameters
    ----------
    network : pandas.DataFrame
        One row per (set, gene) edge: column ``source`` is the set (a transcription
        factor, a pathway), ``target`` the gene; an optional ``weight`` column (e.g. a
        regulon's mode of regulation, +1/-1) is not used, as every set statistic here is
        unweighted: a warning says so when weights are not all 1.

    Returns
    -------
    dict
        Set name -> member genes, sets in order of first appearance, members in row
        order (duplicates are removed later, as for every source).

    Raises
    ------
    InputError
        A missing ``source``/``target`` column, or an empty cell (named by row).
    """
    missing = [name for name in NETWORK_COLUMNS[:2] if name not in network.columns]
    if missing:
        raise InputError(f"<network>: column(s) {', '.join(map(repr, missing))} missing (columns: "
                         f"{_preview(list(network.columns))}); a network needs 'source' (the set) and "
                         "'target' (the gene), as in decoupler")
    sources = network["source"].to_numpy()
    targets = network["target"].to_numpy()
    for column, values in (("source", sources), ("target", targets)):
        empty = [i for i, value in enumerate(values) if value is None or value != value or not str(value).strip()]
        if empty:
            raise InputError(f"<network>: row {empty[0] + 1}: empty {column!r}; drop incomplete edges first")
    if "weight" in network.columns:
        weights = network["weight"].to_numpy(dtype=float)
        if not (weights == 1.0).all():
            # A run's warning like the others (console, run.json), not a Python warning.
            logger.warning("<network>: the 'weight' column is not used (set statistics here are unweighted); "
                           "for signed regulons, analyse e.g. network[network.weight > 0] and "
                           "network[network.weight < 0] as separate sets")
    sets: dict[str, list[str]] = {}
    for source, target in zip(sources, targets):
        sets.setdefault(str(source), []).append(str(target))
    return sets


def _from_mapping(sources: Mapping[str, Iterable[str]]) -> _Located:
    for name, genes in sources.items():
        if isinstance(genes, (str, bytes)) or not isinstance(genes, Iterable):
            raise InputError(
                f"<dict>: gene set {name!r} maps to {type(genes).__name__}; expected a list of gene ids"
            )
        if not str(name).strip():
            raise InputError("<dict>: a gene-set name is empty")
        yield GeneSet(name=str(name).strip(), description="", genes=_unique(genes), source="<dict>"), "<dict>"
    if not sources:
        raise InputError("<dict>: no gene sets given")
