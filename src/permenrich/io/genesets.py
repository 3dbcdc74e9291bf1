"""Gene-set collections: GMT, GMX, and in-memory dicts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from permenrich.errors import InputError
from permenrich.io.expression import _existing_file, _format_suffix, _read_text, _split_lines

logger = logging.getLogger(__name__)

__all__ = ["GeneSet", "read_gmt", "read_gmx", "read_gene_sets"]


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


# (set, "file line N" / "file column N") pairs: places are kept for duplicate-name messages.
_Located = list[tuple[GeneSet, str]]


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
    located = _read_gmt_located(path)
    _check_unique_names(located)
    return [gene_set for gene_set, _ in located]


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
    located = _read_gmx_located(path)
    _check_unique_names(located)
    return [gene_set for gene_set, _ in located]


def read_gene_sets(
    sources: str | Path | Sequence[str | Path] | Mapping[str, Iterable[str]] | Sequence[GeneSet],
) -> list[GeneSet]:
    """Read gene sets from one or more files, or take them from a dict.

    Parameters
    ----------
    sources : path, list of paths, dict or list of GeneSet
        Files ending in ``.gmx`` are read as GMX, all others as GMT. A dict maps set
        name to its genes (description empty, source ``"<dict>"``).

    Returns
    -------
    list of GeneSet
        All sets, files in the order given.

    Raises
    ------
    InputError
        Any file error (see :func:`read_gmt`, :func:`read_gmx`), a set name that appears
        twice anywhere (case-insensitive), or no set at all.
    """
    if isinstance(sources, Mapping):
        located = _from_mapping(sources)
    else:
        items = [sources] if isinstance(sources, (str, Path, GeneSet)) else list(sources)
        if not items:
            raise InputError("no gene-set source given; pass at least one GMT/GMX file")
        located = []
        for item in items:
            if isinstance(item, GeneSet):
                located.append((item, item.source))
            elif isinstance(item, (str, Path)):
                reader = _read_gmx_located if _format_suffix(Path(item)) == ".gmx" else _read_gmt_located
                located.extend(reader(item))
            else:
                raise InputError(
                    "gene-set sources must be paths, a dict of name -> genes, or GeneSet objects; "
                    f"got {type(item).__name__}"
                )
    _check_unique_names(located)
    return [gene_set for gene_set, _ in located]


def _unique(genes: Iterable[str]) -> list[str]:
    """Strip, drop empties, keep the first of repeats, in order."""
    return list(dict.fromkeys(g for g in (str(x).strip() for x in genes) if g))


def _read_gmt_located(path: str | Path) -> _Located:
    where = str(path)
    lines = _split_lines(_read_text(_existing_file(path, "GMT")))
    located: _Located = []
    for line_number, line in enumerate(lines, start=1):
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
        gene_set = GeneSet(name=name, description=fields[1].strip(), genes=_unique(fields[2:]), source=where)
        located.append((gene_set, f"{where} line {line_number}"))
    if not located:
        raise InputError(f"{where}: no gene sets found; expected one 'name<tab>description<tab>genes...' per line")
    return located


def _read_gmx_located(path: str | Path) -> _Located:
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
    located: _Located = []
    for column in range(n_columns):
        cells = [row[column].strip() if column < len(row) else "" for row in rows]
        name, genes = cells[0], cells[2:]
        if not name:
            if any(cells[1:]):
                raise InputError(
                    f"{where}: line 1, column {column + 1}: gene-set name is empty but the column has content"
                )
            continue  # a wholly empty column (trailing tabs)
        gene_set = GeneSet(name=name, description=cells[1], genes=_unique(genes), source=where)
        located.append((gene_set, f"{where} column {column + 1}"))
    if not located:
        raise InputError(f"{where}: no gene sets found; expected set names on line 1")
    return located


def _from_mapping(sources: Mapping[str, Iterable[str]]) -> _Located:
    located: _Located = []
    for name, genes in sources.items():
        if isinstance(genes, (str, bytes)) or not isinstance(genes, Iterable):
            raise InputError(
                f"<dict>: gene set {name!r} maps to {type(genes).__name__}; expected a list of gene ids"
            )
        if not str(name).strip():
            raise InputError("<dict>: a gene-set name is empty")
        gene_set = GeneSet(name=str(name).strip(), description="", genes=_unique(genes), source="<dict>")
        located.append((gene_set, "<dict>"))
    if not located:
        raise InputError("<dict>: no gene sets given")
    return located


def _check_unique_names(located: _Located) -> None:
    """Set names must be unique, case-insensitively (GSEA rejects such duplicates too)."""
    first_place: dict[str, tuple[str, str]] = {}
    for gene_set, place in located:
        key = gene_set.name.upper()
        if key in first_place:
            other_name, other_place = first_place[key]
            raise InputError(
                f"gene-set name {gene_set.name!r} ({place}) duplicates {other_name!r} ({other_place}); "
                "names are compared case-insensitively, rename or remove one"
            )
        first_place[key] = (gene_set.name, place)
