"""Expression matrices: GCT, delimited text, h5ad, plain HDF5, DataFrame and AnnData.

Every reader returns an :class:`ExpressionData` holding a float64 matrix of shape
``(n_genes, n_samples)``. The rules for each format, and what counts as bad input, are
those of ``shared/FORMATS.md``: accept what GSEA desktop accepts, fail early on the rest
with one line naming the file, line and column and what to do.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import logging
import posixpath
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence, TextIO

import numpy as np
import pandas as pd

from permenrich.errors import InputError, OptionError, option

logger = logging.getLogger(__name__)

__all__ = ["ExpressionData", "read_expression", "collapse_duplicates", "MAX_ABS_VALUE", "MIN_ABS_VALUE"]

#: Largest magnitude accepted for an expression value (or a ranking score). The moment
#: sums behind every statistic add squares: beyond about 1e154 one square overflows
#: float64, and 1e100 leaves room for sums over 1e100 samples. Every reader, the streamed
#: quality pass and the pseudobulk sums refuse larger values (:func:`check_value_range`).
MAX_ABS_VALUE = 1e100
_MAX_ABS_TEXT = f"±{MAX_ABS_VALUE:.0e}".replace("e+", "e")
#: Smallest magnitude accepted for a nonzero expression value: squares of differences
#: below about 1e-154 underflow, so a gene of such values got a zero or inexact variance
#: (a t of inf, silently). 1e-100 mirrors MAX_ABS_VALUE. Ranking scores are exempt: the
#: running sum scales them (:func:`permenrich.enrich.running_sum.scaled_for_weights`).
MIN_ABS_VALUE = 1e-100

# Text that means "missing" in a value cell (FORMATS.md: empty or NA). Python's float()
# also takes "nan"/"NaN"/"inf", so those parse without being listed here.
_MISSING_TOKENS = ("", "NA", "na", "N/A")
_TEXT_SUFFIXES = {".gct", ".tsv", ".txt", ".csv", ".tab"}
_H5AD_SUFFIXES = {".h5ad"}
_HDF5_SUFFIXES = {".h5", ".hdf5", ".he5"}
_COLLAPSE_METHODS = ("mean", "max", "median")
# A text file of up to this many characters (64 Mi: 20,000 genes x 300 samples) is read
# into memory at once and, when plain, parsed by NumPy's C reader; a larger one streams
# row by row in blocks, bounding memory.
_WHOLE_TEXT_CHARS = 1 << 26


@dataclass
class ExpressionData:
    """A gene-by-sample expression matrix with its names.

    Attributes
    ----------
    values : numpy.ndarray
        float64, shape ``(n_genes, n_samples)``; C-ordered from the readers, possibly
        F-ordered (a transposed samples x genes array) after pseudobulk/normalisation, which
        saves a copy of the matrix.
    gene_ids : numpy.ndarray
        dtype object (str), length ``n_genes``. May hold duplicates until
        :func:`collapse_duplicates` is applied.
    sample_ids : numpy.ndarray
        dtype object (str), length ``n_samples``, unique.
    source : str
        The path as given, or ``"<DataFrame>"`` / ``"<AnnData>"``; used in messages.
    obs : pandas.DataFrame or None
        Per-sample annotations (h5ad/AnnData ``obs``, index = sample ids), else None.
    dataset : str or None
        HDF5/h5ad only: the dataset or group the values came from (``X``,
        ``layers/counts``, ``matrix``); used in messages.
    """

    values: np.ndarray
    gene_ids: np.ndarray
    sample_ids: np.ndarray
    source: str
    obs: pd.DataFrame | None = None
    dataset: str | None = None

    def __post_init__(self) -> None:
        # Shapes are the contract every backend relies on; a mismatch here is a bug in
        # whoever built the object, not a user mistake, hence ValueError.
        if self.values.ndim != 2:
            raise ValueError(f"values must be 2-D (n_genes, n_samples), got shape {self.values.shape}")
        if self.values.shape != (len(self.gene_ids), len(self.sample_ids)):
            raise ValueError(
                f"values shape {self.values.shape} does not match {len(self.gene_ids)} gene ids "
                f"x {len(self.sample_ids)} sample ids"
            )

    @property
    def n_genes(self) -> int:
        """Number of rows (genes or probes)."""
        return int(self.values.shape[0])

    @property
    def n_samples(self) -> int:
        """Number of columns (samples)."""
        return int(self.values.shape[1])


# --------------------------------------------------------------------------------------
# Shared file helpers (also used by the phenotype, gene-set and CHIP readers)
# --------------------------------------------------------------------------------------


def _existing_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise InputError if it is not a readable file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{path}: {what} file not found; check the path")
    if p.is_dir():
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise InputError(f"{path}: expected {article} {what} file, found a directory; give the file inside it")
    return p


#: Files known by their ending to play another part in a run: what they are, and the
#: option they go to.
_ROLES = {".gmt": ("a gene-set file", "gene_sets"), ".gmx": ("a gene-set file", "gene_sets"),
          ".grp": ("a gene-set file", "gene_sets"), ".cls": ("a phenotype (CLS) file", "phenotype"),
          ".rnk": ("a ranked list (RNK)", "rnk"), ".chip": ("a probe annotation (CHIP)", "chip"),
          ".gct": ("an expression matrix (GCT)", "expr"), ".h5ad": ("an expression matrix (h5ad)", "expr")}


def refuse_other_role(path: Path, source: str, what: str, *, own: str) -> None:
    """Refuse a file whose ending says it belongs to another option (a GMT given as the
    expression matrix), in one line naming that option, rather than let a parser fail on
    its layout; ``own``: the option reading it now."""
    suffix = _format_suffix(path)
    role = _ROLES.get(suffix)
    if role is not None and role[1] != own:
        where = " (of gsea, genes, ora or meta; prerank takes genes and their scores)" if own == "rnk" else ""
        raise InputError(f"{source}: this is {role[0]}, not {what} (by its {suffix} ending); give it as "
                         f"{option(role[1])}{where}")


def _format_suffix(path: Path) -> str:
    """Lower-case extension, looking through a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _read_text(path: Path) -> str:
    """Whole file as text (gzip if it ends in .gz; UTF-8 with a Latin-1 fallback)."""
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the file ({exc}); check that it is complete and readable") from exc
    _refuse_utf16(raw[:2], path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Old GSEA files are often Latin-1; names only need to round-trip, not be pretty.
        return raw.decode("latin-1")


def _refuse_utf16(start: bytes, path: Path) -> None:
    """UTF-16 text (Excel's 'Unicode text') decodes as Latin-1 into lines of NUL-padded
    characters, which every reader would misparse: refuse it by its byte-order mark."""
    if start in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(f"{path}: the file is UTF-16 text (e.g. Excel's 'Unicode text'); save it as UTF-8 "
                         "(or plain tab-delimited text)")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text without the line ending)`` of each line, one at a time.

    The streaming form of ``_split_lines(_read_text(path))``: gzip if the name ends in
    .gz; lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac files, which GSEA's
    readers also split); each line is UTF-8 or, failing that, Latin-1 (decided per line,
    since earlier lines may already have been used).
    """
    try:
        with gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb") as handle:
            number = 0
            _refuse_utf16(handle.peek(2)[:2] if hasattr(handle, "peek") else b"", path)
            for raw in handle:
                raw = raw[:-1] if raw.endswith(b"\n") else raw
                raw = raw[:-1] if raw.endswith(b"\r") else raw
                for piece in raw.split(b"\r") if b"\r" in raw else (raw,):
                    number += 1
                    try:
                        line = piece.decode("utf-8")
                    except UnicodeDecodeError:
                        line = piece.decode("latin-1")
                    yield number, line.removeprefix("\ufeff") if number == 1 else line
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the file ({exc}); check that it is complete and readable") from exc


def _preview(items: Sequence[Any], limit: int = 5) -> str:
    """``'a', 'b', 'c', ... (12 in all)`` for messages."""
    items = list(items)
    shown = ", ".join(repr(str(x)) for x in items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in all)"


def check_header_row(text: str, sep: str, where: str, what: str, *, any_case: bool = False) -> None:
    """Refuse the header row of a delimited table (a sample sheet, a manifest) that
    names a column twice (pandas would rename the second 'x.1' and the first would be
    used, silently; ``any_case``: names compared as the table's reader does, ignoring
    case) or holds one column that another separator would split (a ';'-separated sheet
    named .csv, a space-separated .tsv). ``what`` names the table."""

    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        return
    number, line = lines[0]
    names = [name.strip() for name in next(csv.reader([line], delimiter=sep))]
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        key = name.lower() if any_case else name
        if name and key in seen:
            raise InputError(f"{where}: line {number}: column {name!r} appears twice (columns {seen[key]} and "
                             f"{position}); name each column once")
        seen.setdefault(key, position)
    # one header name over rows of two fields is R's write.table (row names): not a wrong separator
    rows_wider = len(lines) > 1 and len(next(csv.reader([lines[1][1]], delimiter=sep))) > len(names)
    if len(names) == 1 and not rows_wider:
        other = next((mark for mark in ("\t", ";", ",", " ") if mark != sep and mark in line.strip()), None)
        if other is not None:
            said = {"\t": "tabs", ";": "semicolons", ",": "commas", " ": "spaces"}
            raise InputError(f"{where}: line {number}: the header is one column ({line.strip()[:60]!r}); this {what} "
                             f"seems to separate its columns with {said[other]}, where its suffix says "
                             f"{'commas' if sep == ',' else 'tabs'}: separate them with tabs (.tsv, .txt) or commas "
                             "(.csv)")


def _split_lines(text: str) -> list[str]:
    """Split on ``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac files; GSEA's readers end lines
    at all three), and nothing else (``str.splitlines`` also splits on form feeds etc.)."""
    if "\r" in text:  # a scan is cheap; two replacements copy the whole text twice
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def data_place(source: str, dataset: str | None) -> str:
    """``cells.h5ad, dataset 'X'`` for HDF5 input, else just ``source``; for messages."""
    return source if dataset is None else f"{source}, dataset {dataset!r}"


# --------------------------------------------------------------------------------------
# The value range (MAX_ABS_VALUE), shared by the readers, streaming and pseudobulk
# --------------------------------------------------------------------------------------


def check_constant_genes(constant: np.ndarray, gene_ids: Sequence[Any], policy: str, source: str) -> None:
    """Apply the ``zero_variance`` policy to the genes marked ``constant`` (the same value
    in every analysed sample): refuse them (``"error"``), or warn that they are dropped
    (``"drop"``; the caller drops them). Refused whatever the policy when every gene is
    constant. One rule for matrices in memory and streamed ones.

    Raises
    ------
    InputError
        Every gene is constant, or some are and the policy is ``"error"``.
    """
    if not constant.any():
        return
    if constant.all():
        raise InputError(f"{source}: every gene has the same value in all analysed samples; "
                         "nothing can be ranked")
    if policy == "error":
        first = gene_ids[int(np.flatnonzero(constant)[0])]
        raise InputError(f"{source}: gene {first!r} has zero variance across the analysed samples "
                         f"({int(constant.sum())} such genes); remove them or pass "
                         f"{option('zero_variance', 'drop')}")
    logger.warning("%s: dropped %d zero-variance genes (constant across the analysed samples)", source,
                   int(constant.sum()))


def first_out_of_range(values: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first value (C order) that is NaN, ±inf, beyond ±``MAX_ABS_VALUE`` or
    nonzero and nearer 0 than ±``MIN_ABS_VALUE``.

    Parameters
    ----------
    values : numpy.ndarray
        float, any shape and memory layout.

    Returns
    -------
    tuple of int or None
        The index into ``values``; None when every value is within range.
    """
    if values.size == 0:
        return None
    # min and max make no temporary copy; a NaN propagates into both and fails the test.
    # Compared as Python floats: 1e100 cast to a float32 array's dtype would overflow.
    if not (float(values.min()) >= -MAX_ABS_VALUE and float(values.max()) <= MAX_ABS_VALUE):
        flat = np.flatnonzero(~(np.abs(values) <= np.float64(MAX_ABS_VALUE)))
        return tuple(int(i) for i in np.unravel_index(flat[0], values.shape))
    if values.dtype.kind != "f" or values.dtype.itemsize < 8:  # integers, float32 (nothing below 1.4e-45 but 0)
        return None
    rows = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(-1, 1)
    step = max(1, (1 << 20) // rows.shape[1])  # blocks of rows: temporaries of ~8 MB, not of the matrix
    for start in range(0, rows.shape[0], step):
        block = np.abs(rows[start:start + step])
        tiny = np.flatnonzero((block < MIN_ABS_VALUE) & (block > 0))
        if tiny.size:
            return tuple(int(i) for i in np.unravel_index(start * rows.shape[1] + int(tiny[0]), values.shape))
    return None


def value_error(where: str, gene: Any, sample: Any, value: float) -> InputError:
    """The error for one value found by :func:`first_out_of_range`.

    Non-finite values only reach this in data that is never read whole (streamed or
    pseudobulk input); the in-memory readers apply the ``nan_policy`` first.
    """
    if not np.isfinite(value):
        return InputError(
            f"{where}: gene {str(gene)!r}, sample {str(sample)!r} has a missing or non-finite value ({value}); "
            f"streamed and pseudobulk data must be complete: fix the file (data read into memory may drop such "
            f"genes with {option('nan_policy', 'drop')})"
        )
    if abs(value) < MIN_ABS_VALUE:
        return InputError(
            f"{where}: gene {str(gene)!r}, sample {str(sample)!r} has value {value:g}; nonzero values nearer 0 than "
            f"±{MIN_ABS_VALUE:.0e} underflow float64 moment sums (a variance of 0 or an inexact one); rescale the "
            "data, or write such values as 0"
        )
    return InputError(
        f"{where}: gene {str(gene)!r}, sample {str(sample)!r} has value {value:g}; values beyond {_MAX_ABS_TEXT} "
        "overflow float64 moment sums; rescale (e.g. log-transform) the data"
    )


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def read_expression(
    source: str | Path | pd.DataFrame | Any,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    h5_dataset: str = "X",
    nan_policy: Literal["error", "drop"] = "error",
) -> ExpressionData:
    """Read an expression matrix into genes x samples float64.

    Parameters
    ----------
    source : str, Path, pandas.DataFrame or anndata.AnnData
        - ``.gct`` (1.2 or 1.3; also any text file whose first line is ``#1.2``/``#1.3``).
        - ``.tsv``/``.txt``/``.tab`` (tab) or ``.csv`` (comma): a header row, then one row
          per gene; first column gene ids; leading columns after it whose values are all
          non-numeric (e.g. ``NAME``, ``Description``) are descriptive and dropped; the
          rest are samples. A header one field shorter than the rows (R's
          ``write.table``) is accepted. ``.gz`` compressed text is read too.
        - ``.h5ad``: samples x genes (obs x var), dense or sparse ``X``; genes from
          ``var_names``, samples from ``obs_names``; ``obs`` is kept.
        - ``.h5``/``.hdf5``: plain HDF5 laid out as::

              <group>/X           2-D float dataset, shape (n_genes, n_samples)
              <group>/gene_ids    1-D string dataset, length n_genes
              <group>/sample_ids  1-D string dataset, length n_samples

          where ``X`` is ``h5_dataset`` (default ``"X"``, may be a path such as
          ``"expr/X"``) and the two name datasets sit in the same group. Files in the 10x
          ``filtered_feature_bc_matrix.h5`` layout (group ``matrix``) and h5ad files saved
          as ``.h5`` are recognised as well.
        - a DataFrame: genes x samples, index = gene ids, numeric columns = samples.
        - an AnnData: samples x genes, as for ``.h5ad``.
    layer : str, optional
        h5ad/AnnData only: read ``layers[layer]`` instead of ``X``; ``"raw"`` reads
        ``raw.X`` when no layer of that name exists.
    use_raw : bool, default False
        h5ad/AnnData only: read ``raw.X`` with the genes of ``raw.var_names``; not
        together with ``layer``.
    h5_dataset : str, default "X"
        Plain HDF5 only: path of the 2-D dataset.
    nan_policy : {"error", "drop", "defer"}, default "error"
        What to do with genes that have some non-finite values (NaN, ±inf): refuse the
        file, drop such genes, or keep them for the caller to decide on the samples it
        analyses (:func:`apply_nan_policy`; the value range is then checked there too).
        Genes with no finite value at all are always dropped with a warning.

    Returns
    -------
    ExpressionData
        Duplicated gene ids are kept as they are; see :func:`collapse_duplicates`.

    Raises
    ------
    InputError
        A missing or malformed file, non-numeric values, duplicated sample names,
        partially missing genes under ``nan_policy="error"``, a value beyond
        ±:data:`MAX_ABS_VALUE`, or no gene left.
    OptionError
        An unknown ``nan_policy``, ``layer`` or ``use_raw`` given for a format without
        layers, or both of them.

    Notes
    -----
    The caller's DataFrame/AnnData is never modified; values are always copied.
    """
    if nan_policy not in ("error", "drop", "defer"):
        raise OptionError(f"nan_policy must be 'error', 'drop' or 'defer', got {nan_policy!r}")
    check_layer_options(layer, use_raw)
    expr = _dispatch(source, layer=layer, use_raw=use_raw, h5_dataset=h5_dataset)
    return _finalize(expr, nan_policy=nan_policy)


def collapse_duplicates(
    expr: ExpressionData, method: Literal["mean", "max", "median"] = "mean"
) -> ExpressionData:
    """Merge rows that share a gene id.

    Parameters
    ----------
    expr : ExpressionData
        Possibly with duplicated gene ids (probes mapped to symbols, ...).
    method : {"mean", "max", "median"}, default "mean"
        Per sample, the mean / maximum / median over the rows of a gene. ``"max"`` is
        GSEA's ``Max_probe`` collapsing mode.

    Returns
    -------
    ExpressionData
        Genes in order of first occurrence. ``expr`` itself when no id is duplicated.

    Raises
    ------
    OptionError
        An unknown ``method``.
    """
    if method not in _COLLAPSE_METHODS:
        raise OptionError(f"collapse method must be one of {_COLLAPSE_METHODS}, got {method!r}")
    ids = pd.Index(expr.gene_ids)
    duplicated = ids.duplicated(keep=False)
    if not duplicated.any():
        return expr
    n_rows = int(duplicated.sum())
    n_groups = int(ids[duplicated].nunique())
    frame = pd.DataFrame(expr.values)
    grouped = getattr(frame.groupby(np.asarray(expr.gene_ids), sort=False), method)()
    logger.warning(
        "%s: collapsed %d duplicated gene ids into %d genes (%s); %d genes remain",
        expr.source, n_rows, n_groups, method, len(grouped),
    )
    return ExpressionData(
        values=np.ascontiguousarray(grouped.to_numpy(dtype=np.float64)),
        gene_ids=np.asarray(grouped.index.to_numpy(), dtype=object),
        sample_ids=expr.sample_ids.copy(),
        source=expr.source,
        obs=None if expr.obs is None else expr.obs.copy(),
        dataset=expr.dataset,
    )


# --------------------------------------------------------------------------------------
# Dispatch and common post-processing
# --------------------------------------------------------------------------------------


def _is_anndata(obj: Any) -> bool:
    # An AnnData can only exist if anndata is imported; avoid importing it (slow) here.
    module = sys.modules.get("anndata")
    return module is not None and isinstance(obj, module.AnnData)


def _dispatch(source: Any, *, layer: str | None, use_raw: bool, h5_dataset: str) -> ExpressionData:
    if isinstance(source, pd.DataFrame):
        _no_layer(layer, use_raw, "a DataFrame")
        return _from_dataframe(source)
    if _is_anndata(source):
        return _from_anndata(source, layer=layer, use_raw=use_raw, source="<AnnData>")
    if not isinstance(source, (str, Path)):
        raise InputError(
            f"expression input must be a file path, a pandas DataFrame or an AnnData, "
            f"got {type(source).__name__}"
        )
    path = _existing_file(source, "expression")
    refuse_other_role(path, str(source), "an expression matrix", own="expr")
    suffix = _format_suffix(path)
    if suffix in _H5AD_SUFFIXES or suffix in _HDF5_SUFFIXES:
        return _read_matrix_source(path, str(source), h5_dataset=h5_dataset, layer=layer, use_raw=use_raw)
    _no_layer(layer, use_raw, f"text file {source}")
    from .geo import looks_like_series_matrix, read_series_matrix

    if looks_like_series_matrix(path):
        return read_series_matrix(path)
    if suffix == ".gct" or _first_line(path).startswith(("#1.2", "#1.3")):
        return _with_encoding(_parse_gct, path, str(source))
    if suffix not in _TEXT_SUFFIXES:
        logger.warning("%s: unknown extension %r, reading it as tab-separated text", source, suffix)
    return _with_encoding(_parse_table, path, str(source), sep="," if suffix == ".csv" else "\t")


def check_layer_options(layer: str | None, use_raw: bool) -> None:
    """Refuse ``layer`` together with ``use_raw`` (an AnnData's raw holds only X), in the
    words of the interface in use (``--layer``/``--use-raw`` on the command line)."""
    if layer is not None and use_raw:
        raise OptionError(f"{option('layer').rstrip('=')} and {option('use_raw').rstrip('=')} exclude each other "
                          "(raw holds only X); pass one of them")


def _no_layer(layer: str | None, use_raw: bool, what: str) -> None:
    if layer is not None:
        raise OptionError(f"{option('layer', layer)} applies only to h5ad/AnnData input, not to {what}; drop it")
    if use_raw:
        raise OptionError(f"{option('use_raw', True)} applies only to h5ad/AnnData input, not to {what}; drop it")


def _finalize(expr: ExpressionData, *, nan_policy: str) -> ExpressionData:
    """Checks shared by all sources: names, non-finite values, the value range, something left."""
    where = expr.source
    if expr.n_samples == 0:
        raise InputError(f"{where}: no sample columns found; expected genes in rows and samples in columns")
    if expr.n_genes == 0:
        raise InputError(f"{where}: no gene rows found; expected genes in rows and samples in columns")
    samples = pd.Index(expr.sample_ids)
    if samples.has_duplicates:
        dup = samples[samples.duplicated()][0]
        cols = np.flatnonzero(samples == dup) + 1
        raise InputError(
            f"{where}: sample name {dup!r} appears more than once (samples {cols[0]} and {cols[1]} of {len(samples)}, "
            "counted after any descriptive columns); "
            "sample names must be unique, rename one of them"
        )
    empty_gene = np.flatnonzero(pd.Series(expr.gene_ids, dtype=object).str.strip().fillna("").eq("").to_numpy())
    if empty_gene.size:
        raise InputError(f"{where}: gene id of row {empty_gene[0] + 1} is empty; every row needs a gene id")

    finite = np.isfinite(expr.values)
    no_finite = ~finite.any(axis=1)
    if no_finite.any():
        logger.warning("%s: dropped %d genes with no finite value (all NaN/inf)", where, int(no_finite.sum()))
        if no_finite.all():
            raise InputError(
                f"{where}: no gene left after dropping genes with missing or non-finite values; "
                "check that the value columns hold numbers"
            )
        expr = _gene_rows(expr, ~no_finite)
        finite = finite[~no_finite]
    if nan_policy == "defer":  # missing values and the value range: judged on the analysed samples
        expr.values = np.ascontiguousarray(expr.values, dtype=np.float64)
        return expr
    return apply_nan_policy(expr, "error" if nan_policy == "defer" else nan_policy)


def _gene_rows(expr: ExpressionData, rows: np.ndarray) -> ExpressionData:
    return ExpressionData(values=expr.values[rows], gene_ids=expr.gene_ids[rows], sample_ids=expr.sample_ids,
                          source=expr.source, obs=expr.obs, dataset=expr.dataset)


def apply_nan_policy(expr: ExpressionData, nan_policy: str, *, scope: str = "") -> ExpressionData:
    """Refuse (``"error"``) or drop (``"drop"``) the genes of ``expr`` with a missing or
    non-finite value, then check the value range.

    ``scope`` qualifies the samples in messages (e.g. ``" in the analysed samples"``,
    when ``expr`` holds only those: a value missing in a sample that is not analysed
    does not count, as for a streamed matrix).

    Raises
    ------
    InputError
        A gene with missing values under ``"error"``, no gene left, or a value beyond
        ±:data:`MAX_ABS_VALUE`.
    """
    where = expr.source
    finite = np.isfinite(expr.values)
    keep = finite.all(axis=1)
    partial = np.flatnonzero(~keep)
    if partial.size:
        if nan_policy == "error":
            first = partial[0]
            n_bad = int((~finite[first]).sum())
            column = int(np.flatnonzero(~finite[first])[0])
            value = float(expr.values[first, column])
            what = ("missing" if np.isnan(value) else
                    f"{value} (a number beyond float64's range, such as 1e400, reads as infinite)")
            raise InputError(
                f"{where}: gene {expr.gene_ids[first]!r} has {n_bad} missing or non-finite values{scope}, e.g. "
                f"sample {str(expr.sample_ids[column])!r}: {what} ({partial.size} genes in all have some); use "
                f"{option('nan_policy', 'drop')} to drop such genes, or fill them before reading"
            )
        logger.warning("%s: dropped %d genes with some NaN/inf values%s (%s)", where, partial.size, scope,
                       option("nan_policy", "drop"))
        if not keep.any():
            raise InputError(
                f"{where}: no gene left after dropping genes with missing or non-finite values{scope}; "
                "check that the value columns hold numbers"
            )
        expr = _gene_rows(expr, keep)
    values = np.ascontiguousarray(expr.values, dtype=np.float64)
    if values is not expr.values:
        expr.values = values
    beyond = first_out_of_range(values)  # only finite values are left here
    if beyond is not None:
        gene, sample = beyond
        raise value_error(data_place(where, expr.dataset), expr.gene_ids[gene], expr.sample_ids[sample],
                          float(values[gene, sample]))
    return expr


# --------------------------------------------------------------------------------------
# Delimited text: GCT and tables
# --------------------------------------------------------------------------------------


def _fix_field_counts(rows: list[list[str]], n_fields: int, line_numbers: np.ndarray, where: str) -> None:
    """Check every row has ``n_fields``; trim trailing empty fields in place.

    GSEA splits lines with Java's ``String.split``, which drops trailing empty fields, so
    files with a stray tab at the end of lines load there; accept those too.
    """
    for i, row in enumerate(rows):
        if len(row) == n_fields:
            continue
        if len(row) > n_fields and not any(field.strip() for field in row[n_fields:]):
            del row[n_fields:]
            continue
        raise InputError(
            f"{where}: line {line_numbers[i]} has {len(row)} fields, expected {n_fields}; "
            "check for missing or extra separators on that line"
        )


def _parse_numeric_block(
    raw: np.ndarray, line_numbers: np.ndarray, first_column: int, where: str
) -> np.ndarray:
    """Convert an object array of strings to float64; missing tokens become NaN.

    ``first_column`` is the 1-based file column of ``raw[:, 0]``, for messages.
    """
    try:
        return np.asarray(raw, dtype=np.float64)
    except ValueError:
        pass
    missing = pd.DataFrame(raw).isin(_MISSING_TOKENS).to_numpy()
    cleaned = np.where(missing, "nan", raw)
    try:
        return np.asarray(cleaned, dtype=np.float64)
    except ValueError:
        pass
    # Error path only: find the first bad cell in file order. pandas' parser rejects a
    # few strings that float() takes ("1_0"), so confirm each candidate with float().
    parsed = pd.to_numeric(pd.Series(cleaned.ravel()), errors="coerce").to_numpy()
    for flat_index in np.flatnonzero(np.isnan(parsed)):
        value = cleaned.flat[flat_index]
        try:
            float(value)
        except ValueError:
            row, col = divmod(int(flat_index), raw.shape[1])
            raise InputError(
                f"{where}: line {line_numbers[row]}, column {first_column + col}: expected a number, "
                f"found {value!r}; use an empty field or NA for missing values"
            ) from None
    raise AssertionError("unreachable: float conversion failed but no bad cell was found")  # pragma: no cover


def _open_text(path: Path, encoding: str) -> TextIO:
    """Text handle without newline translation (the csv module needs ``newline=""``)."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _first_line(path: Path) -> str:
    try:
        with _open_text(path, "latin-1") as handle:
            return handle.readline().lstrip("\ufeff\xef\xbb\xbf")
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read the file ({exc}); check that it is complete and readable") from exc


def _with_encoding(parse: Callable[..., ExpressionData], path: Path, where: str, **kwargs: Any) -> ExpressionData:
    """Run a streaming parser as UTF-8, again as Latin-1 if the bytes are not UTF-8
    (UTF-16 refused first, as every reader does)."""
    try:
        with gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb") as handle:
            _refuse_utf16(handle.read(2), path)
        try:
            return parse(path, where, encoding="utf-8-sig", **kwargs)
        except UnicodeDecodeError:
            # Old GSEA files are often Latin-1; names only need to round-trip.
            return parse(path, where, encoding="latin-1", **kwargs)
    except (OSError, EOFError) as exc:
        raise InputError(f"{where}: cannot read the file ({exc}); check that it is complete and readable") from exc


def _chunk_rows(n_fields: int) -> int:
    # Parsed cells are Python strings (~60 bytes each): bound them to ~1e6 at a time.
    return max(1, 1_000_000 // max(n_fields, 1))


class _Blocks:
    """Collects parsed row blocks and joins them once at the end."""

    def __init__(self) -> None:
        self.gene_ids: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def add(self, gene_ids: np.ndarray, values: np.ndarray) -> None:
        self.gene_ids.append(gene_ids)
        self.values.append(values)

    def result(self, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.values:
            return np.empty(0, dtype=object), np.empty((0, n_cols), dtype=np.float64)
        if len(self.values) == 1:
            return self.gene_ids[0], self.values[0]
        return np.concatenate(self.gene_ids), np.concatenate(self.values)


def _parse_rows(
    rows: list[list[str]], line_numbers: np.ndarray, n_lead: int, where: str, id_label: str
) -> tuple[np.ndarray, np.ndarray]:
    """A block of rows (field counts already checked) -> gene ids and float64 values."""
    grid = np.array(rows, dtype=object)
    gene_ids = np.array([g.strip() for g in grid[:, 0]], dtype=object)
    empty = np.flatnonzero(gene_ids == "")
    if empty.size:
        raise InputError(f"{where}: line {line_numbers[empty[0]]}, column 1: {id_label} is empty; every row needs one")
    values = _parse_numeric_block(grid[:, n_lead:], line_numbers, n_lead + 1, where)
    return gene_ids, values


def _parse_gct(path: Path, where: str, *, encoding: str) -> ExpressionData:
    """GCT 1.2 / 1.3 (FORMATS.md): parsed whole by NumPy when plain (:func:`_plain_rows`), else
    in blocks of rows."""
    with _open_text(path, encoding) as handle:
        head = [handle.readline().rstrip("\r\n") for _ in range(3)]
        version = head[0].strip()
        if head[0].startswith("\x1f\x8b"):
            raise InputError(f"{where}: the file is gzip-compressed; name it with a .gz ending (e.g. {Path(where).name}"
                             ".gz) or decompress it")
        if version not in ("#1.2", "#1.3"):
            raise InputError(
                f"{where}: line 1: expected the GCT version '#1.2' or '#1.3', found {head[0][:40]!r}; "
                "GCT files start with the version line"
            )
        n_dims = 2 if version == "#1.2" else 4
        try:
            dims = [int(x) for x in head[1].split()]
        except ValueError:
            dims = []
        if len(dims) != n_dims or min(dims) < 0:
            expected = (
                "rows and sample columns" if n_dims == 2
                else "rows, sample columns, row-metadata columns and column-metadata rows"
            )
            raise InputError(
                f"{where}: line 2: expected {n_dims} non-negative integers ({expected}) for GCT {version[1:]}, "
                f"found {head[1][:60]!r}"
            )
        n_rows, n_cols = dims[0], dims[1]
        n_row_meta, n_col_meta = (dims[2], dims[3]) if n_dims == 4 else (1, 0)
        n_lead = 1 + n_row_meta  # id column + description/metadata columns
        n_fields = n_lead + n_cols
        if n_rows == 0 or n_cols == 0:
            raise InputError(f"{where}: line 2 declares {n_rows} rows and {n_cols} samples; the file holds no data")

        header = head[2].split("\t")
        while len(header) > n_fields and not header[-1].strip():
            header.pop()  # trailing tabs
        if len(header) == 1 and " " in header[0]:
            raise InputError(f"{where}: line 3: the header has no tabs; GCT fields are separated by tabs, not spaces")
        if len(header) < n_lead or not "".join(header).strip():
            raise InputError(f"{where}: line 3: expected the header ('NAME<tab>Description<tab>' then the sample "
                             "names); the line is missing or empty (a truncated file?)")
        if len(header) != n_fields:
            raise InputError(
                f"{where}: line 3: header has {len(header) - n_lead} sample names after {n_lead} leading columns "
                f"but line 2 declares {n_cols} samples; make the header and the dimensions agree"
            )
        if version == "#1.2" and [h.strip().lower() for h in header[:2]] != ["name", "description"]:
            raise InputError(
                f"{where}: line 3: expected the header to start with 'NAME<tab>Description', "
                f"found {header[0][:30]!r}, {header[1][:30]!r}"
            )
        sample_ids = np.array([h.strip() for h in header[n_lead:]], dtype=object)
        empty = np.flatnonzero(sample_ids == "")
        if empty.size:
            raise InputError(
                f"{where}: line 3, column {n_lead + empty[0] + 1}: sample name is empty; name every sample column"
            )

        # Column-metadata rows (GCT 1.3) follow the header; check their shape and skip them.
        meta_rows = [handle.readline().rstrip("\r\n").split("\t") for _ in range(n_col_meta)]
        _fix_field_counts(meta_rows, n_fields, np.arange(4, 4 + n_col_meta), where)

        body: TextIO = handle
        start = handle.tell()
        text = handle.read(_WHOLE_TEXT_CHARS + 1)
        if len(text) <= _WHOLE_TEXT_CHARS:
            lines = _line_list(text)
            # Blank and '#' lines: GSEA skips them (a final newline makes a blank one).
            data_lines = [line for line in lines if line.strip() and not line.startswith("#")]
            plain = None if len(data_lines) != n_rows else _plain_rows(data_lines, n_lead, n_fields, "\t")
            if plain is not None:
                return ExpressionData(values=plain[1], gene_ids=plain[0], sample_ids=sample_ids, source=where)
            body = io.StringIO(text, newline="")
        else:
            handle.seek(start)

        blocks = _Blocks()
        chunk = _chunk_rows(n_fields)
        rows: list[list[str]] = []
        numbers: list[int] = []
        n_seen = 0
        for line_number, line in enumerate(body, start=4 + n_col_meta):
            if not line.strip() or line.startswith("#"):
                continue  # blank and comment lines: GSEA skips them (a final newline makes a blank one)
            n_seen += 1
            if n_seen > n_rows:
                raise InputError(
                    f"{where}: line {line_number}: more data rows than the {n_rows} declared on line 2; "
                    "fix the row count on line 2 or the data"
                )
            rows.append(line.rstrip("\r\n").split("\t"))
            numbers.append(line_number)
            if len(rows) == chunk:
                _flush_rows(blocks, rows, numbers, n_fields, n_lead, where, "row name")
                rows, numbers = [], []
        if rows:
            _flush_rows(blocks, rows, numbers, n_fields, n_lead, where, "row name")
    if n_seen != n_rows:
        raise InputError(
            f"{where}: line 2 declares {n_rows} rows but the file has {n_seen} data rows; "
            "fix the row count on line 2 or the data"
        )
    gene_ids, values = blocks.result(n_cols)
    logger.debug("%s: read GCT %s, %d rows x %d samples", where, version[1:], n_rows, n_cols)
    return ExpressionData(values=values, gene_ids=gene_ids, sample_ids=sample_ids, source=where)


def _flush_rows(
    blocks: _Blocks, rows: list[list[str]], numbers: list[int], n_fields: int, n_lead: int, where: str, id_label: str
) -> None:
    line_numbers = np.asarray(numbers, dtype=np.int64)
    _fix_field_counts(rows, n_fields, line_numbers, where)
    blocks.add(*_parse_rows(rows, line_numbers, n_lead, where, id_label))


def _parse_table(path: Path, where: str, *, encoding: str, sep: str) -> ExpressionData:
    """Delimited genes x samples table with a header row (quotes allowed): parsed whole by
    NumPy when plain (:func:`_parse_plain_table`), else row by row in blocks."""
    with _open_text(path, encoding) as handle:
        text = handle.read(_WHOLE_TEXT_CHARS + 1)
        if len(text) <= _WHOLE_TEXT_CHARS:
            plain = _parse_plain_table(text, where, sep)
            return plain if plain is not None else _parse_table_rows(io.StringIO(text, newline=""), where, sep)
        handle.seek(0)
        return _parse_table_rows(handle, where, sep)


def _table_fields(header: list[str], first_row: list[str], header_line: int, where: str,
                  sep: str) -> tuple[list[str], int]:
    """The header's names and the number of fields of a row, from the header and first row."""
    n_fields = len(header)
    while n_fields > 1 and not header[n_fields - 1].strip():
        n_fields -= 1  # trailing separators on the header line
    trimmed = n_fields < len(header)
    header = header[:n_fields]
    # R's write.table omits the row-name header cell: rows are one field longer.
    if not trimmed and len(first_row) == n_fields + 1 and first_row[-1].strip():
        header = [""] + header
        n_fields += 1
    if n_fields < 2:
        raise InputError(
            f"{where}: line {header_line} has 1 field; expected gene ids then sample columns "
            f"separated by {'commas' if sep == ',' else 'tabs'}"
        )
    return header, n_fields


def _table_samples(header: list[str], n_lead: int, header_line: int, where: str) -> np.ndarray:
    """Sample names: the header's fields from the first value column on."""
    if n_lead == len(header):
        raise InputError(
            f"{where}: no numeric sample column found (all {n_lead - 1} columns after the gene ids hold text); "
            "expected gene ids in column 1 and numeric samples after"
        )
    if n_lead > 1:
        logger.debug("%s: ignoring descriptive columns %s", where, header[1:n_lead])
    sample_ids = np.array([h.strip() for h in header[n_lead:]], dtype=object)
    if (all(is_number(h) for h in sample_ids) and any(not h.lstrip("+-").isdigit() for h in sample_ids)
            and header[0].strip().lower() not in _ID_HEADERS):
        raise InputError(
            f"{where}: line {header_line}: the sample names are all numbers ({_preview(list(sample_ids), 3)}): the "
            "file seems to lack its header row; add one (a name for the gene ids, then one name per sample)"
        )
    empty = np.flatnonzero(sample_ids == "")
    if empty.size:
        raise InputError(
            f"{where}: line {header_line}, column {n_lead + empty[0] + 1}: sample name is empty; "
            "name every sample column"
        )
    return sample_ids


#: First header cells that name a gene id column: with them a header of numbers
#: (``1.1``, ``1.2``: donor.replicate) is still a header.
_ID_HEADERS = ("", "gene", "genes", "gene_id", "gene id", "id", "id_ref", "name", "symbol", "probe", "probe_id",
               "feature", "features")


def is_number(text: object) -> bool:
    """Whether ``text`` reads as a number (as ``float()`` reads it: 'nan' and 'inf' too)."""
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def _line_list(text: str) -> list[str]:
    """:func:`_split_lines` for the plain-text path, without the empty string a final line
    end leaves."""
    lines = _split_lines(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def _plain_rows(rows: list[str], n_lead: int, n_fields: int, sep: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Gene ids and float64 values of plain data lines at C speed; None when not plain.

    Plain: every line has ``n_fields`` fields, a gene id and values NumPy's ``loadtxt``
    reads. ``loadtxt`` takes a subset of what ``float()`` takes (no underscores, no
    non-ASCII digits, no missing values) and rounds the same way, so what it reads is what
    the row parsers read; anything else is left to them, to read or to say where it is wrong.
    """
    # Joining adds len(rows) - 1 separators to the n_fields - 1 of each row.
    if not rows or sep.join(rows).count(sep) != len(rows) * n_fields - 1:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on input it then rejects
            values = np.loadtxt(rows, delimiter=sep, usecols=range(n_lead, n_fields), dtype=np.float64,
                                comments=None, ndmin=2)
    except ValueError:
        return None
    gene_ids = np.array([line.split(sep, 1)[0].strip() for line in rows], dtype=object)
    if values.shape != (len(rows), n_fields - n_lead) or not all(gene_ids):
        return None
    return gene_ids, values


def _parse_plain_table(text: str, where: str, sep: str) -> ExpressionData | None:
    """A plain table's whole text parsed at C speed; None hands it to the row parser.

    Plain: no quotes, no blank lines, the first value column among the first four, and
    plain data lines (:func:`_plain_rows`); names and errors are those of the row parser.
    """
    lines = None if '"' in text else _line_list(text)
    if lines is None or len(lines) < 2 or any(not line.strip() for line in lines):
        return None
    header, n_fields = _table_fields(lines[0].split(sep), lines[1].split(sep), 1, where, sep)
    rows = lines[1:]
    # The first value column, decided on the first block of rows as the row parser does.
    width = min(n_fields, 4)
    leading = [line.split(sep, width)[:width] for line in rows[:_chunk_rows(n_fields)]]
    if any(len(fields) != width for fields in leading):
        return None
    n_lead = _descriptive_columns(np.array(leading, dtype=object), width, header)
    plain = None if n_lead == width else _plain_rows(rows, n_lead, n_fields, sep)
    if plain is None:
        return None
    return ExpressionData(values=plain[1], gene_ids=plain[0], sample_ids=_table_samples(header, n_lead, 1, where),
                          source=where)


def _parse_table_rows(handle: TextIO, where: str, sep: str) -> ExpressionData:
    """Delimited table read row by row with the csv module, in blocks of rows."""
    reader = csv.reader(handle, delimiter=sep)

    def nonblank() -> Iterator[tuple[int, list[str]]]:
        try:
            for row in reader:
                if row and any(field.strip() for field in row):
                    yield reader.line_num, row
        except csv.Error as exc:
            raise InputError(f"{where}: line {reader.line_num}: {exc}; check the quoting on that line") from exc

    rows_iter = nonblank()
    first = list(itertools.islice(rows_iter, 2))
    if len(first) < 2:
        raise InputError(
            f"{where}: expected a header row and at least one gene row, found {len(first)} non-blank rows"
        )
    (header_line, header), (_, first_row) = first
    header, n_fields = _table_fields(header, first_row, header_line, where, sep)

    chunk = _chunk_rows(n_fields)
    rows: list[list[str]] = [first_row]
    numbers: list[int] = [first[1][0]]
    for line_number, row in itertools.islice(rows_iter, chunk - 1):
        rows.append(row)
        numbers.append(line_number)
    # Leading non-numeric columns after the ids (NAME, Description, ...) are descriptive;
    # decided on the first block of rows.
    _fix_field_counts(rows, n_fields, np.asarray(numbers), where)
    n_lead = _descriptive_columns(np.array(rows, dtype=object), n_fields, header)
    sample_ids = _table_samples(header, n_lead, header_line, where)
    blocks = _Blocks()
    while rows:
        _flush_rows(blocks, rows, numbers, n_fields, n_lead, where, "gene id")
        rows, numbers = [], []
        for line_number, row in itertools.islice(rows_iter, chunk):
            rows.append(row)
            numbers.append(line_number)
    gene_ids, values = blocks.result(len(sample_ids))
    return ExpressionData(values=values, gene_ids=gene_ids, sample_ids=sample_ids, source=where)


def _descriptive_columns(grid: np.ndarray, n_fields: int, header: list[str]) -> int:
    """Index of the first value column: columns 1.. with text only are descriptive, and
    so is a ``Description`` column of missing values only (GSEA's TXT format, whose
    descriptions are often all ``na``)."""
    first_value = 1
    while first_value < n_fields:
        column = pd.Series(grid[:, first_value])
        present = ~column.isin(_MISSING_TOKENS) & (column.str.strip().str.lower() != "na")
        numeric = pd.to_numeric(column[present], errors="coerce").notna()
        if numeric.any():
            break
        if not present.any() and header[first_value].strip().lower() not in _DESCRIPTION_HEADERS:
            break  # a sample whose every value is missing
        first_value += 1
    return first_value


#: Header names of a descriptive column whose values may all be missing (``na``).
_DESCRIPTION_HEADERS = ("description", "desc", "descriptions")


# --------------------------------------------------------------------------------------
# In-memory objects
# --------------------------------------------------------------------------------------


def _from_dataframe(df: pd.DataFrame, where: str = "<DataFrame>") -> ExpressionData:
    non_numeric = [
        (column, dtype)
        for column, dtype in zip(df.columns, df.dtypes)
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    ]
    if non_numeric:
        column, dtype = non_numeric[0]
        raise InputError(
            f"{where}: column {str(column)!r} is not numeric ({dtype}); expected "
            "genes x samples with gene ids as the index: move id/annotation columns out, e.g. df.set_index('gene')"
        )
    values = df.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    gene_ids = np.array([str(g) for g in df.index], dtype=object)
    sample_ids = np.array([str(s) for s in df.columns], dtype=object)
    return ExpressionData(values=np.ascontiguousarray(values), gene_ids=gene_ids, sample_ids=sample_ids, source=where)


def _dense_genes_by_samples(matrix: Any) -> np.ndarray:
    """(n_samples, n_genes) dense or sparse -> C-contiguous float64 (n_genes, n_samples) copy."""
    if hasattr(matrix, "to_memory"):  # a backed AnnData's sparse X (anndata's on-disk CSR/CSC dataset)
        matrix = matrix.to_memory()
    if hasattr(matrix, "toarray"):  # scipy.sparse matrix or array
        dense = matrix.T.toarray(order="C")
        return np.ascontiguousarray(dense, dtype=np.float64)
    return np.array(np.asarray(matrix).T, dtype=np.float64, order="C", copy=True)


def _from_anndata(adata: Any, *, layer: str | None, source: str, use_raw: bool = False) -> ExpressionData:
    var_names = adata.var_names
    dataset = "X"
    if use_raw:
        if adata.raw is None:
            raise InputError(f"{source}: {option('use_raw', True)} but the AnnData has no raw; drop "
                             f"{option('use_raw')} to read X, or pass {option('layer')} (layers: "
                             f"{_preview(adata.layers.keys()) or 'none'})")
        matrix, var_names, dataset = adata.raw.X, adata.raw.var_names, "raw/X"
    elif layer is None:
        matrix = adata.X
        if matrix is None:
            layers = list(adata.layers.keys())
            raise InputError(
                f"{source}: X is empty (layers: {_preview(layers) or 'none'}); put the matrix to analyse in X, "
                f"e.g. adata.X = adata.layers[{str(layers[0]) if layers else 'name'!r}]"
            )
    elif layer in adata.layers:
        matrix, dataset = adata.layers[layer], f"layers/{layer}"
    elif layer == "raw" and adata.raw is not None:
        matrix, var_names, dataset = adata.raw.X, adata.raw.var_names, "raw/X"
    else:
        raise InputError(
            f"{source}: layer {layer!r} not found; available layers: {_preview(adata.layers.keys()) or 'none'}"
        )
    values = _dense_genes_by_samples(matrix)
    return ExpressionData(
        values=values,
        gene_ids=np.array([str(g) for g in var_names], dtype=object),
        sample_ids=np.array([str(s) for s in adata.obs_names], dtype=object),
        source=source,
        obs=adata.obs.copy(),
        dataset=dataset,
    )


# --------------------------------------------------------------------------------------
# HDF5 family
# --------------------------------------------------------------------------------------


def _h5_open(path: Path, where: str) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{where}: cannot open as HDF5 ({exc}); the file may be truncated or not HDF5") from exc


def _read_elem(node: Any) -> Any:
    try:
        from anndata.io import read_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem
    return read_elem(node)


def open_hdf5_matrix(path: str | Path, *, layer: str | None = None, use_raw: bool = False,
                     h5_dataset: str = "X") -> Any:
    """:func:`permenrich.io.chunked.open_matrix` for the expression readers and the
    streamed runs alike, so that both choose the matrix of an h5ad by one rule:
    ``layer="raw"`` reads ``raw/X`` (with ``raw/var``) when the file has no layer of that
    name; ``use_raw`` reads ``raw/X``."""
    from .chunked import open_matrix

    if layer == "raw" and not use_raw:
        where = str(path)
        with _h5_open(_existing_file(path, "expression"), where) as f:
            layers = _h5_get(f, "layers")
            use_raw = not (layers is not None and "raw" in layers) and _h5_get(f, "raw") is not None
        layer = None if use_raw else layer
    return open_matrix(path, layer=layer, use_raw=use_raw, h5_dataset=h5_dataset)


def _read_matrix_source(path: Path, where: str, *, h5_dataset: str, layer: str | None,
                        use_raw: bool = False) -> ExpressionData:
    """h5ad, 10x and plain HDF5: the one block reader (:func:`open_hdf5_matrix`) read
    whole, so that in-memory and streamed runs share every rule of these formats."""
    with open_hdf5_matrix(path, layer=layer, use_raw=use_raw, h5_dataset=h5_dataset) as source:
        values = np.empty((source.n_genes, source.n_samples))
        for block in source.blocks(64 << 20):
            values[block.gene_start:block.gene_stop, block.sample_start:block.sample_stop] = block.values.T
        return ExpressionData(values=values, gene_ids=source.gene_ids, sample_ids=source.sample_ids, source=where,
                              obs=source.obs, dataset=source.dataset)


def _h5_get(f: Any, path: str) -> Any:
    """``f[path]`` or None (also when the path runs through a dataset)."""
    try:
        return f.get(path)
    except (KeyError, TypeError, ValueError):
        return None


_10X_DATASETS = (
    "matrix/data", "matrix/indices", "matrix/indptr", "matrix/shape", "matrix/barcodes", "matrix/features/name",
)


def hdf5_layout(f: Any, where: str, h5_dataset: str = "X") -> Literal["plain", "10x"]:
    """The layout of an HDF5 file that is not an h5ad, checked for completeness.

    Parameters
    ----------
    f : h5py.File
        The open file.
    where : str
        The path as given, for messages.
    h5_dataset : str, default "X"
        Path of the 2-D matrix of the plain layout.

    Returns
    -------
    {"plain", "10x"}
        ``"10x"`` when there is no ``X`` but a group ``matrix`` (only with the default
        ``h5_dataset``); then every dataset of that layout is present. ``"plain"``: the
        2-D ``h5_dataset`` and 1-D ``gene_ids``/``sample_ids`` beside it are present.

    Raises
    ------
    InputError
        A dataset of the layout is missing or has the wrong number of dimensions; the
        message names the datasets expected and those the file holds.
    """
    import h5py

    if h5_dataset == "X" and _h5_get(f, "X") is None and isinstance(_h5_get(f, "matrix"), h5py.Group):
        layout, expected = "10x", dict.fromkeys(_10X_DATASETS, 1)
        what = ("a 10x filtered_feature_bc_matrix.h5 (a group 'matrix' but no 'X') holds datasets "
                + ", ".join(repr(p) for p in _10X_DATASETS))
    else:
        group = posixpath.dirname(h5_dataset.strip("/"))
        names = [posixpath.join(group, key) if group else key for key in ("gene_ids", "sample_ids")]
        layout, expected = "plain", {h5_dataset: 2, names[0]: 1, names[1]: 1}
        what = (f"a plain HDF5 expression file holds datasets {h5_dataset!r} (2-D, n_genes x n_samples), "
                f"{names[0]!r} and {names[1]!r} (1-D strings)")
        if h5_dataset == "X":
            what += "; a 10x file holds a group 'matrix' instead"
    for path, ndim in expected.items():
        node = _h5_get(f, path)
        if not isinstance(node, h5py.Dataset) or node.ndim != ndim:
            state = "missing" if node is None else "a group" if isinstance(node, h5py.Group) else f"{node.ndim}-D"
            raise InputError(
                f"{where}: dataset {path!r} is {state}; {what}; this file holds {_hdf5_contents(f)}: "
                "rename its datasets to one of these layouts"
            )
    return layout


def _hdf5_contents(f: Any, limit: int = 8) -> str:
    """``'counts' (2-D), 'genes' (1-D), ...``: the first datasets of a file, for messages."""
    import h5py

    found: list[str] = []

    def visit(name: str, node: Any) -> bool | None:
        if isinstance(node, h5py.Dataset):
            found.append(f"{name!r} ({node.ndim}-D)")
        return True if len(found) > limit else None  # a true value stops the walk

    f.visititems(visit)
    if not found:
        return "no dataset"
    return ", ".join(found[:limit]) + (", ..." if len(found) > limit else "")


def _h5_strings(dataset: Any) -> np.ndarray:
    data = dataset[()]
    if data.dtype.kind in ("S", "O"):
        return np.array([x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in data], dtype=object)
    return np.array([str(x) for x in data], dtype=object)
