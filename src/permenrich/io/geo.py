"""GEO series matrices and platform tables, read offline (the user downloads the files).

Series matrix (``GSExxxx_series_matrix.txt`` or ``.gz``, or ``GSExxxx-GPLyyyy_...`` for one
platform of a multi-platform series): ``!Series_...`` and ``!Sample_...`` header lines,
then the table between ``!series_matrix_table_begin`` and ``!series_matrix_table_end``
(``ID_REF`` and one column per GSM sample). Per-sample annotations become ``obs`` columns:
``title``, ``geo_accession``, ``platform_id``, ``source_name_ch1`` and every
``!Sample_characteristics_ch1`` entry ``key: value`` as a column named ``key`` (so
``groupby="disease state"`` or ``covariates=["age"]`` work directly); values are kept as
stored.

Platform tables map probe ids (``ID_REF``) to gene symbols: a GPL SOFT family file or a
GEO ``.annot`` file (the table between ``!platform_table_begin`` and
``!platform_table_end``, symbols from the first column named like ``Gene Symbol``,
``Gene symbol``, ``GENE_SYMBOL`` or ``Symbol``), or a two-column TSV (probe, symbol).
A probe annotated with several genes (``A /// B``) counts for each of them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from permenrich.errors import InputError, option
from permenrich.io.expression import ExpressionData, _existing_file, _preview, _read_text, _split_lines, is_number

logger = logging.getLogger(__name__)

__all__ = ["looks_like_series_matrix", "read_series_matrix", "read_platform_table"]

_TABLE_BEGIN, _TABLE_END = "!series_matrix_table_begin", "!series_matrix_table_end"
_PLATFORM_BEGIN, _PLATFORM_END = "!platform_table_begin", "!platform_table_end"
_SYMBOL_COLUMNS = ("gene symbol", "gene_symbol", "symbol", "genesymbol")
_MISSING = ("", "null", "na", "nan")
#: A series whose values exceed this is most likely not on a log scale.
UNLOGGED_ABOVE = 100.0
_SAMPLE_FIELDS = {"!Sample_title": "title", "!Sample_geo_accession": "geo_accession",
                  "!Sample_platform_id": "platform_id", "!Sample_source_name_ch1": "source_name_ch1"}


def _first_line(path: Path) -> str:
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    return line
    except OSError:
        return ""
    return ""


def looks_like_series_matrix(path: str | Path) -> bool:
    """Whether a text file is a GEO series matrix (its first line is a ``!Series_`` field)."""
    return isinstance(path, (str, Path)) and Path(path).is_file() and _first_line(Path(path)).startswith("!Series_")


def _fields(line: str) -> list[str]:
    return [field.strip().strip('"') for field in line.rstrip("\n").split("\t")]


def read_series_matrix(path: str | Path) -> ExpressionData:
    """Read a GEO series matrix as genes (probes) x samples with per-sample ``obs``.

    Raises
    ------
    InputError
        No table markers, a ragged row, a non-numeric value, or a characteristics key
        given twice for one sample (naming the line), or no sample.

    Notes
    -----
    Characteristics written ``key: value`` become ``obs`` columns; entries without a
    key (older series) are skipped with a warning. Whether the values look unlogged is
    checked by the run (:func:`warn_if_unlogged`), which knows whether it takes the log.
    """
    where = str(path)
    lines = _split_lines(_read_text(_existing_file(path, "GEO series matrix")))
    try:
        begin = next(i for i, line in enumerate(lines) if line.strip().lower() == _TABLE_BEGIN)
        end = next(i for i, line in enumerate(lines) if line.strip().lower() == _TABLE_END)
    except StopIteration:
        raise InputError(f"{where}: no '{_TABLE_BEGIN}' ... '{_TABLE_END}' table; a GEO series matrix holds its "
                         "values between these two lines (download the _series_matrix.txt.gz file of the series)")
    if end <= begin + 1:
        raise InputError(f"{where}: line {begin + 1}: the series matrix table is empty")
    header = _fields(lines[begin + 1])
    if not header or header[0].upper() != "ID_REF" or len(header) < 2:
        raise InputError(f"{where}: line {begin + 2}: expected the table header 'ID_REF' then the sample ids, "
                         f"found {_preview(header)}")
    samples = header[1:]
    annotations: dict[str, list[str]] = {}
    characteristics: list[dict[str, str]] = [{} for _ in samples]
    keyless: list[tuple[int, str]] = []  # (line, first entry) of characteristics without a key
    accession_line = 0
    spellings: dict[str, str] = {}  # casefolded key -> the spelling first seen
    respelled: dict[str, int] = {}  # key -> first line spelling it otherwise
    for number, line in enumerate(lines[:begin], start=1):
        if not line.startswith("!Sample_"):
            continue
        fields = _fields(line)
        key, values = fields[0], fields[1:]
        if len(values) != len(samples):
            raise InputError(f"{where}: line {number}: {key} lists {len(values)} values for {len(samples)} samples")
        if key in _SAMPLE_FIELDS:
            annotations[_SAMPLE_FIELDS[key]] = values
            if key == "!Sample_geo_accession":
                accession_line = number
        elif key.startswith("!Sample_characteristics_ch1"):
            for sample, value in enumerate(values):
                if not value:
                    continue
                if ":" not in value:  # older series: a bare description ('bone marrow'), no column to fill
                    keyless.append((number, value))
                    continue
                name, entry = (part.strip() for part in value.split(":", 1))
                # 'Age' in one sample and 'age' in another: one column, named as first seen
                spelling = spellings.setdefault(name.casefold(), name)
                if spelling != name:
                    respelled.setdefault(spelling, number)
                    name = spelling
                if name in characteristics[sample] and characteristics[sample][name] != entry:
                    said = annotations.get("geo_accession", samples)[sample]  # the !Sample_ lines' order
                    raise InputError(f"{where}: line {number}, sample {said}: characteristic {name!r} "
                                     f"is given twice ({characteristics[sample][name]!r}, {entry!r})")
                characteristics[sample][name] = entry
    for name, number in respelled.items():
        logger.warning("%s: line %d: characteristic %r is spelled with other capitals for some samples; read as one "
                       "column %r", where, number, name, name)
    if keyless:
        logger.warning("%s: line %d: %d sample characteristic(s) are not 'key: value' (e.g. %r) and are not read as "
                       "annotation columns; give such annotations in a sample sheet (%s) if the analysis needs "
                       "them", where, keyless[0][0], len(keyless), keyless[0][1], option("phenotype"))
    ids, rows, row_lines = [], [], []
    for number in range(begin + 2, end):
        line = lines[number]
        if not line.strip():
            continue
        fields = _fields(line)
        if len(fields) != len(samples) + 1:
            raise InputError(f"{where}: line {number + 1}: {len(fields)} fields, expected {len(samples) + 1} "
                             "(ID_REF and one value per sample); the table is ragged")
        ids.append(fields[0])
        rows.append(fields[1:])
        row_lines.append(number + 1)
    if not rows:
        raise InputError(f"{where}: the table between lines {begin + 1} and {end + 1} has a header but no data rows; "
                         "the download may be incomplete")
    table = np.array(rows, dtype=object)
    values = np.full(table.shape, np.nan)
    missing = np.isin(np.char.lower(table.astype(str)), _MISSING)
    try:
        values[~missing] = table[~missing].astype(np.float64)
    except ValueError:
        bad = next((i, j) for i, j in zip(*np.nonzero(~missing)) if not is_number(table[i, j]))
        raise InputError(f"{where}: line {row_lines[bad[0]]}, column {bad[1] + 2}: expected a number, found "
                         f"{table[bad]!r}; use an empty field or null for a missing value") from None
    obs = pd.DataFrame(annotations, index=samples) if annotations else pd.DataFrame(index=samples)
    for name in dict.fromkeys(k for entry in characteristics for k in entry):
        obs[name] = [entry.get(name, "") for entry in characteristics]
    obs = _annotations_by_accession(obs, samples, where, accession_line, begin + 2)
    obs.index = obs.index.astype(str)
    return ExpressionData(values=values, gene_ids=np.array(ids, dtype=object),
                          sample_ids=np.array(samples, dtype=object), source=where, obs=obs)


def _annotations_by_accession(obs: pd.DataFrame, samples: list[str], where: str, accession_line: int,
                              header_line: int) -> pd.DataFrame:
    """The ``!Sample_`` lines' annotations in the order of the table's columns.

    GEO writes both in one order, and the annotations are read by position; a file whose
    table names its samples by GSM id in another order (edited, or merged from parts) is
    matched by id instead, and one whose ids differ from ``!Sample_geo_accession`` is
    refused: a label or covariate must never attach to another sample.
    """
    if not accession_line:
        return obs
    accessions = [str(a) for a in obs["geo_accession"]]
    if accessions == samples or not all(s.upper().startswith("GSM") for s in samples):
        return obs  # the same order, or a table whose columns are not named by accession
    if sorted(accessions) != sorted(samples):
        differ = next(s for s in samples if s not in accessions) if set(samples) - set(accessions) else (
            next(a for a in accessions if a not in samples))
        raise InputError(f"{where}: line {header_line}: the table's samples differ from !Sample_geo_accession (line "
                         f"{accession_line}), e.g. {differ!r} is in one only; the annotations cannot be matched to "
                         "the columns: use the series matrix as GEO wrote it")
    logger.warning("%s: line %d: the table lists the samples in another order than !Sample_geo_accession (line %d); "
                   "annotations matched to the columns by GSM id", where, header_line, accession_line)
    position = {accession: i for i, accession in enumerate(accessions)}
    return obs.iloc[[position[sample] for sample in samples]].set_axis(samples)


def warn_if_unlogged(data: ExpressionData) -> None:
    """Warn that a series matrix whose values exceed :data:`UNLOGGED_ABOVE` looks
    unlogged (a run says so unless it was asked to take the log itself)."""
    finite = data.values[np.isfinite(data.values)]
    if finite.size and finite.max() > UNLOGGED_ABOVE:
        logger.warning("%s: values reach %.4g: the series looks unlogged; most analyses expect log2 values "
                       "(%s)", data.source, float(finite.max()), option("normalize", "log2"))


def read_platform_table(path: str | Path) -> dict[str, list[str]]:
    """Probe id -> gene symbols from a GPL SOFT family file, a GEO ``.annot`` file or a
    two-column TSV (probe, symbol); ``///`` separates the genes of one probe.

    Raises
    ------
    InputError
        No table, no symbol column, or no probe with a symbol.
    """
    where = str(path)
    lines = _split_lines(_read_text(_existing_file(path, "platform table")))
    begin = next((i for i, line in enumerate(lines) if line.strip().lower() == _PLATFORM_BEGIN), None)
    if begin is not None:
        end = next((i for i, line in enumerate(lines) if line.strip().lower() == _PLATFORM_END), None)
        if end is None:  # a download cut short: probes past the cut would be "absent", silently
            raise InputError(f"{where}: line {begin + 1}: '{_PLATFORM_BEGIN}' has no '{_PLATFORM_END}' line after it; "
                             "the file looks truncated: download it again")
        header_at, table = begin + 1, lines[begin + 1:end]
    else:  # a two-column TSV, with or without a header
        header_at = next((i for i, line in enumerate(lines) if line.strip() and not line.startswith(("#", "!", "^"))),
                         None)
        if header_at is None:
            raise InputError(f"{where}: no platform table; expected '{_PLATFORM_BEGIN}' (GPL SOFT or .annot) or "
                             "two tab-separated columns (probe, symbol)")
        table = lines[header_at:]
    header = [h.lower() for h in _fields(table[0])] if table else []
    if begin is not None:
        symbol_col = next((header.index(name) for name in _SYMBOL_COLUMNS if name in header), None)
        if symbol_col is None:
            raise InputError(f"{where}: line {header_at + 1}: the platform table has no gene symbol column (looked "
                             f"for 'Gene Symbol', 'GENE_SYMBOL', 'Symbol'); found {_preview(_fields(table[0]))}")
        rows = table[1:]
    elif header and (_plain_name(header[0]) in _PROBE_HEADERS or len(header) > 2):  # a headed table
        # the symbols' column by its name (a header such as 'Probe Set ID, Gene Title'
        # must not turn titles into gene ids); a table of three or more columns is
        # never guessed at
        plain = [_plain_name(name) for name in header]
        symbol_col = next((plain.index(name) for name in map(_plain_name, _SYMBOL_COLUMNS) if name in plain), None)
        if symbol_col is None:
            raise InputError(f"{where}: line {header_at + 1}: no gene symbol column (looked for 'Gene Symbol', "
                             f"'GENE_SYMBOL', 'Symbol'); found {_preview(_fields(table[0]))}; name the symbols' "
                             "column 'Gene Symbol', or drop the header of a two-column (probe, symbol) file")
        rows = table[1:]
    else:
        symbol_col = 1
        rows = table
    mapping: dict[str, list[str]] = {}
    for line in rows:
        fields = _fields(line)
        if not fields or not fields[0] or len(fields) <= symbol_col:
            continue
        genes = [g.strip() for g in re.split(r"\s*///\s*", fields[symbol_col]) if g.strip() not in ("", "---")]
        if genes and fields[0] not in mapping:
            mapping[fields[0]] = genes
    if not mapping:
        other = next((mark for mark in (",", ";") if table and mark in table[0] and "\t" not in table[0]), None)
        hint = (f"; its columns seem to be separated by {'commas' if other == ',' else 'semicolons'}, where a "
                "platform table's are tabs" if other else "")
        raise InputError(f"{where}: no probe of the platform table has a gene symbol{hint}")
    return mapping


#: First header names of a probe table with a header row (compared by :func:`_plain_name`).
_PROBE_HEADERS = ("id", "id ref", "probe", "probe id", "probe set id", "probeset id", "probeset", "probe set")


def _plain_name(name: str) -> str:
    """A column name lower-cased, with '_' and '-' as spaces and runs of spaces as one."""
    return " ".join(re.sub(r"[_\-]", " ", name.strip().lower()).split())
