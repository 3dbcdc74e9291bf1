"""Pre-ranked gene lists: GSEA's RNK format, and pandas Series/DataFrame.

The rules are those of ``shared/FORMATS.md`` (RNK): two columns, gene and score; accept
what GSEA desktop's ``RankedListParser`` accepts, and fail early on the rest with one line
naming the file, line and column and what to do. Parsing is vectorised (pandas string
methods over all lines, one float conversion), so 50 000-line files read in milliseconds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from permenrich.errors import InputError, OptionError, option
from permenrich.io.expression import (
    _MAX_ABS_TEXT,
    MAX_ABS_VALUE,
    _existing_file,
    _format_suffix,
    _read_text,
    _split_lines,
    is_number,
    refuse_other_role,
)

logger = logging.getLogger(__name__)

__all__ = ["RankedList", "read_rnk"]

DUPLICATE_POLICIES = ("error", "mean", "max", "min", "first")
_NAN_POLICIES = ("skip", "error")
_TEXT_SUFFIXES = {".rnk", ".tsv", ".txt", ".tab", ".csv"}
# Score text that means "no score" (compared lower-cased, after stripping). GSEA reads
# "NaN" as a float and skips it; empty and NA are the usual spellings from R and Excel.
_MISSING_SCORES = ("", "na", "n/a", "nan")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")


@dataclass
class RankedList:
    """Genes with one score each, as read (not sorted).

    Attributes
    ----------
    gene_ids : numpy.ndarray
        dtype object (str), unique, in file order (first occurrence when duplicates were
        collapsed).
    scores : numpy.ndarray
        float64, finite, same length as ``gene_ids``.
    source : str
        The path as given, or ``"<Series>"`` / ``"<DataFrame>"``; used in messages.
    """

    gene_ids: np.ndarray
    scores: np.ndarray
    source: str

    def __post_init__(self) -> None:
        # A mismatch is a bug in whoever built the object, not a user mistake.
        if self.gene_ids.ndim != 1 or self.scores.shape != self.gene_ids.shape:
            raise ValueError(
                f"gene_ids {self.gene_ids.shape} and scores {self.scores.shape} must be 1-D of the same length"
            )

    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return int(self.gene_ids.shape[0])


def read_rnk(
    source: str | Path | pd.Series | pd.DataFrame,
    *,
    duplicates: Literal["error", "mean", "max", "min", "first"] = "error",
    nan_policy: Literal["skip", "error"] = "skip",
) -> RankedList:
    """Read a pre-ranked gene list.

    Parameters
    ----------
    source : str, Path, pandas.Series or pandas.DataFrame
        - a file ``.rnk``/``.tsv``/``.txt``/``.tab`` (tab-separated) or ``.csv`` (comma;
          one layer of double quotes around a field is removed, separators inside quotes
          are not supported), optionally ``.gz`` compressed: one ``gene<sep>score`` per
          line. Lines starting with ``#`` and blank lines are skipped; trailing empty
          fields are ignored. The first data line is a header, and skipped with a WARNING
          naming it, when its second column is not a number (e.g. ``Name<tab>Rank``).
        - a Series: index = gene ids, values = scores.
        - a DataFrame with exactly two columns: gene ids, then scores (the index is
          ignored).
    duplicates : {"error", "mean", "max", "min", "first"}, default "error"
        A gene id on several lines: ``"error"`` raises naming the first repeat; the
        others collapse each repeated gene to one score (mean, maximum, minimum, or that
        of its first line) with a WARNING giving the count.
    nan_policy : {"skip", "error"}, default "skip"
        Missing scores (empty, ``NA``, ``N/A``, ``NaN``): ``"skip"`` drops those genes
        with a WARNING giving the count, as GSEA does; ``"error"`` raises naming the
        first such line.

    Returns
    -------
    RankedList
        Genes in file order, unique, with finite float64 scores within
        ±:data:`~permenrich.io.expression.MAX_ABS_VALUE`, at least two of them different.
        The list is not sorted.

    Raises
    ------
    InputError
        A missing or unreadable file; a line with other than two fields; an empty gene
        id; a score that is not a number; an infinite score or one beyond ±1e100; a
        missing score under ``nan_policy="error"``; a duplicated gene under
        ``duplicates="error"``; fewer than two genes with a score, or all scores equal.
    OptionError
        An unknown ``duplicates`` or ``nan_policy``.

    Notes
    -----
    GSEA's parser does not check for duplicated genes (too costly, it says) and ranks
    ``±Infinity`` scores as they come; both silently distort the enrichment scores, so
    here duplicates are errors unless a collapse method is asked for, and infinite
    scores always are. The caller's Series or DataFrame is never modified.

    Examples
    --------
    >>> import pandas as pd
    >>> ranked = read_rnk(pd.Series({"TP53": 2.5, "MYC": -1.0}))
    >>> ranked.gene_ids.tolist(), ranked.scores.tolist()
    (['TP53', 'MYC'], [2.5, -1.0])
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise OptionError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    if nan_policy not in _NAN_POLICIES:
        raise OptionError(f"nan_policy must be one of {_NAN_POLICIES}, got {nan_policy!r}")

    if isinstance(source, pd.Series):
        where = "<Series>"
        gene_ids = _ids_from_objects(source.index.to_numpy(), where, "index")
        scores = _scores_from_objects(source.to_numpy(), where)
        places = _Places("entry", np.arange(1, len(source) + 1))
    elif isinstance(source, pd.DataFrame):
        where = "<DataFrame>"
        if source.shape[1] != 2:
            raise InputError(
                f"{where}: ranked list has {source.shape[1]} columns; expected exactly two (gene ids, then "
                "scores); select them, e.g. df[['gene', 'score']], or pass a Series indexed by gene"
            )
        gene_ids = _ids_from_objects(source.iloc[:, 0].to_numpy(), where, "column 1")
        scores = _scores_from_objects(source.iloc[:, 1].to_numpy(), where)
        places = _Places("row", np.arange(1, len(source) + 1))
    elif isinstance(source, (str, Path)):
        where = str(source)
        path = _existing_file(source, "RNK")
        refuse_other_role(path, where, "a ranked list", own="rnk")
        suffix = _format_suffix(path)
        if suffix not in _TEXT_SUFFIXES:
            logger.warning("%s: unknown extension %r, reading it as tab-separated RNK", where, suffix)
        gene_ids, scores, line_numbers = _parse_rnk_text(
            _read_text(path), where, sep="," if suffix == ".csv" else "\t"
        )
        places = _Places("line", line_numbers)
    else:
        raise InputError(
            f"ranked list must be a file path, a pandas Series (gene -> score) or a two-column DataFrame, "
            f"got {type(source).__name__}"
        )

    gene_ids, scores, places = _check_scores(gene_ids, scores, places, where, nan_policy=nan_policy)
    gene_ids, scores = _resolve_duplicates(gene_ids, scores, places, where, duplicates=duplicates)
    if scores.size < 2:
        raise InputError(f"{where}: only gene {gene_ids[0]!r} has a score; a ranked list needs at least two genes")
    if scores.min() == scores.max():
        raise InputError(f"{where}: every gene has the same score ({scores[0]:g}); nothing can be ranked")
    logger.debug("%s: read %d ranked genes", where, len(gene_ids))
    return RankedList(gene_ids=gene_ids, scores=scores, source=where)


