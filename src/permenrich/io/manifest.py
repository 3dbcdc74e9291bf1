"""Manifests: small TSV tables with one row per input (a study, a gene list), read
the same way for :func:`permenrich.meta` and :func:`permenrich.ora_lists`."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import pandas as pd

from permenrich.errors import InputError
from permenrich.io.expression import _format_suffix, _read_text, check_header_row


def read_manifest_rows(path: str | os.PathLike, *, columns: tuple[str, ...], required: tuple[str, ...],
                       what: str, entry: str, other_columns: bool = False) -> list[ManifestRow]:
    """The rows of a manifest: a TSV (CSV for ``.csv``; gzip for ``.gz``) whose header
    names some of ``columns`` (any case) and one ``entry`` per row; other columns are
    refused (a misspelt option), or left aside with ``other_columns`` (notes beside
    contrasts).

    Returns
    -------
    list of ManifestRow
        Each row's cells, stripped (an empty string for an empty or absent cell), with
        the row's ``line`` in the file for messages.

    Raises
    ------
    InputError
        One line naming the file (and the line): missing file, unreadable table,
        unknown or missing column, no row, an empty ``required`` cell.
    """
    where = str(path)
    expected = (f"a UTF-8 TSV with the columns {', '.join(columns)}"
                + (f" (required: {', '.join(required)})" if required and required != columns else ""))
    if not Path(path).is_file():
        found = " (it is a directory)" if Path(path).is_dir() else ""
        raise InputError(f"{where}: {what} not found{found}; give {expected}")
    try:
        # A line starting with '#' is a comment; a '#' inside a cell is part of the cell
        # (pandas' comment= would cut the row there and leave its other cells empty).
        text = _read_text(Path(path))  # UTF-8 or Latin-1, gzip, UTF-16 refused: as every reader
        kept = "\n".join("" if _is_comment(line) else line for line in text.splitlines())
        check_header_row(kept, "," if _format_suffix(Path(path)) == ".csv" else "\t", where, what, any_case=True)
        with warnings.catch_warnings():
            # A row with one cell more than the header would make its first cell an index
            # and shift the others under the wrong columns; index_col=False turns that into
            # pandas' warning about lost data, refused here.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(io.StringIO(kept), sep="," if _format_suffix(Path(path)) == ".csv" else "\t",
                                dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning:
        raise InputError(f"{where}: a row has more cells than the header; give {expected}") from None
    except (ValueError, OSError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        reason = "empty file" if isinstance(exc, pd.errors.EmptyDataError) else str(exc).splitlines()[-1]
        raise InputError(f"{where}: cannot read the {what} ({reason}); give {expected}") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    # The file's own line numbers: pandas skips comment and blank lines.
    lines = _content_lines(text)
    header_line = lines[0] if lines else 1
    row_lines = (lines[1:] if len(lines) == len(table) + 1
                 else list(range(header_line + 1, header_line + 1 + len(table))))
    unknown = [] if other_columns else [c for c in table.columns if c not in columns]
    if unknown:
        raise InputError(f"{where}: line {header_line}: unknown column {unknown[0]!r}; a {what} has the columns "
                         f"{', '.join(columns)}")
    for column in required:
        if column not in table.columns:
            raise InputError(f"{where}: line {header_line}: the column {column!r} is required")
    if table.empty:
        raise InputError(f"{where}: no {entry} listed; give one row per {entry} under the header")
    rows = []
    for line, record in zip(row_lines, table.to_dict("records")):
        cells = {column: str(record.get(column, "")).strip() for column in columns}
        for column in required:
            if not cells[column]:
                raise InputError(f"{where}: line {line}: the {column!r} cell is empty; every {entry} needs one")
        rows.append(ManifestRow(cells, line))
    return rows


class ManifestRow(dict):
    """One row's cells (a dict of column -> stripped text) and its ``line`` in the file."""

    def __init__(self, cells: dict[str, str], line: int) -> None:
        super().__init__(cells)
        self.line = line


def _content_lines(text: str) -> list[int]:
    """1-based numbers of the lines pandas reads (not blank, not starting with '#')."""
    return [number for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not _is_comment(line)]


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def relative_to(path: str | os.PathLike, text: str) -> str:
    """A path read from a manifest at ``path``: absolute as given, else relative to the
    manifest's folder."""
    return str(Path(text) if Path(text).is_absolute() else Path(path).parent / text)
