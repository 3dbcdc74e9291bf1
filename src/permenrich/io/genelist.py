"""Plain gene lists: a query list or a background universe for over-representation."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from permenrich.errors import InputError
from permenrich.io.expression import _existing_file, _format_suffix, _read_text, _split_lines

logger = logging.getLogger(__name__)

__all__ = ["read_gene_list", "gene_list_source"]

# A first token equal to one of these (case-insensitive) is a column header, not a gene.
_HEADER_WORDS = frozenset({"gene", "genes", "symbol", "gene_id", "gene_symbol", "gene_name", "name"})
_TOKEN_SEPARATORS = re.compile(r"[\s,;]+")


def read_gene_list(
    source: str | Path | Iterable[str],
    *,
    what: str = "gene list",
) -> list[str]:
    """Read a list of gene ids from a text file or take it from a sequence.

    Parameters
    ----------
    source : str, Path, or sequence of str
        - a text file (``.gz`` accepted). Lines starting with ``#`` and blank lines are
          skipped. When the file is a table (a ``.csv`` file, or tab-separated fields, on
          more than one line) the first column is taken; otherwise every token separated
          by whitespace, commas or semicolons is a gene. A first entry ``gene``,
          ``genes``, ``symbol``, ``gene_id``, ``gene_symbol``, ``gene_name`` or ``name``
          (any case) is a header and skipped. One layer of double or single quotes
          around an id is removed.
        - a list, tuple, numpy array, pandas Index or Series (values) of str; integers
          (e.g. Entrez ids) are turned into str. A set is sorted, as it has no order.
    what : str, default "gene list"
        What the list is for (e.g. ``"universe"``), used in messages.

    Returns
    -------
    list of str
        Unique ids in order of first occurrence, stripped. Repeats are dropped with an
        INFO log line giving their count.

    Raises
    ------
    InputError
        A missing file, an entry that is neither str nor an integer, or no gene at all.

    Examples
    --------
    >>> read_gene_list(["TP53", "MYC", "TP53"], what="universe")
    ['TP53', 'MYC']
    """
    where = gene_list_source(source)
    if isinstance(source, (str, Path)):
        path = _existing_file(source, what)
        genes = _genes_from_text(_read_text(path), where, table_sep="," if _format_suffix(path) == ".csv" else "\t")
    elif isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise InputError(
            f"{what} must be a file path or a sequence of gene ids, got {type(source).__name__}"
        )
    else:
        genes = _genes_from_objects(source, where, what)

    if not genes:
        raise InputError(
            f"{where}: the {what} holds no gene id; expected one gene id per line (blank lines and '#' comments "
            "are skipped)"
        )
    unique = list(dict.fromkeys(genes))
    if len(unique) < len(genes):
        logger.info(
            "%s: %s has %d repeated gene ids; kept the first of each, %d genes remain",
            where, what, len(genes) - len(unique), len(unique),
        )
    return unique


def gene_list_source(source: str | Path | Iterable[str]) -> str:
    """How messages name a gene list: its path, or ``<list>``, ``<Index>``, ... for objects."""
    return str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"


def _genes_from_text(text: str, where: str, *, table_sep: str) -> list[str]:
    lines = [line for line in _split_lines(text) if line.strip() and not line.startswith("#")]
    if not lines:
        return []
    # A table (first column wanted) versus a free list of tokens: tab-separated fields on
    # several lines, or any CSV with several lines. A single line is always a token list.
    is_table = len(lines) > 1 and any(table_sep in line for line in lines)
    if is_table:
        n_columns = max(line.count(table_sep) for line in lines) + 1
        logger.info("%s: read the first of %d %s-separated columns", where, n_columns,
                    "tab" if table_sep == "\t" else "comma")
        genes = [_unquote(line.split(table_sep, 1)[0].strip()) for line in lines]
    else:
        genes = [_unquote(token) for line in lines for token in _TOKEN_SEPARATORS.split(line.strip())]
    genes = [g for g in genes if g]
    if genes and genes[0].lower() in _HEADER_WORDS:
        logger.info("%s: first entry %r taken as a header and skipped", where, genes[0])
        genes = genes[1:]
    return genes


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1].strip()
    return token


def _genes_from_objects(source: Iterable[object], where: str, what: str) -> list[str]:
    if isinstance(source, (set, frozenset)):
        source = sorted(source, key=str)
    values = source.to_numpy() if isinstance(source, (pd.Series, pd.Index)) else source
    genes: list[str] = []
    for position, value in enumerate(values, start=1):
        if isinstance(value, str):
            gene = value.strip()
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            gene = str(int(value))
        else:
            raise InputError(
                f"{where}: entry {position} of the {what} is {value!r} ({type(value).__name__}); "
                "expected gene ids as str"
            )
        if gene:
            genes.append(gene)
    return genes


def read_item_map(source: str | Path | pd.DataFrame | dict) -> dict[str, list[str]]:
    """Read a mapping of items to genes (miRNA -> target genes, protein -> gene, ...).

    Parameters
    ----------
    source
        A TSV (CSV for ``.csv``; ``.gz`` accepted) or DataFrame with the columns ``item``
        and ``gene`` (any case; other columns, e.g. a database export's evidence, are
        ignored), one pair per row; or a dict of item to gene ids. An item may map to
        several genes and a gene come from several items.

    Returns
    -------
    dict of str to list of str
        Each item's genes, unique, in order of first occurrence.
    """
    where = gene_list_source(source) if not isinstance(source, (pd.DataFrame, dict)) else "<map>"
    if isinstance(source, dict):
        pairs = [(str(item), str(gene)) for item, genes in source.items()
                 for gene in ([genes] if isinstance(genes, str) else genes)]
    else:
        if isinstance(source, pd.DataFrame):
            table = source.astype(str)
            columns = {str(c).strip().lower(): c for c in table.columns}
            missing = [c for c in ("item", "gene") if c not in columns]
            if missing:
                raise InputError(f"{where}: the map needs the columns item and gene (one pair per row); column "
                                 f"{missing[0]!r} is missing (found {', '.join(map(str, table.columns))})")
            pairs = [(str(item).strip(), str(gene).strip())
                     for item, gene in zip(table[columns["item"]], table[columns["gene"]])]
        else:  # read as every table a user writes: line numbers, comments, extra cells refused
            from .manifest import read_manifest_rows

            rows = read_manifest_rows(source, columns=("item", "gene"), required=(), what="map",
                                      entry="item-gene pair", other_columns=True)
            absent = next((c for c in ("item", "gene") if not any(row[c] for row in rows)), None)
            if absent is not None:
                raise InputError(f"{where}: the map needs the columns item and gene (one pair per row); column "
                                 f"{absent!r} is missing or empty")
            pairs = [(row["item"], row["gene"]) for row in rows]
    mapping: dict[str, dict[str, None]] = {}
    for item, gene in pairs:
        if item and gene:
            mapping.setdefault(item, {})[gene] = None
    if not mapping:
        raise InputError(f"{where}: the map holds no item-gene pair")
    return {item: list(genes) for item, genes in mapping.items()}


def map_items(items: list[str], mapping: dict[str, list[str]], *, where: str, what: str) -> list[str]:
    """The genes of ``items`` under ``mapping`` (unique, in order); items the map lacks are
    ignored with a warning, and a list none of whose items is mapped is an error."""
    genes: dict[str, None] = {}
    unmapped = 0
    for item in items:
        targets = mapping.get(item)
        if targets is None:
            unmapped += 1
            continue
        genes.update(dict.fromkeys(targets))
    if not genes:
        raise InputError(f"{where}: none of the {len(items)} items of the {what} is in the map; check that the map's "
                         "item column holds the same ids (e.g. miRNA names like hsa-miR-21-5p)")
    if unmapped:
        logger.warning("%s: %d of %d items of the %s have no gene in the map and are ignored",
                       where, unmapped, len(items), what)
    return list(genes)