# --------------------------------------------------------------------------------------
# Places in messages: "line 12" for files, "entry 3" / "row 3" for in-memory objects
# --------------------------------------------------------------------------------------


@dataclass
class _Places:
    unit: str
    numbers: np.ndarray

    def __call__(self, i: int, column: int | None = None) -> str:
        """``line 12`` (``line 12, column 2`` with a column, for files only)."""
        place = f"{self.unit} {int(self.numbers[i])}"
        return place if column is None or self.unit != "line" else f"{place}, column {column}"

    @property
    def plural(self) -> str:
        return "entries" if self.unit == "entry" else self.unit + "s"

    def pair(self, i: int, j: int) -> str:
        return f"{self.plural} {int(self.numbers[i])} and {int(self.numbers[j])}"

    def subset(self, keep: np.ndarray) -> _Places:
        return _Places(self.unit, self.numbers[keep])


# --------------------------------------------------------------------------------------
# Text files
# --------------------------------------------------------------------------------------


def _parse_rnk_text(text: str, where: str, *, sep: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RNK text -> gene ids, float64 scores (NaN = missing), 1-based line numbers."""
    lines = _split_lines(text)
    # GSEA skips lines starting with "#" (and blank lines) wherever they are.
    data_at = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    if not data_at:
        raise InputError(f"{where}: no genes found; expected one 'gene<tab>score' per line")
    line_numbers = np.asarray(data_at, dtype=np.int64) + 1
    # Three pieces at most: gene, score, and whatever follows (must be empty fields only).
    rows = [lines[i].split(sep, 2) for i in data_at]
    n_pieces = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad = [int(i) for i in np.flatnonzero(n_pieces != 2) if n_pieces[i] < 2 or rows[i][2].strip(sep + " \t\r")]
    if bad:
        _raise_field_count(lines[data_at[bad[0]]], int(line_numbers[bad[0]]), where, sep)

    genes = pd.Series([row[0] for row in rows], dtype=object).str.strip()
    score_text = pd.Series([row[1] for row in rows], dtype=object).str.strip()
    if sep == ",":
        genes = _unquote(genes)
        score_text = _unquote(score_text)
    missing = score_text.str.lower().isin(_MISSING_SCORES).to_numpy()

    # GSEA's rule: a first line whose score does not parse is a header.
    first_score = score_text.iloc[0]
    if not missing[0] and not is_number(first_score):
        if len(rows) == 1:
            raise InputError(
                f"{where}: line {line_numbers[0]} is the only data line and looks like a header (column 2 is "
                f"{first_score!r}, not a number); expected one 'gene<tab>score' per line"
            )
        logger.warning(
            "%s: line %d %r taken as a header and skipped (column 2 is %r, not a number)",
            where, line_numbers[0], lines[data_at[0]].strip(), first_score,
        )
        genes, score_text, missing, line_numbers = genes.iloc[1:], score_text.iloc[1:], missing[1:], line_numbers[1:]

    gene_ids = genes.to_numpy(dtype=object)
    empty = np.flatnonzero(gene_ids == "")
    if empty.size:
        raise InputError(f"{where}: line {line_numbers[empty[0]]}, column 1: gene id is empty; every line needs one")
    scores = _parse_scores(score_text.to_numpy(dtype=object), missing, line_numbers, where)
    return gene_ids, scores, line_numbers


def _raise_field_count(line: str, line_number: int, where: str, sep: str) -> None:
    fields = line.split(sep)
    while len(fields) > 2 and not fields[-1].strip():
        fields.pop()
    name = "tab" if sep == "\t" else "comma"
    hint = f"check for missing or extra {name}s on that line"
    if len(fields) == 1 and sep == "\t" and len(line.split()) == 2:
        hint = "the fields seem to be separated by spaces; RNK fields must be tab-separated"
    elif len(fields) == 1 and sep == "\t" and "," in line:
        hint = "the fields seem to be comma-separated; name the file .csv or use tabs"
    raise InputError(
        f"{where}: line {line_number} has {len(fields)} field{'s' if len(fields) != 1 else ''}, "
        f"expected 2 (gene, score); {hint}"
    )


def _unquote(values: pd.Series) -> pd.Series:
    return values.str.replace(r'^"(.*)"$', r"\1", regex=True).str.strip()


def _parse_scores(
    text: np.ndarray, missing: np.ndarray, numbers: np.ndarray, where: str, unit: str = "line"
) -> np.ndarray:
    """Strings -> float64 (missing -> NaN), naming the first bad value."""
    cleaned = np.where(missing, "nan", text)
    try:
        return np.asarray(cleaned, dtype=np.float64)
    except ValueError:
        pass
    # Error path only. pandas rejects a few strings float() takes ("1_0"), so confirm
    # each candidate with float() and report the first in file order.
    parsed = pd.to_numeric(pd.Series(cleaned, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    for i in np.flatnonzero(np.isnan(parsed) & ~missing):
        if not is_number(cleaned[i]):
            column = ", column 2" if unit == "line" else ""
            hint = (
                "use '.' as the decimal separator" if _DECIMAL_COMMA.match(str(cleaned[i]))
                else "use an empty field or NA for a missing score"
            )
            raise InputError(
                f"{where}: {unit} {numbers[i]}{column}: expected a number (the score), found {cleaned[i]!r}; {hint}"
            )
    raise AssertionError("unreachable: float conversion failed but no bad score was found")  # pragma: no cover


# --------------------------------------------------------------------------------------
# In-memory objects
# --------------------------------------------------------------------------------------


def _ids_from_objects(values: np.ndarray, where: str, what: str) -> np.ndarray:
    missing = pd.isna(values)
    gene_ids = np.array(["" if m else str(v).strip() for v, m in zip(values, missing)], dtype=object)
    empty = np.flatnonzero(gene_ids == "")
    if empty.size:
        raise InputError(
            f"{where}: entry {empty[0] + 1} of the {what}: gene id is empty or missing; every score needs one"
        )
    return gene_ids


def _scores_from_objects(values: np.ndarray, where: str) -> np.ndarray:
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    # Strings or mixed objects: apply the text rules (so "NA" and "" count as missing).
    missing_obj = pd.isna(values)
    text = np.array(["" if m else str(v).strip() for v, m in zip(values, missing_obj)], dtype=object)
    missing = pd.Series(text, dtype=object).str.lower().isin(_MISSING_SCORES).to_numpy()
    unit = "row" if where == "<DataFrame>" else "entry"
    return _parse_scores(text, missing, np.arange(1, len(text) + 1), where, unit=unit)


# --------------------------------------------------------------------------------------
# Checks shared by all sources
# --------------------------------------------------------------------------------------


def _check_scores(
    gene_ids: np.ndarray, scores: np.ndarray, places: _Places, where: str, *, nan_policy: str
) -> tuple[np.ndarray, np.ndarray, _Places]:
    """Reject infinite scores and scores beyond ±MAX_ABS_VALUE; skip or reject missing
    ones; something must remain."""
    beyond = np.flatnonzero(np.abs(scores) > MAX_ABS_VALUE)  # NaN compares False: missing, handled below
    if beyond.size:
        i = beyond[0]
        if np.isinf(scores[i]):
            n_inf = int(np.isinf(scores).sum())
            raise InputError(
                f"{where}: {places(i, column=2)}: score of gene {gene_ids[i]!r} is {scores[i]}"
                f" ({n_inf} infinite score{'s' if n_inf > 1 else ''} in all); infinite scores cannot be "
                "ranked meaningfully, cap them at a finite value (e.g. just beyond the largest finite score)"
            )
        raise InputError(
            f"{where}: {places(i, column=2)}: score of gene {gene_ids[i]!r} is {scores[i]:g}; values beyond "
            f"{_MAX_ABS_TEXT} overflow float64 moment sums; rescale (e.g. log-transform) the scores"
        )
    nan = np.isnan(scores)
    n_nan = int(nan.sum())
    if n_nan:
        if nan_policy == "error":
            i = int(np.flatnonzero(nan)[0])
            raise InputError(
                f"{where}: {places(i)}: score of gene {gene_ids[i]!r} is missing (empty, NA or NaN; {n_nan} in all); "
                f"remove or fill such genes, or use {option('nan_policy', 'skip')} to drop them as GSEA does"
            )
        logger.warning("%s: skipped %d genes with a missing score (empty, NA or NaN), as GSEA does", where, n_nan)
        keep = ~nan
        gene_ids, scores, places = gene_ids[keep], scores[keep], places.subset(keep)
        if not keep.any():
            raise InputError(f"{where}: no gene has a score (all {n_nan} are missing); check the score column")
    return gene_ids, scores, places


def _resolve_duplicates(
    gene_ids: np.ndarray, scores: np.ndarray, places: _Places, where: str, *, duplicates: str
) -> tuple[np.ndarray, np.ndarray]:
    ids = pd.Index(gene_ids)
    repeated = ids.duplicated(keep="first")
    if not repeated.any():
        return gene_ids, np.ascontiguousarray(scores, dtype=np.float64)
    if duplicates == "error":
        second = int(np.flatnonzero(repeated)[0])
        first = int(np.flatnonzero(ids == gene_ids[second])[0])
        n_repeated = int(ids[repeated].nunique())
        raise InputError(
            f"{where}: gene {gene_ids[second]!r} appears more than once ({places.pair(first, second)}; "
            f"{n_repeated} repeated gene{'s' if n_repeated > 1 else ''} in all); remove the repeats, "
            f"or collapse them with {option('duplicates', 'mean')} (also max, min, first)"
        )
    grouped = pd.Series(scores).groupby(gene_ids, sort=False).agg(duplicates)
    n_genes = int(ids[repeated].nunique())
    logger.warning(
        "%s: %d gene ids appear more than once (%d %s); collapsed each to the %s of its scores; %d genes remain",
        where, n_genes, int(ids.duplicated(keep=False).sum()), places.plural, duplicates, len(grouped),
    )
    return (
        np.asarray(grouped.index.to_numpy(), dtype=object),
        np.ascontiguousarray(grouped.to_numpy(), dtype=np.float64),
    )
