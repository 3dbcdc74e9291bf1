"""CHIP files: probe id -> gene symbol, and mapping an expression matrix through one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np

from permenrich.errors import InputError, option
from permenrich.io.expression import (
    ExpressionData,
    _existing_file,
    _preview,
    _read_text,
    _split_lines,
    collapse_duplicates,
)

logger = logging.getLogger(__name__)

__all__ = ["read_chip", "read_probe_map", "apply_chip"]

_PROBE_COLUMN = "probe set id"
_SYMBOL_COLUMN = "gene symbol"
_DISPLAY = {_PROBE_COLUMN: "'Probe Set ID'", _SYMBOL_COLUMN: "'Gene Symbol'"}
# Affymetrix annotation files write "---" for "no symbol".
_NO_SYMBOL = ("", "---")


def read_chip(path: str | Path) -> dict[str, str]:
    """Read a GSEA CHIP file.

    Parameters
    ----------
    path : str or Path
        Tab-separated, with a header naming ``Probe Set ID`` and ``Gene Symbol``
        (case-insensitive; other columns such as ``Gene Title`` are ignored).

    Returns
    -------
    dict of str to str
        Probe id -> gene symbol. Probes whose symbol is empty or ``---`` are left out,
        with a warning giving their count.

    Raises
    ------
    InputError
        The file is missing or empty, its header lacks a required column, or no probe
        has a symbol.

    Notes
    -----
    Like GSEA's ``ChipParser``, when a probe id appears on several rows only its first
    row counts (MSigDB CHIP files repeat some probes with other symbols); rows with an
    empty probe id are skipped. Each case is counted in a warning.
    """
    where = str(path)
    lines = _split_lines(_read_text(_existing_file(path, "CHIP")))
    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise InputError(f"{where}: CHIP file is empty; expected a header with 'Probe Set ID' and 'Gene Symbol'")
    raw_header = lines[header_at].split("\t")
    header = [h.strip().lower() for h in raw_header]
    missing = [name for name in (_PROBE_COLUMN, _SYMBOL_COLUMN) if name not in header]
    if missing:
        raise InputError(
            f"{where}: line {header_at + 1}: CHIP header lacks {' and '.join(_DISPLAY[m] for m in missing)}; "
            f"found columns {_preview(raw_header)}; "
            "the header must name 'Probe Set ID' and 'Gene Symbol' (tab-separated)"
        )
    probe_col, symbol_col = header.index(_PROBE_COLUMN), header.index(_SYMBOL_COLUMN)
    # Only the fields up to the later of the two columns are split off (a CHIP's last
    # column, the gene title, is its longest).
    last_needed = max(probe_col, symbol_col) + 1

    mapping: dict[str, str] = {}
    seen: set[str] = set()
    n_without_symbol = n_repeated = n_no_probe = 0
    for line in lines[header_at + 1 :]:
        if not line.strip():
            continue
        fields = line.split("\t", last_needed)
        probe = fields[probe_col].strip() if probe_col < len(fields) else ""
        if not probe:
            n_no_probe += 1
            continue
        # As in GSEA's ChipParser, the first row of a probe wins, even one without a
        # symbol; MSigDB CHIP files list some probes again with other symbols.
        if probe in seen:
            n_repeated += 1
            continue
        seen.add(probe)
        # A short line is a probe without a symbol (writers drop trailing empty fields).
        symbol = fields[symbol_col].strip() if symbol_col < len(fields) else ""
        if symbol in _NO_SYMBOL:
            n_without_symbol += 1
            continue
        mapping[probe] = symbol
    if n_without_symbol:
        logger.warning("%s: dropped %d probes with no gene symbol ('' or '---')", where, n_without_symbol)
    if n_repeated:
        logger.warning(
            "%s: %d rows repeat an earlier probe id; kept the first row of each probe (as GSEA does)",
            where, n_repeated,
        )
    if n_no_probe:
        logger.warning("%s: skipped %d rows with an empty probe id", where, n_no_probe)
    if not mapping:
        raise InputError(f"{where}: no probe has a gene symbol; check the 'Gene Symbol' column")
    return mapping


def read_probe_map(path: str | Path) -> dict[str, list[str]]:
    """Probe id -> gene symbols from a GSEA CHIP file, a GEO platform table (GPL SOFT
    family or ``.annot``) or a two-column TSV (probe, symbol). A probe annotated with
    several genes (``A /// B``) maps to each of them."""
    from permenrich.io.geo import _first_line, read_platform_table

    # The header alone says which format (reading the whole file for it read a large CHIP
    # twice); utf-8-sig, as _read_text decodes it. A CHIP is known by its header, whatever
    # the file's name.
    first = _first_line(_existing_file(path, "probe annotation")).lstrip("\ufeff")
    header = [h.strip().lower() for h in first.split("\t")]
    if not first.startswith(("^", "!")) and _PROBE_COLUMN in header and _SYMBOL_COLUMN in header:
        # read_chip's symbols are stripped and never empty; most name one gene.
        return {probe: [g.strip() for g in symbol.split("///") if g.strip() not in _NO_SYMBOL]
                if "///" in symbol else [symbol] for probe, symbol in read_chip(path).items()}
    return read_platform_table(path)


def apply_chip(
    expr: ExpressionData,
    chip_path: str | Path,
    method: Literal["mean", "max", "median"] = "mean",
) -> ExpressionData:
    """Map probe ids to gene symbols and collapse probes of the same gene.

    Parameters
    ----------
    expr : ExpressionData
        Rows named by probe ids.
    chip_path : str or Path
        CHIP file (:func:`read_chip`), GEO platform table or two-column TSV
        (:func:`read_probe_map`). A probe mapped to several genes counts for each.
    method : {"mean", "max", "median"}, default "mean"
        How probes of one symbol are combined, see
        :func:`permenrich.io.collapse_duplicates` (``"max"`` is GSEA's ``Max_probe``).

    Returns
    -------
    ExpressionData
        Rows named by gene symbol, in order of each symbol's first probe.

    Raises
    ------
    InputError
        The CHIP file is malformed, or none of the probes is in it.
    """
    mapping = read_probe_map(chip_path)
    genes_of_row = [mapping.get(probe) for probe in expr.gene_ids]
    mapped = np.array([bool(genes) for genes in genes_of_row])
    n_unmapped = int((~mapped).sum())
    if not mapped.any():
        raise InputError(
            f"{expr.source}: none of the {expr.n_genes} row ids (e.g. {_preview(expr.gene_ids, 3)}) is a probe in "
            f"{chip_path} (e.g. {_preview(list(mapping)[:3], 3)}); check that the CHIP file matches the platform, "
            f"or drop {option('chip')} if the rows are already gene symbols"
        )
    if n_unmapped:
        logger.warning(
            "%s: dropped %d of %d probes absent from %s or without a gene symbol there",
            expr.source, n_unmapped, expr.n_genes, chip_path,
        )
    rows = np.array([row for row, genes in enumerate(genes_of_row) if genes for _ in genes], dtype=np.int64)
    symbols = np.array([gene for genes in genes_of_row if genes for gene in genes], dtype=object)
    mapped_expr = ExpressionData(
        values=np.ascontiguousarray(expr.values[rows]),
        gene_ids=symbols,
        sample_ids=expr.sample_ids.copy(),
        source=expr.source,
        obs=None if expr.obs is None else expr.obs.copy(),
        dataset=expr.dataset,
    )
    return collapse_duplicates(mapped_expr, method=method)
